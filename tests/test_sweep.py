"""Sweeps: lanes of one vmapped program equal separate runs; resume, modes, branches, reports."""

from __future__ import annotations

import json
import math
import pathlib
import subprocess
import sys
import types

import chex
import jax
import numpy as np
import pytest

from experiments import branch, checkpointing, metrics, report, sweep, train, workloads
from experiments.configs import common


def quadratic_config(steps=20):
    config = common.base_config("quadratic")
    config.workload.batch_size = 16
    config.steps = steps
    config.log_every = 5
    config.eval_every = 10
    config.checkpoint.every = 100  # the final step only: saves cost more than these steps
    config.progress_bar = False
    config.optimizer.name = "sgd_momentum"
    config.optimizer.kwargs = {"momentum": 0.9}
    config.schedule.kwargs = {"peak": 0.05, "warmup_steps": 2}
    return config


PEAKS = [("schedule.kwargs.peak", [0.02, 0.05])]


def lane_records(workdir: pathlib.Path, split: str) -> list[dict]:
    return [r for r in metrics.read_metrics(workdir) if r["split"] == split]


@pytest.fixture(scope="module")
def eight_device_sweep(tmp_path_factory):
    """A 4-lane vmap sweep (2 peaks x 2 seeds) on the 8-device mesh."""
    workdir = tmp_path_factory.mktemp("sweep") / "peaks"
    config = quadratic_config()
    grid = sweep.make_grid(config, PEAKS, seeds=2)
    record = sweep.run(config, workdir, grid, "vmap")
    return config, grid, workdir, record


@pytest.fixture(scope="module")
def separate_runs(tmp_path_factory, eight_device_sweep):
    """Each lane of the sweep as its own run (what `experiments.main` with the lane's
    overrides trains), on the 8-device mesh: {name: run directory}."""
    config, grid, _, _ = eight_device_sweep
    runs = tmp_path_factory.mktemp("runs")
    for name, overrides in grid.items():
        train.train(sweep.lane_config(config, name, overrides), runs / name)
    return {name: runs / name for name in grid}


def check_lanes_equal_runs(config, grid, workdir, record, runs):
    assert record["mode"] == "vmap"
    assert [lane["name"] for lane in record["lanes"]] == list(grid)
    for lane in record["lanes"]:
        assert lane["status"] == "done" and lane["step"] == config.steps
        final = lane_records(runs[lane["name"]], "eval")[-1]
        assert final["step"] == config.steps
        for key in ("eval_loss", "distance"):
            assert lane["eval"][key] == pytest.approx(final[key], rel=2e-5, abs=1e-7), key
        # The same data order and learning rate per step: every logged train record agrees.
        ours = lane_records(workdir / "lanes" / lane["name"], "train")
        theirs = lane_records(runs[lane["name"]], "train")
        assert [r["step"] for r in ours] == [r["step"] for r in theirs] == [5, 10, 15, 20]
        for a, b in zip(ours, theirs, strict=True):
            for key in ("loss", "grad_norm", "lr", "param_norm"):
                assert a[key] == pytest.approx(b[key], rel=2e-5, abs=1e-7), key
    # The lanes differ: seeds and peaks do change the runs.
    losses = {lane["eval"]["eval_loss"] for lane in record["lanes"]}
    assert len(losses) == len(record["lanes"])


def test_lanes_equal_separate_runs_on_eight_devices(eight_device_sweep, separate_runs):
    config, grid, workdir, record = eight_device_sweep
    check_lanes_equal_runs(config, grid, workdir, record, separate_runs)
    lanes = json.loads((workdir / "lanes.json").read_text())["lanes"]
    assert [lane["name"] for lane in lanes] == list(grid)
    assert grid["peak=0.02,seed=1"] == {
        "schedule.kwargs.peak": 0.02,
        "seed": 1,
        "workload.seed": 1,
    }


def test_lanes_equal_separate_runs_on_one_device(eight_device_sweep, separate_runs, tmp_path):
    # Against the runs on 8 devices: the lanes on one device agree with them to float32
    # rounding (and sharded runs equal single-device runs, tests/test_experiments.py).
    config, grid, _, _ = eight_device_sweep
    record = sweep.run(config, tmp_path, grid, "vmap", devices=jax.devices()[:1])
    check_lanes_equal_runs(config, grid, tmp_path, record, separate_runs)


def test_lane_state_is_split_over_the_devices():
    config = quadratic_config()
    program = train.build(config, lanes=sweep.make_grid(config, PEAKS, seeds=2))
    assert dict(program.mesh.shape) == {"lanes": 4, "data": 2, "fsdp": 1}
    x = program.abstract_state["params"]["x"]
    assert x.shape == (4, 100) and x.sharding.spec[0] == "lanes"
    assert program.abstract_state["step"].shape == ()
    assert program.abstract_batch()["a"].shape[0] == 4  # [lane, example, ...]
    hyper = program.abstract_state["opt_state"].hyperparams
    assert set(hyper) == {"schedule_peak"} and hyper["schedule_peak"].shape == (4,)


def test_each_lane_sees_its_seeds_data_order():
    config = quadratic_config()
    grid = sweep.make_grid(config, PEAKS, seeds=2)
    program = train.build(config, lanes=grid)
    for step in (0, 7):
        stacked = program.host_batch(step)
        for i, (name, overrides) in enumerate(grid.items()):
            lane = sweep.lane_config(config, name, overrides)
            expected = workloads.make(lane.workload).batch(step)
            for key, value in expected.items():
                np.testing.assert_array_equal(stacked[key][i], value)
        assert not np.array_equal(stacked["a"][0], stacked["a"][1])  # seed 0 vs seed 1


def test_killed_sweep_resumes_bit_exact(eight_device_sweep, tmp_path):
    config, grid, whole, record = eight_device_sweep
    config = quadratic_config()
    config.checkpoint.every = 10  # watch-only: the same computation as the uninterrupted sweep
    killed = sweep.run(config, tmp_path, grid, "vmap", stop_after=15)
    assert {lane["status"] for lane in killed["lanes"]} == {"pending"}
    assert checkpointing.Checkpointer(tmp_path, read_only=True).latest_step() == 10
    resumed = sweep.run(config, tmp_path, grid)  # auto: the mode it was run in
    assert resumed == record
    program = train.build(config, lanes=grid)
    states = []
    for workdir in (whole, tmp_path):
        checkpointer = checkpointing.Checkpointer(workdir, read_only=True)
        states.append(checkpointer.restore(20, program.abstract_state))
        checkpointer.close()
    chex.assert_trees_all_equal(*states)
    for name in grid:
        for split in ("train", "eval"):
            a = lane_records(whole / "lanes" / name, split)
            b = lane_records(tmp_path / "lanes" / name, split)
            untimed = lambda records: [
                {k: v for k, v in r.items() if k not in metrics.TIMING_KEYS} for r in records
            ]
            assert untimed(a) == untimed(b)


def test_auto_mode_chooses_by_the_swept_keys():
    config = quadratic_config()

    def mode(sweeps, asked="auto"):
        return sweep.choose_mode(config, sweep.make_grid(config, sweeps), asked)

    assert mode(PEAKS)[0] == "vmap"
    assert mode([("optimizer.kwargs.momentum", [0.5, 0.9])])[0] == "vmap"
    assert mode([("seed", [0, 1])])[0] == "vmap"
    chosen, why = mode([("optimizer.name", ["sgd", "adamw"])])
    assert chosen == "processes" and "optimizer.name" in why
    chosen, why = mode([("workload.batch_size", [8, 16])])
    assert chosen == "processes" and "shapes" in why
    # A step count sets the schedule's phases: it cannot be an array.
    chosen, why = mode([("schedule.kwargs.warmup_steps", [0, 4])])
    assert chosen == "processes" and "warmup_steps" in why
    chosen, why = mode([("optimizer.kwargs.nesterov", [True, False])])
    assert chosen == "processes" and "non-numeric" in why
    with pytest.raises(ValueError, match=r"--mode=vmap: optimizer\.name forces --mode=processes"):
        mode([("optimizer.name", ["sgd", "adamw"])], "vmap")
    with pytest.raises(ValueError, match=r"warmup_steps forces --mode=processes"):
        mode([("schedule.kwargs.warmup_steps", [0, 4])], "vmap")
    assert mode(PEAKS, "processes")[0] == "processes"


def test_processes_mode_skips_finished_lanes(tmp_path, monkeypatch):
    config = quadratic_config(4)
    grid = sweep.make_grid(config, [("optimizer.name", ["sgd_momentum", "adamw"])])
    assert list(grid) == ["optimizer=sgd_momentum", "optimizer=adamw"]
    record = sweep.run(config, tmp_path, grid)
    assert record["mode"] == "processes"
    for lane in record["lanes"]:
        lane_dir = tmp_path / "lanes" / lane["name"]
        assert checkpointing.Checkpointer(lane_dir, read_only=True).latest_step() == 4
        final = lane_records(lane_dir, "eval")[-1]
        assert lane["eval"]["eval_loss"] == final["eval_loss"]
    # AdamW takes no momentum: the base config's is dropped for that lane.
    lane = json.loads((tmp_path / "lanes" / "optimizer=adamw" / "config.json").read_text())
    assert lane["optimizer"] == {"name": "adamw", "kwargs": {}}

    def no_training(*args, **kwargs):
        raise AssertionError("a finished lane was trained again")

    monkeypatch.setattr(train, "train", no_training)
    logged = []
    again = sweep.run(config, tmp_path, grid, log=lambda *a, **k: logged.append(a[0]))
    assert again == record
    assert sum("skipped" in line for line in logged) == 2


def test_a_diverging_lane_does_not_stop_the_others(tmp_path, capsys):
    config = quadratic_config(10)
    grid = sweep.make_grid(config, [("schedule.kwargs.peak", [0.05, 1e4])])
    record = sweep.run(config, tmp_path, grid, "vmap")
    good, bad = record["lanes"]
    assert good["status"] == "done" and math.isfinite(good["eval"]["eval_loss"])
    assert bad["status"] == "diverged" and bad["eval"]["eval_loss"] is None
    assert "lane peak=10000.0: loss is" in capsys.readouterr().err
    text = report.report([str(tmp_path)], tmp_path / "report").read_text()
    assert "| 10000.0 | 1 | diverged | diverged | 1/1 |" in text
    assert "Best configuration (eval_loss, min of the mean over seeds): " in text
    assert "schedule.kwargs.peak=0.05" in text


def test_report_draws_a_sweep(eight_device_sweep, tmp_path):
    config, grid, workdir, record = eight_device_sweep
    path = report.report([str(workdir)], tmp_path)
    text = path.read_text()
    lanes = {lane["name"]: lane["eval"]["eval_loss"] for lane in record["lanes"]}
    for peak in (0.02, 0.05):
        values = [lanes[f"peak={peak},seed={s}"] for s in (0, 1)]
        mean, spread = np.mean(values), np.std(values, ddof=1)
        assert f"| {peak} | 2 |" in text
        assert f"{mean:.4g} ± {spread:.2g}" in text
    best = min((0.02, 0.05), key=lambda p: lanes[f"peak={p},seed=0"] + lanes[f"peak={p},seed=1"])
    assert f"schedule.kwargs.peak={best}:" in text
    assert (tmp_path / "sweep0_curves.png").stat().st_size > 0
    assert not (tmp_path / "sweep0_heatmap.png").exists()  # one swept key: no heat map


def test_report_heat_map_for_two_keys(tmp_path):
    record = {
        "mode": "vmap",
        "keys": ["schedule.kwargs.peak", "optimizer.kwargs.momentum"],
        "steps": 1,
        "lanes": [],
    }
    lane_dir = tmp_path / "lanes"
    config_text = json.dumps(quadratic_config().to_dict())
    for peak in (0.1, 0.01):
        for momentum in (0.5, 0.9):
            for seed in (0, 1):
                name = f"peak={peak},momentum={momentum},seed={seed}"
                value = peak * momentum + seed
                record["lanes"].append(
                    {
                        "name": name,
                        "overrides": {
                            "schedule.kwargs.peak": peak,
                            "optimizer.kwargs.momentum": momentum,
                            "seed": seed,
                        },
                        "seed": seed,
                        "status": "done",
                        "step": 1,
                        "eval": {"eval_loss": value},
                    }
                )
                (lane_dir / name).mkdir(parents=True)
                (lane_dir / name / "config.json").write_text(config_text)
                with metrics.Writer(lane_dir / name, tensorboard=False) as writer:
                    writer.write({"split": "train", "step": 1, "loss": value})
                    writer.write({"split": "eval", "step": 1, "eval_loss": value})
    (tmp_path / "sweep.json").write_text(json.dumps(record))
    (tmp_path / "config.json").write_text(config_text)
    text = report.report([str(tmp_path)], tmp_path / "out").read_text()
    assert "| 0.01 | 0.5 | 2 | 0.505 ± 0.71 | 0/2 |" in text
    assert "schedule.kwargs.peak=0.01, optimizer.kwargs.momentum=0.5: 0.505" in text
    assert (tmp_path / "out" / "sweep0_heatmap.png").stat().st_size > 0


def test_wsd_branch_of_a_sweep_branches_every_lane(tmp_path):
    config = quadratic_config(5)
    config.schedule.name = "warmup"
    grid = sweep.make_grid(config, PEAKS)
    sweep.run(config, tmp_path / "sweep", grid, "vmap")  # extended to the fork step below
    results = branch.run(None, str(tmp_path / "sweep"), at=[10], decay_fraction=0.2)
    child = tmp_path / "sweep" / "branches" / "at_10"
    assert json.loads((child / "sweep.json").read_text()) == results[str(child)]
    # Each lane equals its own single run branched the same way.
    lane = sweep.lane_config(config, "peak=0.02", grid["peak=0.02"])
    single = branch.run(lane, str(tmp_path / "single"), at=[10], decay_fraction=0.2)
    expected = single[str(tmp_path / "single" / "branches" / "at_10")]
    ours = {lane["name"]: lane for lane in results[str(child)]["lanes"]}["peak=0.02"]
    assert ours["step"] == expected["step"] == 12  # k + D, D = round(0.2 * 10 / 0.8)
    for key, value in expected["eval"].items():
        assert ours["eval"][key] == pytest.approx(value, rel=2e-5), key
    lineage = json.loads((child / "lanes" / "peak=0.02" / "lineage.json").read_text())
    assert lineage["parent"] == str((tmp_path / "sweep" / "lanes" / "peak=0.02").absolute())
    assert lineage["step"] == 10


def test_bad_input_says_what_to_change(tmp_path):
    config = quadratic_config()
    with pytest.raises(ValueError, match=r"schedule\.kwargs\.peek does not exist.*nearest: "):
        sweep.make_grid(config, [sweep.parse_sweep("schedule.kwargs.peek=1,2")])
    with pytest.raises(ValueError, match=r"nearest: schedule\.kwargs\.peak"):
        sweep.make_grid(config, [sweep.parse_sweep("schedule.kwargs.peek=1,2")])
    with pytest.raises(ValueError, match=r"nearest: optimizer\.kwargs\.momentum"):
        sweep.make_grid(config, [sweep.parse_sweep("optimizer.kwargs.momentun=1,2")])
    with pytest.raises(ValueError, match=r"stepz does not exist; nearest: steps"):
        sweep.make_grid(config, [sweep.parse_sweep("stepz=1,2")])
    with pytest.raises(ValueError, match=r"peak='abc' does not parse as float"):
        sweep.make_grid(config, [sweep.parse_sweep("schedule.kwargs.peak=0.1,abc")])
    with pytest.raises(ValueError, match=r"value '' of schedule\.kwargs\.peak does not parse"):
        sweep.parse_sweep("schedule.kwargs.peak=0.1,,0.2")
    with pytest.raises(ValueError, match=r"lane peak=-1: .*`peak` must be"):
        sweep.make_grid(config, [sweep.parse_sweep("schedule.kwargs.peak=0.1,-1")])
    with pytest.raises(ValueError, match="empty grid"):
        sweep.parse_sweep("schedule.kwargs.peak=")
    with pytest.raises(ValueError, match="empty grid"):
        sweep.make_grid(config, [], seeds=1)
    with pytest.raises(ValueError, match="--seeds must be >= 1"):
        sweep.make_grid(config, PEAKS, seeds=0)
    with pytest.raises(ValueError, match="lists a value twice"):
        sweep.parse_sweep("schedule.kwargs.peak=0.1,0.1")
    with pytest.raises(ValueError, match="do not also sweep them"):
        sweep.make_grid(config, [("seed", [0, 1])], seeds=2)
    assert sweep.parse_sweep("optimizer.kwargs.x=(1, 2),'a,b',3") == (
        "optimizer.kwargs.x",
        [(1, 2), "a,b", 3],
    )
    # A workdir that holds another sweep is refused before anything runs.
    (tmp_path / "sweep.json").write_text(
        json.dumps({"mode": "vmap", "lanes": [{"name": "peak=1", "overrides": {}}]})
    )
    with pytest.raises(ValueError, match="holds another sweep"):
        sweep.run(config, tmp_path, sweep.make_grid(config, PEAKS), "vmap")


def test_main_prints_the_lanes(tmp_path, capsys):
    holders = {
        "config": types.SimpleNamespace(value=quadratic_config(4)),
        "workdir": types.SimpleNamespace(value=str(tmp_path)),
        "sweep": types.SimpleNamespace(value=["optimizer.kwargs.momentum=0.5,0.9"]),
        "seeds": types.SimpleNamespace(value=1),
        "mode": types.SimpleNamespace(value="auto"),
    }
    sweep.main(["sweep"], holders)
    out = capsys.readouterr().out
    assert "momentum=0.5 | done | 4 |" in out and "momentum=0.9 | done | 4 |" in out
    assert f"sweep: {tmp_path / 'sweep.json'}" in out


def test_command_fails_in_one_line(tmp_path):
    command = [
        sys.executable,
        "-m",
        "experiments.sweep",
        "--config=experiments/configs/quadratic.py",
        f"--workdir={tmp_path}",
        "--sweep=schedule.kwargs.peek=1,2",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --sweep key schedule.kwargs.peek does not exist")
    assert "nearest: schedule.kwargs.peak" in last
    assert not (tmp_path / "sweep.json").exists()
