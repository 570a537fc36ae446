"""Parameter validation: every bad value is rejected with a message naming key, value and what is allowed."""
from pathlib import Path

import pytest
import yaml

from jepa_core import config as C
from jepa_core.config import Params, ParamsError, load_params, params_from_dict, parse_overrides, save_params

PROFILES = sorted((Path(__file__).resolve().parents[1] / "parameters").glob("*.yaml"))


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_every_profile_loads(path):
    p = load_params(path)
    assert isinstance(p, Params)
    assert p.run_name == path.stem


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_every_profile_key_is_documented(path):
    """Each key line in a profile carries a comment, or its section header does (documented in the file)."""
    raw = yaml.safe_load(path.read_text())
    defaults = Params().to_dict()
    for section, value in raw.items():
        assert section in defaults
        if isinstance(value, dict):
            assert set(value) == set(defaults[section]), f"{path.name}: section {section} should list every key"


def test_defaults_are_valid():
    p = params_from_dict({})
    assert p.train.steps > 0 and p.objectives == ["hybrid", "mlm"]


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"train.stepz": 3}, "unknown parameter train.stepz"),
        ({"trian": {"steps": 3}}, "unknown parameter trian"),
        ({"train.steps": "ten"}, "train.steps='ten' has the wrong type: expected int"),
        ({"train.steps": 2.5}, "train.steps=2.5 has the wrong type"),
        ({"train.steps": 0}, "train.steps=0 is invalid"),
        ({"train.batch_size": -4}, "train.batch_size=-4 is invalid"),
        ({"mask.mlm_probability": 1.5}, "mask.mlm_probability=1.5 is invalid: allowed a number in (0, 1)"),
        ({"mask.target_scale": [0.3, 0.2]}, "mask.target_scale"),
        ({"mask.context_scale": [0.5, 1.2]}, "mask.context_scale"),
        ({"jepa.fixed_lambda": 1.2}, "jepa.fixed_lambda=1.2 is invalid: allowed a number in [0, 1]"),
        ({"jepa.lambda_mode": "magic"}, "jepa.lambda_mode='magic'"),
        ({"eval.poolings": ["mean", "median"]}, "eval.poolings='median' is invalid: allowed one of mean"),
        ({"eval.tasks": ["sst2", "qqp"]}, "eval.tasks='qqp' is invalid"),
        ({"data.source": "ftp"}, "data.source='ftp'"),
        ({"data.source": "wikiextractor", "data.path": "/no/such/folder"}, "data.path='/no/such/folder'"),
        ({"eval.glue_dir": "/no/such/glue"}, "eval.glue_dir='/no/such/glue'"),
        ({"model.heads": 3}, "model.heads=3 is invalid: allowed a divisor of model.hidden=256"),
        ({"model.architecture": "gpt2"}, "model.architecture='gpt2' is invalid: allowed one of bert, modernbert"),
        ({"model.architecture": "modernbert", "model.hidden": 96, "model.heads": 32}, "even head size"),
        ({"data.seq_len": 512}, "data.seq_len=512 is invalid"),
        ({"train.budget": "seconds"}, "train.budget_seconds=None"),
        ({"jepa.shared_pass": "yes"}, "jepa.shared_pass='yes' has the wrong type: expected bool"),
        ({"seeds": 3}, "seeds=3 has the wrong type: expected a list of int"),
    ],
)
def test_bad_values_name_the_key(overrides, fragment):
    with pytest.raises(ParamsError) as err:
        params_from_dict({}, overrides)
    assert fragment in str(err.value)


def test_overrides_dotted_and_nested_agree():
    a = params_from_dict({}, {"train.steps": 700, "model.layers": 3})
    b = params_from_dict({}, {"train": {"steps": 700}, "model": {"layers": 3}})
    assert a == b and a.train.steps == 700 and a.model.layers == 3 and a.train.batch_size == Params().train.batch_size


def test_ints_are_accepted_as_floats_but_not_bools():
    assert params_from_dict({}, {"train.lr": 1}).train.lr == 1.0
    with pytest.raises(ParamsError, match="train.lr=True has the wrong type"):
        params_from_dict({}, {"train.lr": True})


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ParamsError, match="does not exist"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
    not_mapping = tmp_path / "list.yaml"
    not_mapping.write_text("train: 5\n")
    with pytest.raises(ParamsError, match="train must be a mapping"):
        load_params(not_mapping)


def test_round_trip_and_fingerprint(tmp_path):
    p = params_from_dict({}, {"train.steps": 1100})
    save_params(p, tmp_path / "p.yaml")
    q = load_params(tmp_path / "p.yaml")
    assert p == q and p.fingerprint() == q.fingerprint()
    assert p.fingerprint() != params_from_dict({}, {"train.steps": 1200}).fingerprint()
    assert p.fingerprint("data") == params_from_dict({}, {"train.steps": 1200}).fingerprint("data")


def test_parse_overrides_types():
    """--set values (train, workbook CLIs) are YAML, with 1e-3-style numbers read as floats."""
    assert parse_overrides(["a.b=5", "c=1e-3", "d=[x, y]", "e=null", "f=text", "mask.target_scale=[0.1, 0.2]"]) == \
        {"a.b": 5, "c": 1e-3, "d": ["x", "y"], "e": None, "f": "text", "mask.target_scale": [0.1, 0.2]}
    with pytest.raises(ParamsError, match="key=value"):
        parse_overrides(["novalue"])
    with pytest.raises(ParamsError, match="not valid YAML"):
        parse_overrides(["a=[unclosed"])


@pytest.mark.parametrize("key, choices", [
    ("data.source", C.SOURCES), ("model.architecture", C.ARCHITECTURES), ("jepa.jepa_loss", C.JEPA_LOSSES),
    ("jepa.lambda_mode", C.LAMBDA_MODES), ("jepa.target_precision", C.PRECISIONS),
    ("train.precision", C.PRECISIONS), ("train.budget", C.BUDGETS), ("eval.pair_encoding", C.PAIR_ENCODINGS),
])
def test_choice_parameters_accept_exactly_their_one_list(key, choices):
    extra = {"train.budget_seconds": 5.0}  # needed by train.budget=seconds
    section, name = key.split(".")
    for choice in choices:
        assert getattr(getattr(params_from_dict({}, {key: choice, **extra}), section), name) == choice
    with pytest.raises(ParamsError) as err:
        params_from_dict({}, {key: "nope", **extra})
    assert f"{key}='nope' is invalid: allowed one of {', '.join(choices)}" in str(err.value)


def test_the_old_objective_section_says_it_is_now_jepa(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("objective:\n  jepa_loss: mse\n")
    for load in (lambda: load_params(old), lambda: load_params(None, parse_overrides(["objective.jepa_loss=mse"])),
                 lambda: params_from_dict({"objective": {"ema_end": 1.0}})):
        with pytest.raises(ParamsError, match="the section `objective` is now `jepa`: rename it"):
            load()
    assert load_params(None, parse_overrides(["jepa.jepa_loss=mse"])).jepa.jepa_loss == "mse"
