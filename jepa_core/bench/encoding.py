"""The evaluation-encoding benchmark: sentences/s of encode() with and without length bucketing,
next to the usual pad-to-max_length loop."""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from jepa_core.analysis.encode import encode, takes_token_type_ids
from jepa_core.bench.config import BenchConfig, bench_params
from jepa_core.bench.timing import _sync, spread
from jepa_core.model import build_encoder


def encoding_benchmark(cfg: BenchConfig, tokenizer, sentences: list[str], device: torch.device,
                       progress: bool = True) -> dict[str, Any]:
    """Sentences/s of encode() with and without length bucketing, and of the usual pad-to-max_length
    loop; the modes are interleaved `encode_repeats` times."""
    params = bench_params(cfg)
    model = build_encoder(params.model, cfg.vocab, tokenizer.pad_token_id).to(device).eval()
    segments = takes_token_type_ids(model)
    L, B = cfg.encode_max_length, cfg.encode_batch

    @torch.inference_mode()
    def padded_to_max() -> None:
        # The common alternative: tokenizer(padding="max_length"), batches in input order; keep the
        # real tokens' states (what encode() returns), so both produce the same output.
        for start in range(0, len(sentences), B):
            enc = tokenizer(sentences[start:start + B], padding="max_length", truncation=True, max_length=L,
                            return_tensors="pt")
            enc = {k: v.to(device) for k, v in enc.items() if k != "token_type_ids" or segments}
            h = model(**enc).last_hidden_state
            h[enc["attention_mask"].bool()].float().cpu().numpy()

    modes = {
        "padded": padded_to_max,
        "unbucketed": lambda: encode(model, tokenizer, sentences, max_length=L, batch_size=B, bucket=False,
                                     progress=False),
        "bucketed": lambda: encode(model, tokenizer, sentences, max_length=L, batch_size=B, bucket=True,
                                   progress=False),
    }
    for fn in modes.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {m: [] for m in modes}
    with tqdm(total=cfg.encode_repeats * len(modes), desc="encode", disable=not progress) as bar:
        for _ in range(cfg.encode_repeats):
            for m, fn in modes.items():
                _sync(device)
                t0 = time.perf_counter()
                fn()
                _sync(device)
                times[m].append(time.perf_counter() - t0)
                bar.update(1)
    lengths = np.array([len(x) for x in tokenizer(sentences, truncation=True, max_length=L)["input_ids"]])
    result: dict[str, Any] = {"sentences": len(sentences), "batch_size": B, "max_length": L,
                              "mean_tokens": float(lengths.mean()), "max_tokens": int(lengths.max())}
    for m, ts in times.items():
        result[m] = {"seconds": spread(ts), "sentences_per_s": len(sentences) / float(np.median(ts))}
    result["bucketed_vs_padded"] = result["bucketed"]["sentences_per_s"] / result["padded"]["sentences_per_s"]
    result["bucketed_vs_unbucketed"] = result["bucketed"]["sentences_per_s"] / result["unbucketed"]["sentences_per_s"]
    # Upper bound of the bucketing gain on token-linear work: padded tokens without / with sorting.
    order = np.sort(lengths)[::-1]
    def padded_tokens(ls):
        return sum(int(ls[s:s + B].max()) * len(ls[s:s + B]) for s in range(0, len(ls), B))
    result["padding_bound_unbucketed"] = padded_tokens(lengths) / padded_tokens(order)
    result["padding_bound_padded"] = L * len(lengths) / padded_tokens(order)
    return result
