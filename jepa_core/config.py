"""Run parameters: plain dataclasses with commented defaults, loaded from YAML and validated.

A profile in `parameters/*.yaml` mirrors these sections. Every value — from a file, from the
CLI, or injected by papermill — goes through `load_params`, which rejects unknown keys, wrong
types and out-of-range values with one message naming the key, the value and what is allowed,
before any compute starts.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

TASKS = ("sst2", "mrpc", "mnli", "cola", "stsb")
# The probe's metrics per GLUE task; the first is the task's headline metric (docs/PROTOCOL.md §5.1).
TASK_METRICS = {"sst2": ("accuracy",), "mrpc": ("f1", "accuracy"), "mnli": ("accuracy",), "cola": ("mcc",),
                "stsb": ("spearman", "pearson")}
HEADLINE_METRIC = {task: metrics[0] for task, metrics in TASK_METRICS.items()}
POOLINGS = ("mean", "max", "weighted", "attention", "cls")
OBJECTIVES = ("hybrid", "mlm")
ARCHITECTURES = ("bert", "modernbert")
SOURCES = ("auto", "hub", "wiki_dump", "wikiextractor", "text", "parquet", "jsonl")
JEPA_LOSSES = ("cosine", "smooth_l1", "mse")
LAMBDA_MODES = ("learned", "fixed", "uncertainty")
PRECISIONS = ("auto", "bf16", "fp32")  # train.precision and the EMA targets' precision
BUDGETS = ("steps", "flops", "seconds")
REPORT_TO = ("jsonl", "tensorboard")  # train.report_to: where the training log goes (jsonl always)
PAIR_ENCODINGS = ("joint", "siamese")
RENAMED_SECTIONS = {"objective": "jepa"}  # old name -> new name, for a clear error on old profiles

# Keys of the pre-training sections that do not change the trained weights, each with the reason. A
# checkpoint stays resumable when only these change (resume.py); every other key of WEIGHT_SECTIONS is
# part of the run's identity (test_train.py checks that all but the rounding ones leave the weights bit
# for bit equal); the workbook leaves them out of 02_pretrain's fingerprint. Here, not in resume.py, so
# that the workbook runner reads them without importing torch.
NON_WEIGHT_KEYS = {
    "train.log_every": "only how often the log is written",
    "train.parallel_runs": "only how many runs share the machine (their thread counts round differently, 1e-7-ish)",
    "train.eval_every": "validation runs without gradients, in eval mode, on batches collated once",
    "train.eval_batches": "only how many fixed batches validation averages over",
    "train.checkpoint_every": "when the state is saved, not what it is",
    "train.num_workers": "batch order and masks are seeded per item, not per worker process",
    "train.compile": "the same computation, compiled (equal up to float rounding)",
    "train.static_shapes": "the same masks, padded to fixed widths (equal up to float rounding)",
    "train.collapse_std": "only when a collapse warning is printed",
    "train.report_to": "only which loggers receive the log records (jsonl always)",
    "train.snapshots": "only which encoder states are copied aside (light snapshots for the trajectories)",
}
WEIGHT_SECTIONS = ("data", "model", "mask", "jepa", "train")


# ---------------------------------------------------------------- ablation variants: the name grammar

_FIXED = re.compile(r"hybrid-fixed(\d*\.?\d+)")  # hybrid-fixed0.5, hybrid-fixed.25, hybrid-fixed1


@dataclass(frozen=True)
class Variant:
    """A named change of the profile: the objective it trains and the dotted keys it sets."""
    name: str
    objective: str
    overrides: Mapping[str, Any] = field(default_factory=dict)  # dotted key -> value, e.g. {"jepa.shared_pass": True}


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    # the learned mode is set explicitly so that the variant means the same under any profile
    Variant("hybrid-learned", "hybrid", {"jepa.lambda_mode": "learned"}),
    Variant("hybrid-fixed0.5", "hybrid", {"jepa.lambda_mode": "fixed", "jepa.fixed_lambda": 0.5}),
    Variant("hybrid-uncertainty", "hybrid", {"jepa.lambda_mode": "uncertainty"}),
    Variant("hybrid-shared", "hybrid", {"jepa.shared_pass": True}),
    Variant("mlm-steps", "mlm", {"train.budget": "steps"}),
    Variant("mlm-flops", "mlm", {"train.budget": "flops"}),
)}
# the cpu list measured in docs/results/cpu/ (one variant per confound; hybrid-uncertainty, a second λ rule,
# adds ~20 min to the ~65)
DEFAULT_CPU_VARIANTS = ("hybrid-learned", "hybrid-fixed0.5", "hybrid-shared", "mlm-flops")


def variant(name: str) -> Variant:
    """The variant called `name`: one of VARIANTS, or hybrid-fixed<λ> for any λ in [0, 1]."""
    if name in VARIANTS:
        return VARIANTS[name]
    if m := _FIXED.fullmatch(name):
        return Variant(name, "hybrid", {"jepa.lambda_mode": "fixed", "jepa.fixed_lambda": float(m.group(1))})
    raise ParamsError(f"unknown ablation variant {name!r}: allowed {', '.join(VARIANTS)}, "
                      "or hybrid-fixed<lambda> with lambda in [0, 1] (e.g. hybrid-fixed0.3)")



def hash_dict(d: Mapping[str, Any]) -> str:
    """Short hash of a JSON-able mapping (key order does not matter)."""
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


class ParamsError(ValueError):
    """A parameter is unknown, of the wrong type or out of range."""


@dataclass
class DataConfig:
    source: str = "auto"  # auto | hub | wiki_dump | wikiextractor | text | parquet | jsonl
    path: str | None = None  # file or folder for local sources; None: $WIKI_DIR, else the embedded excerpt
    hub_name: str = "wikimedia/wikipedia"  # used by source=hub
    hub_config: str = "20231101.en"
    max_documents: int | None = None  # read at most this many documents (None: all)
    validation_fraction: float = 0.05  # documents held out for validation, chosen by a hash of their id
    tokenizer: str = "train"  # "train" (WordPiece on the train split) or a tokenizer name/path
    vocab_size: int = 8000  # for tokenizer=train
    seq_len: int = 128  # packed block length L (tokens)


@dataclass
class ModelConfig:
    architecture: str = "bert"  # bert: HF BertModel (post-LN, learned absolute positions, GELU FFN) |
    #   modernbert: HF ModernBertModel (pre-LN, rotary positions, GeGLU FFN, no biases; every layer global
    #   attention). Exported encoders of both load with AutoModel (docs/DESIGN.md)
    layers: int = 4  # encoder depth
    hidden: int = 256  # encoder width
    heads: int = 4
    ffn: int = 1024  # feed-forward width (modernbert: the GLU's width; its input matrix is hidden x 2*ffn)
    # longest input (bert: size of the position table); must cover data.seq_len and eval.max_length
    max_position: int = 128
    # bert: hidden and attention-probability dropout; modernbert: embedding, attention and MLP dropout
    dropout: float = 0.1
    # std of the random initial weights (encoder, MLM head, predictor): BERT's 0.02 by default. A small
    # encoder leaves the unigram plateau far sooner from a larger init (docs/RECIPE.md: 0.05 at width 128).
    # Our reading: the initial attention logits have std init_std^2 * hidden (0.05 at 0.02 x 128), so
    # attention starts uniform and the query/key gradients, each proportional to the other, start near zero.
    init_std: float = 0.02
    predictor_layers: int = 2  # JEPA predictor: a narrow transformer
    predictor_hidden: int = 128
    predictor_heads: int = 4


@dataclass
class MaskConfig:
    mlm_probability: float = 0.15  # share of non-special real tokens corrupted (80/10/10)
    num_targets: int = 2  # JEPA target blocks per sequence
    target_scale: list[float] = field(default_factory=lambda: [0.10, 0.25])  # each target: share of real length
    context_scale: list[float] = field(default_factory=lambda: [0.65, 0.85])  # context block: share of real length
    min_keep: int = 8  # context keeps at least this many tokens after removing targets


@dataclass
class JepaConfig:
    jepa_loss: str = "cosine"  # cosine (1 - cos, paper) | smooth_l1 | mse
    target_layers: int = 1  # targets = LayerNorm(mean of the top-K layers of the EMA encoder)
    ema_start: float = 0.996  # EMA momentum, linear from start to end over the run
    ema_end: float = 1.0
    lambda_mode: str = "learned"  # learned (sigmoid(w), paper) | fixed | uncertainty (Kendall et al.)
    fixed_lambda: float = 0.5  # lambda_mode=fixed: L = lam*L_jepa + (1-lam)*L_mlm
    shared_pass: bool = False  # one student pass over the MLM-corrupted context feeds both losses
    target_precision: str = "auto"  # EMA target pass (no autograd): auto (bf16 where the hardware has
    #   native bf16: bf16 GPUs, CPUs with AVX512-BF16/AMX; else fp32) | bf16 | fp32 (docs/PERFORMANCE.md)


@dataclass
class TrainConfig:
    steps: int = 1000  # optimizer steps of the reference (hybrid) run
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.05  # not applied to biases, LayerNorm or lambda
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * min_lr_ratio
    grad_clip: float = 1.0
    budget: str = "steps"  # parity between objectives: steps (paper) | flops | seconds
    budget_seconds: float | None = None  # budget=seconds: wall-clock per objective
    precision: str = "auto"  # auto (bf16 where supported on GPU) | bf16 | fp32
    compile: bool = False  # torch.compile the encoder
    # pad every batch to fixed widths (rows to seq_len, JEPA context/target lists to the largest the mask
    # sampler can draw, MLM positions to batch x round(p·seq_len)) so a compiled encoder is not recompiled
    # for each batch's mask counts; same masks and losses (up to float rounding), more padded compute
    static_shapes: bool = False
    num_workers: int = 0  # DataLoader workers
    # pre-training runs (seed x objective) at once on CPU, each in its own process with cores/N threads
    parallel_runs: int = 1
    log_every: int = 1  # JSONL log interval (steps)
    # where the log records go: jsonl (always) | tensorboard (event files in logs/tensorboard/<model>/)
    report_to: list[str] = field(default_factory=lambda: ["jsonl"])
    eval_every: int = 100  # validation interval (steps)
    eval_batches: int = 8  # validation batches per evaluation
    checkpoint_every: int = 200  # checkpoint interval (steps); one is always written at the end
    # light encoder snapshots (weights + tokenizer, no optimizer) at this many points evenly spaced over the planned
    # steps, step 0 (before the first update) and the last included, in snapshots/<model>/step-<N>/: the
    # trajectories of analysis/trajectories.py; 0: none (otherwise at least 2)
    snapshots: int = 6
    collapse_std: float = 1e-3  # warn when the per-dim std of JEPA targets falls below this


@dataclass
class EvalConfig:
    glue_dir: str | None = None  # GLUE folder (TSV layout); None: $GLUE_DIR, else the hub
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    poolings: list[str] = field(default_factory=lambda: list(POOLINGS))
    max_length: int = 128
    batch_size: int = 64
    max_train_examples: int | None = 2000  # seeded subset of each train split for the probes
    max_dev_examples: int | None = None  # cap on dev examples (None: all)
    pair_encoding: str = "joint"  # joint ([CLS] a [SEP] b [SEP], paper) | siamese ([u, v, |u-v|, u*v])
    cv_folds: int = 3  # C / alpha chosen by CV on the train split
    geometry_samples: int = 1000  # dev embeddings subsampled for geometry metrics
    bootstrap: int = 1000  # bootstrap resamples for CIs and paired tests
    wiki_sentences: int = 1000  # held-out Wikipedia sentences for label-free geometry
    random_init_baseline: bool = True  # also evaluate a random-init encoder of the same architecture
    learned_pooling_epochs: int = 30  # weighted/attention pooling trained with the probe
    # encoders evaluated at once, each in its own process (None: one per core, at most one per encoder)
    workers: int | None = None
    # reference encoders (notebook 05 only, with the same protocol; 01-04 never read this key): names of
    # encode.REFERENCE_ENCODERS (all-MiniLM-L6-v2, offline from its wheel) or HF model folders. [] (default):
    # none; a non-empty list turns notebook 05 on even without ablation variants
    reference_models: list[str] = field(default_factory=list)


@dataclass
class AblationsConfig:
    """Extra pre-training runs that change one knob of the hybrid or the MLM run (jepa_core/study/variants.py).
    Off by default: no variant, so no run, step or fingerprint changes."""
    # variant names: hybrid-learned, hybrid-fixed<lambda> (e.g. hybrid-fixed0.5), hybrid-uncertainty,
    # hybrid-shared, mlm-steps, mlm-flops; [] (default): no ablations
    variants: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)  # [] (default): the profile's `seeds`


@dataclass
class Params:
    run_name: str = "run"  # outputs land in outputs/<run_name>/
    seeds: list[int] = field(default_factory=lambda: [0])  # one pre-training run per seed and objective
    objectives: list[str] = field(default_factory=lambda: list(OBJECTIVES))
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    jepa: JepaConfig = field(default_factory=JepaConfig)  # JEPA-only keys (the MLM-only run ignores them)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    ablations: AblationsConfig = field(default_factory=AblationsConfig)  # extra runs, off by default

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self, *sections: str) -> str:
        """Short hash of the given sections (all when none), to key caches and reuse steps."""
        d = self.to_dict()
        return hash_dict({k: d[k] for k in sections} if sections else d)

    @property
    def seed(self) -> int:
        return self.seeds[0]


# ---------------------------------------------------------------- range checks

def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ParamsError(f"parameter {key}={value!r} is invalid: allowed {allowed}")


def _check_choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    _check(value in choices, key, value, "one of " + ", ".join(choices))


def _check_choices(key: str, values: list[str], choices: tuple[str, ...]) -> None:
    for v in values:
        _check_choice(key, v, choices)
    _check(len(values) > 0, key, values, "a non-empty list")


def _validate_ranges(p: Params) -> None:
    """Every value in its allowed range, section by section (a ParamsError names the first one that is not)."""
    for check in (_validate_run_and_data, _validate_model, _validate_mask_and_jepa, _validate_train, _validate_eval):
        check(p)


def _validate_run_and_data(p: Params) -> None:
    d, m = p.data, p.model
    _check(bool(p.run_name) and "/" not in p.run_name, "run_name", p.run_name, "a non-empty name without '/'")
    _check(len(p.seeds) > 0, "seeds", p.seeds, "a non-empty list of integers")
    _check_choices("objectives", p.objectives, OBJECTIVES)
    _check_choice("data.source", d.source, SOURCES)
    _check(d.max_documents is None or d.max_documents > 0, "data.max_documents", d.max_documents,
           "a positive integer or null")
    _check(0 < d.validation_fraction < 1, "data.validation_fraction", d.validation_fraction, "a number in (0, 1)")
    _check(d.vocab_size >= 200, "data.vocab_size", d.vocab_size, "an integer >= 200")
    _check(16 <= d.seq_len <= m.max_position, "data.seq_len", d.seq_len,
           f"an integer in [16, model.max_position={m.max_position}]")


def _validate_model(p: Params) -> None:
    m = p.model
    for key in ("layers", "hidden", "heads", "ffn", "predictor_layers", "predictor_hidden", "predictor_heads"):
        _check(getattr(m, key) > 0, f"model.{key}", getattr(m, key), "a positive integer")
    _check_choice("model.architecture", m.architecture, ARCHITECTURES)
    _check(m.hidden % m.heads == 0, "model.heads", m.heads, f"a divisor of model.hidden={m.hidden}")
    _check(m.architecture != "modernbert" or (m.hidden // m.heads) % 2 == 0, "model.heads", m.heads,
           f"a divisor of model.hidden={m.hidden} giving an even head size (rotary positions rotate pairs of dims)")
    _check(m.predictor_hidden % m.predictor_heads == 0, "model.predictor_heads", m.predictor_heads,
           f"a divisor of model.predictor_hidden={m.predictor_hidden}")
    _check(0 <= m.dropout < 1, "model.dropout", m.dropout, "a number in [0, 1)")
    _check(0 < m.init_std < 1, "model.init_std", m.init_std, "a number in (0, 1)")


def _validate_mask_and_jepa(p: Params) -> None:
    m, k, o = p.model, p.mask, p.jepa
    _check(0 < k.mlm_probability < 1, "mask.mlm_probability", k.mlm_probability, "a number in (0, 1)")
    _check(k.num_targets >= 1, "mask.num_targets", k.num_targets, "a positive integer")
    for key in ("target_scale", "context_scale"):
        lo_hi = getattr(k, key)
        _check(len(lo_hi) == 2 and 0 < lo_hi[0] <= lo_hi[1] < 1, f"mask.{key}", lo_hi,
               "[low, high] with 0 < low <= high < 1")
    _check(k.num_targets * k.target_scale[1] < 1, "mask.target_scale", k.target_scale,
           f"num_targets * high < 1 so that context tokens remain (num_targets={k.num_targets})")
    _check(k.min_keep >= 1, "mask.min_keep", k.min_keep, "a positive integer")
    _check_choice("jepa.jepa_loss", o.jepa_loss, JEPA_LOSSES)
    _check(1 <= o.target_layers <= m.layers, "jepa.target_layers", o.target_layers,
           f"an integer in [1, model.layers={m.layers}]")
    _check(0 <= o.ema_start <= o.ema_end <= 1, "jepa.ema_start", (o.ema_start, o.ema_end),
           "0 <= ema_start <= ema_end <= 1")
    _check_choice("jepa.target_precision", o.target_precision, PRECISIONS)
    _check_choice("jepa.lambda_mode", o.lambda_mode, LAMBDA_MODES)
    _check(0 <= o.fixed_lambda <= 1, "jepa.fixed_lambda", o.fixed_lambda, "a number in [0, 1]")


def _validate_train(p: Params) -> None:
    t = p.train
    for key in ("steps", "batch_size", "log_every", "eval_every", "eval_batches", "checkpoint_every"):
        _check(getattr(t, key) > 0, f"train.{key}", getattr(t, key), "a positive integer")
    _check(t.lr > 0, "train.lr", t.lr, "a positive number")
    _check(t.parallel_runs >= 1, "train.parallel_runs", t.parallel_runs, "a positive integer")
    _check(t.snapshots == 0 or t.snapshots >= 2, "train.snapshots", t.snapshots,
           "0 (no snapshots) or an integer >= 2 (step 0 and the last step at least)")
    _check(t.weight_decay >= 0, "train.weight_decay", t.weight_decay, "a number >= 0")
    _check(0 <= t.warmup_steps < t.steps, "train.warmup_steps", t.warmup_steps,
           f"an integer in [0, train.steps={t.steps})")
    _check(0 <= t.min_lr_ratio <= 1, "train.min_lr_ratio", t.min_lr_ratio, "a number in [0, 1]")
    _check(t.grad_clip > 0, "train.grad_clip", t.grad_clip, "a positive number")
    _check_choice("train.budget", t.budget, BUDGETS)
    _check(t.budget != "seconds" or (t.budget_seconds or 0) > 0, "train.budget_seconds", t.budget_seconds,
           "a positive number when train.budget=seconds")
    _check_choice("train.precision", t.precision, PRECISIONS)
    _check_choices("train.report_to", t.report_to, REPORT_TO)
    _check("jsonl" in t.report_to, "train.report_to", t.report_to, "a list that includes jsonl (the log of record)")
    _check(t.num_workers >= 0, "train.num_workers", t.num_workers, "an integer >= 0")
    _check(t.collapse_std >= 0, "train.collapse_std", t.collapse_std, "a number >= 0")


def _validate_eval(p: Params) -> None:
    d, m, e = p.data, p.model, p.eval
    _check_choices("eval.tasks", e.tasks, TASKS)
    _check_choices("eval.poolings", e.poolings, POOLINGS)
    _check(8 <= e.max_length <= m.max_position, "eval.max_length", e.max_length,
           f"an integer in [8, model.max_position={m.max_position}]")
    for key in ("batch_size", "cv_folds", "geometry_samples", "bootstrap", "wiki_sentences", "learned_pooling_epochs"):
        _check(getattr(e, key) > 0, f"eval.{key}", getattr(e, key), "a positive integer")
    _check(e.cv_folds >= 2, "eval.cv_folds", e.cv_folds, "an integer >= 2")
    _check(e.workers is None or e.workers >= 1, "eval.workers", e.workers, "a positive integer or null")
    for key in ("max_train_examples", "max_dev_examples"):
        v = getattr(e, key)
        _check(v is None or v > 0, f"eval.{key}", v, "a positive integer or null")
    _check_choice("eval.pair_encoding", e.pair_encoding, PAIR_ENCODINGS)
    if p.ablations.variants:
        for name in p.ablations.variants:
            variant(name)  # a ParamsError naming the allowed variants
        _check(len(set(p.ablations.variants)) == len(p.ablations.variants), "ablations.variants",
               p.ablations.variants, "a list without repeated names")
    if d.path is not None and d.source not in ("auto", "hub"):
        _check(Path(d.path).expanduser().exists(), "data.path", d.path, "an existing file or folder")
    if e.glue_dir is not None:
        _check(Path(e.glue_dir).expanduser().is_dir(), "eval.glue_dir", e.glue_dir,
               "an existing folder (GLUE TSV layout) or null")


# ---------------------------------------------------------------- typed construction

def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp` (ints pass as floats; nothing else is converted)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ParamsError:
                pass
        expected = " or ".join(_type_name(a) for a in args)
        raise ParamsError(f"parameter {key}={value!r} has the wrong type: expected {expected}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ParamsError(f"parameter {key}={value!r} has the wrong type: expected a list of {_type_name(item)}")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ParamsError(f"parameter {key}={value!r} has the wrong type: expected {_type_name(tp)}")


def _build(cls: type, raw: Mapping[str, Any], prefix: str) -> Any:
    if not isinstance(raw, Mapping):
        raise ParamsError(f"parameter {prefix.rstrip('.') or '<root>'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if not prefix and key in RENAMED_SECTIONS:
            new = RENAMED_SECTIONS[key]
            raise ParamsError(f"the section `{key}` is now `{new}`: rename it (in a profile `{new}:`, "
                              f"on the command line --set {new}.KEY=VALUE)")
        if key not in names:
            raise ParamsError(f"unknown parameter {prefix}{key}: allowed keys here are {', '.join(names)}")
    kwargs = {}
    for name in names:
        if name not in raw:
            continue
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, raw[name], f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(raw[name], tp, f"{prefix}{name}")
    return cls(**kwargs)


def _merge(base: dict, overrides: Mapping[str, Any]) -> dict:
    """Apply overrides given nested ({"train": {"steps": 5}}) or dotted ({"train.steps": 5})."""
    out = json.loads(json.dumps(base))
    for key, value in overrides.items():
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            if not isinstance(node.get(p, {}), dict):
                raise ParamsError(f"unknown parameter {key}: {p} is not a section")
            node = node.setdefault(p, {})
        leaf = parts[-1]
        if isinstance(value, Mapping) and isinstance(node.get(leaf), dict):
            node[leaf] = _merge(node[leaf], value)
        else:
            node[leaf] = value
    return out


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def add_set_option(parser: Any, example: str) -> None:
    """The `--set KEY=VALUE` option the three command lines share (workbook, train, evaluate): `args.sets`,
    read by parse_overrides."""
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a parameter (repeatable; the value is YAML), e.g. --set {example}")


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """`key=value` pairs; values are parsed as YAML (5 -> int, 1e-3 -> float, [a, b] -> list, null)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ParamsError(f"--set {item!r}: expected key=value, e.g. --set train.steps=100")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ParamsError(f"--set {item!r}: value is not valid YAML: {exc}") from None
        # YAML 1.1 reads "1e-3" (no dot) as a string; on a command line it is meant as a number
        out[key.strip()] = float(parsed) if isinstance(parsed, str) and _NUMBER.fullmatch(parsed) else parsed
    return out


def params_from_dict(raw: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> Params:
    merged = _merge(dict(raw or {}), overrides or {})
    p = _build(Params, merged, "")
    _validate_ranges(p)
    return p


def load_params(path: str | os.PathLike | None = None, overrides: Mapping[str, Any] | None = None) -> Params:
    """Load a YAML profile (or defaults when path is None), apply overrides, validate everything."""
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ParamsError(f"parameter file {str(path)!r} does not exist")
        try:
            raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ParamsError(f"parameter file {str(path)!r} is not valid YAML: {exc}") from None
    return params_from_dict(raw, overrides)


def save_params(params: Params, path: str | os.PathLike) -> None:
    Path(path).write_text(yaml.safe_dump(params.to_dict(), sort_keys=False), encoding="utf-8")
