"""The workbook's steps (notebooks 01–05), what each one's outputs depend on, and its done-marker.

A step is reused when its marker's fingerprint (its parameter keys, less UNFINGERPRINTED_KEYS, its
notebook's source, the previous step's fingerprint) and the inputs it read (`study.inputs`) are
unchanged; `plan_reasons` says why each other step re-runs.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

from jepa_core.config import NON_WEIGHT_KEYS, Params
from jepa_core.study import inputs as step_inputs_module

NOT_RUN_YET = "not run yet"

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS_DIR = PACKAGE_ROOT / "notebooks"

# The notebooks, in order, with the parameter keys each one's outputs depend on (besides the
# keys of the steps before it: a step's fingerprint chains the previous one's).
STEPS: dict[str, tuple[str, ...]] = {
    "01_data_prep": ("seeds", "data", "eval.wiki_sentences"),
    "02_pretrain": ("objectives", "model", "mask", "jepa", "train"),
    "03_probe": ("eval",),
    "04_geometry": (),
    # ablations and reference encoders (jepa_core/study/ablations.py): its own step, so that turning it on
    # re-runs only 05
    "05_ablations": ("ablations", "eval.reference_models"),
}
# Keys that sit in an earlier step's section but only a later step reads: left out of that section's
# fingerprint, so setting them re-runs only the later step (and adding them kept old fingerprints)
LATER_KEYS = ("eval.reference_models",)
# Keys left out of their section's fingerprint: LATER_KEYS, and the pre-training keys that cannot change
# the trained weights (config.NON_WEIGHT_KEYS: log/eval/checkpoint intervals, compile, loggers ...), so
# that changing those re-runs no pre-training. 02's outputs are the weights; its logs keep the intervals
# and loggers of the run that made them.
UNFINGERPRINTED_KEYS = (*LATER_KEYS, *NON_WEIGHT_KEYS)


def _pick(d: Mapping[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        d = d[part]
    return d


def _picked(d: Mapping[str, Any], key: str) -> Any:
    """The value of `key` for its step's fingerprint, without the UNFINGERPRINTED_KEYS inside it."""
    value = _pick(d, key)
    left_out = [k[len(key) + 1:] for k in UNFINGERPRINTED_KEYS if k.startswith(key + ".")]
    if not left_out:
        return value
    value = json.loads(json.dumps(value))  # a copy: params.to_dict() must stay as it is
    for rest in left_out:
        *parents, leaf = rest.split(".")
        node = value
        for part in parents:
            node = node[part]
        node.pop(leaf, None)
    return value


def step_records(params: Params, notebooks_dir: Path = NOTEBOOKS_DIR) -> dict[str, dict[str, Any]]:
    """Per step: `fingerprint` (step_fingerprints), and what it hashes, kept in the done-marker so that a later
    invocation can say what changed: `parameters` (the step's own keys) and `notebook` (a hash of its source)."""
    d = params.to_dict()
    out, previous = {}, ""
    for step, keys in STEPS.items():
        source = (notebooks_dir / f"{step}.ipynb").read_bytes()
        picked = {k: _picked(d, k) for k in keys}
        blob = json.dumps([previous, picked], sort_keys=True).encode() + source
        previous = hashlib.sha256(blob).hexdigest()[:16]
        out[step] = {"fingerprint": previous, "parameters": picked,
                     "notebook": hashlib.sha256(source).hexdigest()[:16]}
    return out


def step_fingerprints(params: Params, notebooks_dir: Path = NOTEBOOKS_DIR) -> dict[str, str]:
    """One fingerprint per step: its parameter keys (less UNFINGERPRINTED_KEYS) + its notebook source + the
    previous step's. Leaving NON_WEIGHT_KEYS out changed 02's (and so every later) fingerprint: runs made
    before that re-run their steps 02-05 once (the checkpoints are resumed, not retrained). The data and
    code a step reads are not in it: they are compared separately (`plan_reasons`, study.inputs)."""
    return {step: r["fingerprint"] for step, r in step_records(params, notebooks_dir).items()}


def marker_path(run_dir: Path, step: str) -> Path:
    return run_dir / ".done" / f"{step}.json"


def read_marker(run_dir: Path, step: str) -> dict | None:
    try:
        data = json.loads(marker_path(run_dir, step).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def flat_keys(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out = {}
    for k, v in d.items():
        out.update(flat_keys(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def short_value(v: Any) -> str:
    text = json.dumps(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _parameter_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    a, b = flat_keys(dict(old)), flat_keys(dict(new))
    keys = [k for k in dict.fromkeys([*b, *a]) if a.get(k, "(absent)") != b.get(k, "(absent)")]
    shown = [f"{k} ({short_value(a.get(k, '(absent)'))} → {short_value(b.get(k, '(absent)'))})" for k in keys[:4]]
    return ", ".join(shown) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")


def _legacy_wiki(run_dir: Path, entry: Mapping[str, Any]) -> str | None:
    """A marker written before inputs were recorded: compare the Wikipedia source with data/corpus.json (the
    source the data step actually read). The change as a phrase, or None when it matches or cannot be told."""
    try:
        corpus = json.loads((run_dir / "data" / "corpus.json").read_text())
    except (OSError, ValueError):
        return None
    value = str(entry.get("value", ""))
    if corpus.get("source") == "hub" or not corpus.get("path"):
        before, same = "the hub", value.startswith("hub ")
    else:
        path = Path(corpus["path"]).expanduser().resolve()
        before = str(path)
        same = ("gensim" in str(path)) if value == "gensim's embedded excerpt" else \
            value.partition("=")[2] == str(path)
    return None if same else f"Wikipedia changed ({before}, from data/corpus.json → {value})"


def _own_reason(run_dir: Path, step: str, record: Mapping[str, Any] | str,
                now: Mapping[str, Any] | None) -> str | None:
    """Why `step` cannot be reused on its own account (its marker, notebook, parameters, inputs), or None."""
    record = {"fingerprint": record} if isinstance(record, str) else record
    notebook = run_dir / "notebooks" / f"{step}.ipynb"
    if not marker_path(run_dir, step).is_file():
        return "unfinished: no done-marker (stopped or failed last time)" if notebook.is_file() else NOT_RUN_YET
    marker = read_marker(run_dir, step)
    if marker is None:
        return "its done-marker is unreadable"
    if not notebook.is_file():
        return f"its executed notebook {notebook.name} is missing"
    if marker.get("fingerprint") != record["fingerprint"]:
        if "parameters" in marker and "parameters" in record and marker["parameters"] != record["parameters"]:
            return f"parameters changed: {_parameter_changes(marker['parameters'], record['parameters'])}"
        if "notebook" in marker and "notebook" in record and marker["notebook"] != record["notebook"]:
            return f"notebook {step}.ipynb changed"
        return "parameters or notebook changed"
    if not now:
        return None
    if "inputs" not in marker:  # written before inputs were recorded
        if step == "01_data_prep":  # never re-train because of this change alone: compare with what 01 read
            return _legacy_wiki(run_dir, now.get("Wikipedia", {}))
        return "its done-marker predates the recording of data and code inputs (a one-time re-run)"
    changed = step_inputs_module.changes(marker["inputs"], dict(now))
    return "; ".join(changed) or None


def plan_reasons(run_dir: Path, records: Mapping[str, Mapping[str, Any] | str], force: bool = False,
                 inputs: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, str | None]:
    """step -> why it must run (None: reused). A step is reused only if its marker matches its fingerprint
    (`records`: step_records or step_fingerprints), its executed notebook exists, the inputs it read
    (`inputs`: study.inputs.step_inputs; None: not compared) are unchanged, and every step before it is
    reused too."""
    reasons, first = {}, None
    for step, record in records.items():
        why = "--force" if force else _own_reason(run_dir, step, record, (inputs or {}).get(step))
        if why is None and first is not None:
            why = f"runs after {first}"
        if why is not None and first is None:
            first = step
        reasons[step] = why
    return reasons


def plan(run_dir: Path, fingerprints: Mapping[str, Mapping[str, Any] | str], force: bool = False,
         inputs: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, bool]:
    """step -> True when it must run (`plan_reasons` says why)."""
    return {step: why is not None for step, why in plan_reasons(run_dir, fingerprints, force, inputs).items()}


def write_marker(run_dir: Path, step: str, record: Mapping[str, Any], inputs: Mapping[str, Any] | None,
                  **extra: Any) -> None:
    marker = marker_path(run_dir, step)
    marker.parent.mkdir(exist_ok=True)
    data = {"fingerprint": record["fingerprint"], **extra, "parameters": record.get("parameters"),
            "notebook": record.get("notebook")}
    if inputs is not None:
        data["inputs"] = dict(inputs)
    tmp = marker.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    tmp.replace(marker)  # a marker is whole or absent


def upgrade_marker(run_dir: Path, step: str, record: Mapping[str, Any], inputs: Mapping[str, Any] | None) -> None:
    """A reused step whose marker predates the records of parameters and inputs gets them (same fingerprint)."""
    marker = read_marker(run_dir, step) or {}
    if "parameters" in marker and ("inputs" in marker or inputs is None):
        return
    extra = {k: v for k, v in marker.items() if k in ("seconds", "finished")}
    write_marker(run_dir, step, record, inputs, **extra)
