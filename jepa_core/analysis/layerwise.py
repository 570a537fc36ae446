"""Layer-wise geometry: uniformity, anisotropy and effective rank of the mean-pooled states of every
layer, 0 (embeddings) .. L (the last), to see where in depth two encoders' geometries part.

The metrics are geometry.py's (one implementation each: `label_free_metrics`), the states
encode.py's (`encode_layers`, the same encoding path as the evaluation) and the pooling
pooling.py's mean over real tokens, [CLS]/[SEP] included, like the evaluation's `mean`.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from jepa_core.analysis import geometry
from jepa_core.analysis.encode import encode_layers
from jepa_core.analysis.pooling import pool

METRICS = ("uniformity", "anisotropy", "effective_rank")


def layer_embeddings(model, tokenizer, sentences: Sequence[str], *, max_length: int = 128,
                     batch_size: int = 64, pooling: str = "mean") -> list[np.ndarray]:
    """(N, H) pooled sentence vectors of every layer, index 0 = embeddings .. L = last layer."""
    return [pool(states, pooling) for states in encode_layers(model, tokenizer, sentences, max_length=max_length,
                                                               batch_size=batch_size)]


def layerwise_geometry(per_layer: Sequence[np.ndarray], metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """Tidy table (layer, metric, value, n): the label-free geometry metrics of each layer's vectors."""
    unknown = [m for m in metrics if m not in geometry.LABEL_FREE]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}: allowed {', '.join(geometry.LABEL_FREE)}")
    if len(per_layer) == 0:
        raise ValueError("per_layer is empty: expected one (N, H) array per layer")
    rows = []
    for layer, X in enumerate(per_layer):
        values = geometry.label_free_metrics(X)
        rows += [{"layer": layer, "metric": m, "value": float(values[m]), "n": len(X)} for m in metrics]
    return pd.DataFrame(rows)
