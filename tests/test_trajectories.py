"""Issue 25: encoder snapshots during pre-training (pretrain/snapshots.py) and the trajectories measured on
them (analysis/trajectories.py): every point is the weights at its step, step 0 is the seed's initial
encoder, resume writes the points still ahead, nothing is deleted; the trend rule on curves with known
trends; the tables, the figures, the summary block."""
import json
import os
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from _train_helpers import one_thread, tiny_data, tiny_params
from accelerate.utils import set_seed
from safetensors.torch import load_file

import jepa_core.pretrain.train as T
from jepa_core.analysis import trajectories as TR
from jepa_core.analysis.evaluate import load_for_evaluation, prepare_wiki
from jepa_core.analysis.tables import ModelFolder
from jepa_core.config import ParamsError
from jepa_core.model import PretrainModel
from jepa_core.pretrain import checkpoint as ckpt
from jepa_core.pretrain.jobs import pretrain
from jepa_core.report import trajectory_figures, trajectory_summary
from jepa_core.runs import RunPaths, list_snapshots, snapshot_steps

single_thread = pytest.fixture(autouse=True)(one_thread)

SEEDS = (0, 1)
SENTENCES = [f"Sentence {i}: the {w} of the river valley was {v} in the {c} century."
             for i, (w, v, c) in enumerate((w, v, c) for w in ("history", "economy", "climate", "people", "art")
                                           for v in ("settled", "changed", "recorded", "studied")
                                           for c in ("tenth", "twelfth", "last"))]


def params(**overrides):
    return tiny_params(**{"seeds": list(SEEDS), "train__snapshots": 4, "eval__tasks": ["sst2"], "eval__glue_dir": None,
                          **overrides})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """hybrid and mlm, seeds 0 and 1, 30 steps, snapshots at steps 0, 10, 20, 30, in the run-folder layout."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("run")
    data = tiny_data()
    p = params()
    for seed in SEEDS:
        for objective in p.objectives:
            T.train(p, objective, RunPaths.for_run(root, objective, seed), seed=seed, data=data)
    (root / "data").mkdir(exist_ok=True)
    (root / "data" / "wiki_sentences.json").write_text(json.dumps(SENTENCES))
    return root


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- where the points fall

def test_snapshot_steps_include_step_0_and_the_last_step():
    assert snapshot_steps(1500, 6) == [0, 300, 600, 900, 1200, 1500]
    assert snapshot_steps(30, 6) == [0, 6, 12, 18, 24, 30]
    assert snapshot_steps(10, 4) == [0, 3, 7, 10]  # 3.33 -> 3, 6.67 -> 7 (half up, integer arithmetic)
    assert snapshot_steps(3, 6) == [0, 1, 2, 3]  # a run shorter than the grid: each step once
    assert snapshot_steps(100, 0) == [] and snapshot_steps(0, 6) == [0]
    for total in (1, 7, 99, 1500, 2713):
        for count in (2, 3, 6, 11):
            steps = snapshot_steps(total, count)
            assert steps[0] == 0 and steps[-1] == total and steps == sorted(set(steps)) and len(steps) <= count
    with pytest.raises(ParamsError, match="train.snapshots"):
        tiny_params(train__snapshots=1)


def test_snapshots_are_the_weights_at_their_steps(run_dir):
    """The recorded step, tokens and FLOPs are the run's at that point; the last snapshot IS the final model."""
    p = params()
    for seed in SEEDS:
        for objective in p.objectives:
            paths = RunPaths.for_run(run_dir, objective, seed)
            snaps = list_snapshots(paths.snapshot_dir)
            summary = json.loads(paths.summary_path.read_text())
            assert [s.step for s in snaps] == [0, 10, 20, 30] and [s.point for s in snaps] == [0, 1, 2, 3]
            assert {(s.points, s.planned_steps, s.objective, s.seed) for s in snaps} == {(4, 30, objective, seed)}
            assert [s.tokens for s in snaps] == [s.step * p.train.batch_size * p.data.seq_len for s in snaps]
            assert snaps[-1].tokens == summary["tokens"] and snaps[-1].flops == pytest.approx(summary["total_flops"])
            assert _equal(_weights(snaps[-1].path), _weights(paths.model_dir))
            assert not (snaps[0].path / ckpt.STATE).exists()  # light: no optimizer state
            assert not _equal(_weights(snaps[0].path), _weights(snaps[1].path))


def test_step_0_is_the_random_init_encoder_of_the_seed(run_dir):
    """Step 0 of every model is the encoder Engine.build initialises for its seed (before any update): the
    weights, and so the metrics; hybrid and MLM of one seed start from the same encoder."""
    p, data = params(), tiny_data()
    wiki = prepare_wiki(SENTENCES, p)
    for seed in SEEDS:
        set_seed(seed)
        init = PretrainModel(p, "mlm", len(data.tokenizer), data.tokenizer.pad_token_id).encoder_for_export()
        fresh = run_dir / f"init-s{seed}"
        ckpt.save_encoder(fresh, init, data.tokenizer)
        step0 = {o: list_snapshots(RunPaths.for_run(run_dir, o, seed).snapshot_dir)[0] for o in p.objectives}
        for snap in step0.values():
            assert snap.step == 0 and _equal(_weights(snap.path), _weights(fresh))
        measured = {name: TR.measure_encoder(load_for_evaluation(ModelFolder(name, name, seed, path), p), wiki, None,
                                             p, run_dir / "cache" / "encode")
                    for name, path in (("init", fresh), *((o, s.path) for o, s in step0.items()))}
        assert {k: m.value for k, m in measured["hybrid"].items()} == {k: m.value for k, m in measured["init"].items()}
        assert {k: m.value for k, m in measured["mlm"].items()} == {k: m.value for k, m in measured["init"].items()}
    other = list_snapshots(RunPaths.for_run(run_dir, "mlm", 1).snapshot_dir)[0]
    assert not _equal(_weights(other.path), _weights(run_dir / "init-s0"))  # another seed, another encoder


def test_interrupted_run_keeps_its_points_and_writes_the_rest(run_dir, tmp_path, monkeypatch):
    """SIGINT during step 20: the snapshot of step 20 is the checkpoint's encoder, bit for bit; the resumed run
    writes step 30 (and rewrites nothing before it); its points equal the uninterrupted run's."""
    p, data = params(), tiny_data()
    real = T.ema_momentum

    def interrupt_during_step_20(step, *args):
        if step == 19:
            os.kill(os.getpid(), signal.SIGINT)  # the step completes, then its snapshot and a checkpoint
        return real(step, *args)

    monkeypatch.setattr(T, "ema_momentum", interrupt_during_step_20)
    paths = RunPaths.for_run(tmp_path, "hybrid", 0)
    with pytest.raises(T.TrainingInterrupted):
        T.train(p, "hybrid", paths, seed=0, data=data)
    monkeypatch.setattr(T, "ema_momentum", real)
    assert [s.step for s in list_snapshots(paths.snapshot_dir)] == [0, 10, 20]
    assert _equal(_weights(paths.snapshot_dir / "step-20"), _weights(paths.checkpoint_dir / ckpt.ENCODER))
    before = {s.step: (s.path / "model.safetensors").stat().st_mtime_ns for s in list_snapshots(paths.snapshot_dir)}
    T.train(p, "hybrid", paths, seed=0, data=data, resume=True)
    snaps = list_snapshots(paths.snapshot_dir)
    assert [s.step for s in snaps] == [0, 10, 20, 30]
    assert {s.step: (s.path / "model.safetensors").stat().st_mtime_ns for s in snaps[:3]} == before
    uninterrupted = list_snapshots(RunPaths.for_run(run_dir, "hybrid", 0).snapshot_dir)
    for a, b in zip(snaps, uninterrupted):
        wa, wb = _weights(a.path), _weights(b.path)
        assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa), a.step


def test_a_run_from_scratch_moves_earlier_snapshots_aside(tmp_path):
    """Never deleted: with its checkpoint (--force, or other weight-changing parameters) or, without one (a run
    killed before its first checkpoint), into snapshots/<name>.stale-<time>/."""
    p, data = params(train__steps=4, train__warmup_steps=1, train__snapshots=2), tiny_data()
    pretrain(p, tmp_path, "mlm", 0, data, name="mlm-s0")
    paths = RunPaths.for_run(tmp_path, "mlm-s0")
    first = _weights(paths.snapshot_dir / "step-4")
    pretrain(p, tmp_path, "mlm", 0, data, resume=False, name="mlm-s0")  # --force: set aside, train again
    (stale,) = tmp_path.glob("checkpoints/mlm-s0.stale-*")
    assert _equal(_weights(stale / "snapshots" / "step-4"), first)
    assert [s.step for s in list_snapshots(paths.snapshot_dir)] == [0, 4]
    os.replace(paths.checkpoint_dir, tmp_path / "elsewhere")  # as if killed before the first checkpoint
    T.train(p, "mlm", paths, seed=0, data=data, resume=True)
    (moved,) = tmp_path.glob("snapshots/mlm-s0.stale-*")
    assert [s.step for s in list_snapshots(moved)] == [0, 4] and [s.step for s in list_snapshots(paths.snapshot_dir)] \
        == [0, 4]


def test_no_snapshots_when_off(tmp_path):
    T.train(params(train__steps=4, train__warmup_steps=1, train__snapshots=0), "mlm", tmp_path, data=tiny_data())
    assert not (tmp_path / "snapshots").exists()


# ---------------------------------------------------------------- the trend rule, on curves with known trends

POINTS = [0, 1, 2, 3, 4, 5]  # 6 snapshots: the middle is point 3


def _curves(shape, seeds=3, seed_sd=0.01, example_sd=0.005, n_boot=300, rng_seed=0):
    """Per-seed differences d[k, s] = shape[k] + seed noise (0 at point 0: the shared initial encoder) and
    paired bootstrap differences around them (one resample row shared by all points and seeds)."""
    rng = np.random.default_rng(rng_seed)
    shape = np.asarray(shape, dtype=float)
    d = shape[:, None] + rng.normal(0, seed_sd, (len(shape), seeds))
    d[0] = 0.0
    shared = rng.normal(0, example_sd, (n_boot, 1, 1))
    boot = d[:, None, :] + shared.transpose(1, 0, 2) + rng.normal(0, example_sd / 2, (len(shape), n_boot, seeds))
    boot[0] = 0.0
    return d, boot


@pytest.mark.parametrize("shape, expected", [
    ([0, 0.1, 0.2, 0.3, 0.4, 0.5], "growing"),
    ([0, -0.1, -0.2, -0.3, -0.4, -0.5], "growing"),  # the size grows, whatever the sign
    ([0, 0.0, 0.0, 0.01, 0.1, 0.3], "growing"),  # a difference that emerges late
    ([0, 0.5, 0.5, 0.5, 0.3, 0.1], "shrinking"),
    ([0, -0.4, -0.4, -0.4, -0.2, -0.05], "shrinking"),
    ([0, 0.3, 0.3, 0.0, -0.3, -0.3], "reversing"),
    ([0, -0.2, 0.0, 0.2, 0.2, 0.2], "reversing"),  # established below 0 early, above 0 later
    ([0, 0.3, 0.3, 0.3, 0.3, 0.3], "flat"),  # a stable difference
    ([0, 0.0, 0.0, 0.0, 0.0, 0.0], "flat"),  # no difference at all
])
def test_trend_of_known_curves(shape, expected):
    d, boot = _curves(shape)
    trend = TR.classify_trend(POINTS, d, boot, TR.middle_point(6))
    assert trend.label == expected, trend.reason
    assert trend.points[0].diff == 0  # the shared initial encoder


def test_trend_is_decided_by_the_intervals_not_the_means():
    """The mean grows from the middle to the end, but the seeds disagree: no established change -> flat."""
    d, boot = _curves([0, 0.1, 0.2, 0.3, 0.4, 0.5], seed_sd=0.0)
    d[4], d[5] = [0.2, 0.6, 0.4], [0.9, 0.1, 0.5]  # end: mean 0.5 > the middle's 0.3; changes 0.6, −0.2, 0.2
    boot[5] = d[5] + (boot[5] - boot[5].mean(0))
    trend = TR.classify_trend(POINTS, d, boot, 3)
    assert trend.label == "flat" and trend.change.ci_low < 0 < trend.change.diff
    d[5] = [0.5, 0.55, 0.45]  # the same mean end, the seeds agree: an established change
    assert TR.classify_trend(POINTS, d, boot, 3).label == "growing"
    d, boot = _curves([0, 0.1, 0.2, 0.3, 0.4, 0.5], seeds=1)
    assert TR.classify_trend(POINTS, d, boot, 3).label == "undetermined"  # one seed: no interval
    d, boot = _curves([0, 0.5])
    assert TR.classify_trend([0, 1], d, boot, TR.middle_point(2)).label == "undetermined"  # no middle before the end


def test_middle_and_probe_points():
    assert [TR.middle_point(n) for n in (2, 3, 4, 5, 6, 7)] == [1, 1, 2, 2, 3, 3]
    assert TR.probe_points(6) == {0, 3, 5} and TR.probe_points(2) == {0, 1}


# ---------------------------------------------------------------- the study, its tables, figures and summary

@pytest.fixture(scope="module")
def study(run_dir):
    return TR.trajectory_study(params(), run_dir)


def test_tables_have_every_point_of_every_model(run_dir, study):
    table, diffs, trends = study
    assert list(table.columns[:9]) == ["model", "seed", "step", "tokens", "flops", "task", "pooling", "metric", "value"]
    wiki = table[table["task"] == "wiki"]
    assert set(wiki["metric"]) == set(TR.METRICS) and set(wiki["pooling"]) == {"mean", "max"}
    for (model, seed), g in wiki.groupby(["model", "seed"]):
        assert sorted(g["step"].unique()) == [0, 10, 20, 30] and len(g) == 4 * 2 * len(TR.METRICS)
    assert np.isfinite(table["value"]).all()
    start = diffs[diffs["point"] == 0]
    assert len(start) and (start["diff"] == 0).all()  # one initial encoder for both objectives
    assert set(trends["trend"]) <= {"growing", "shrinking", "reversing", "flat"}  # two seeds: decided
    assert len(trends) == 2 * len(TR.METRICS) + ("sst2" in set(table["task"]))
    info = json.loads((run_dir / "results" / "trajectories.json").read_text())
    assert info["pairs"] == ["hybrid - mlm"] and set(info["points"]) == {"hybrid-s0", "hybrid-s1", "mlm-s0", "mlm-s1"}
    again, _, _ = TR.trajectory_study(params(), run_dir)  # the second time from the cache
    pd.testing.assert_frame_equal(again, table)


def test_sst2_probe_at_start_middle_and_end(run_dir, glue_dir):
    p = params(eval__glue_dir=str(glue_dir))
    table, diffs, trends = TR.trajectory_study(p, run_dir, out_dir=run_dir / "with_glue")
    probe = table[table["task"] == "sst2"]
    assert set(probe["metric"]) == {"accuracy"} and set(probe["pooling"]) == {"mean"}
    for _, g in probe.groupby(["model", "seed"]):
        assert sorted(g["step"]) == [0, 20, 30]  # points 0, 2 (middle of 4) and 3
    assert probe["value"].between(0, 1).all()
    assert len(trends[trends["task"] == "sst2"]) == 1


def test_runs_without_snapshots_are_named(run_dir, tmp_path):
    runs = [TR.TrajectoryRun("hybrid", "hybrid", 0, tmp_path / "nothing"), *TR.main_runs(params(), run_dir)[1:]]
    table, _, _ = TR.trajectory_study(params(), run_dir, runs=runs, out_dir=tmp_path)
    assert "hybrid-s0" not in set(table["model"] + "-s" + table["seed"].astype(str))
    notes = json.loads((tmp_path / "results" / "trajectories.json").read_text())["notes"]
    assert any(n.startswith("hybrid-s0: no encoder snapshots") for n in notes)


def test_figures_and_summary_block(run_dir, study):
    table, diffs, trends = study
    for x in ("tokens", "flops", "step"):
        fig = trajectory_figures.trajectories(table, x=x)
        titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
        assert titles[0] == "wiki · mean · uniformity" and len(titles) == len(set(zip(table["task"], table["pooling"],
                                                                                        table["metric"])))
    fig = trajectory_figures.difference_trajectories(diffs, trends)
    assert any(" — " in ax.get_title() for ax in fig.axes)  # the trend label in the title
    lines = trajectory_summary.exploratory_trajectory_section(run_dir)
    text = "\n".join(lines)
    assert lines[0] == trajectory_summary.SECTION and "| wiki | mean | uniformity |" in text
    assert "step 10 (" in text and "step 0 (" not in text  # step 0: the shared encoder, not shown
    assert "uniformity (wiki, mean pooling; C1's cell on these sentences): hybrid − MLM" in text
    assert f"Over all {2 * len(TR.METRICS)} label-free cells" in text
    assert trajectory_summary.exploratory_trajectory_section(run_dir / "nowhere") == []
