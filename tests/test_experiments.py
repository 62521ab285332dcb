"""The training loop on 8 simulated devices: sharding, checkpoints, resume, forks, bad input."""

from __future__ import annotations

import importlib
import json
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

import optlib.registry
from experiments import branch, checkpointing, metrics, sharding, train, workloads
from experiments.configs import common


def quadratic_config(steps=20, **overrides):
    config = common.base_config("quadratic")
    config.steps = steps
    config.log_every = 5
    config.eval_every = 10
    config.checkpoint.every = 10
    config.progress_bar = False
    config.schedule.kwargs.peak = 0.05
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for name in parents:
            node = node[name]
        node[leaf] = value
    return config


def mlp_config(steps=6, **overrides):
    # SGD: its update is linear in the gradient, so reduction-order rounding stays at float32
    # level (Adam's first steps are ~lr * sign(g) and amplify it where g is near 0).
    config = quadratic_config(steps, **overrides)
    config.workload = workloads.default_config("mlp_digits")
    config.workload.batch_size = 32
    config.optimizer.name = "sgd"
    config.optimizer.kwargs = {"momentum": 0.9}
    return config


def leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_sharded_equals_single_device(tmp_path):
    single = train.train(
        mlp_config(), tmp_path / "one", devices=jax.devices()[:1], return_state=True
    )
    config = mlp_config()
    config.mesh.data, config.mesh.fsdp = 2, 4
    sharded = train.train(config, tmp_path / "eight", return_state=True)
    for a, b in zip(leaves(single["state"]), leaves(sharded["state"]), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    assert single["eval"]["eval_loss"] == pytest.approx(sharded["eval"]["eval_loss"], rel=1e-5)


def test_state_is_sharded_as_configured(tmp_path):
    config = mlp_config(steps=2)
    config.mesh.data, config.mesh.fsdp = 2, 4
    state = train.train(config, tmp_path, return_state=True)["state"]
    mesh = sharding.make_mesh({"data": 2, "fsdp": 4})
    for tree in (state["params"], state["opt_state"]):
        for leaf in jax.tree.leaves(tree):
            expected = sharding.fsdp_spec(leaf.shape, 4)
            assert leaf.sharding.is_equivalent_to(
                jax.sharding.NamedSharding(mesh, expected), leaf.ndim
            ), (leaf.shape, leaf.sharding)
    # The rule splits at least one leaf: FSDP is actually exercised.
    assert any(
        "fsdp" in str(sharding.fsdp_spec(x.shape, 4)) for x in jax.tree.leaves(state["params"])
    )


def test_kill_and_resume_is_bitwise_identical(tmp_path):
    uninterrupted = train.train(quadratic_config(30), tmp_path / "whole", return_state=True)
    train.train(quadratic_config(30), tmp_path / "killed", stop_after=25)
    assert checkpointing.Checkpointer(tmp_path / "killed").latest_step() == 20
    resumed = train.train(quadratic_config(30), tmp_path / "killed", return_state=True)
    assert resumed["origin"] == {"kind": "resume", "step": 20}
    for a, b in zip(leaves(uninterrupted["state"]), leaves(resumed["state"]), strict=True):
        np.testing.assert_array_equal(a, b)
    # Logs: every logged step once (the repeat after the crash replaces the first), with the
    # norms and the learning rate applied; TensorBoard events next to them.
    records = metrics.read_metrics(tmp_path / "killed")
    train_steps = [r["step"] for r in records if r["split"] == "train"]
    assert train_steps == [5, 10, 15, 20, 25, 30]  # updates applied, as eval records count
    assert {"loss", "grad_norm", "update_norm", "param_norm", "lr"} <= set(records[0])
    assert list((tmp_path / "killed" / "tb").glob("events.out.tfevents.*"))


def stable_config(steps=40):
    config = quadratic_config(steps)
    config.schedule.name = "warmup"
    config.schedule.kwargs = {"peak": 0.05, "warmup_steps": 5}
    return config


def test_fork_continues_the_parent_exactly(tmp_path):
    parent = tmp_path / "main"
    results = branch.run(stable_config(), str(parent), at=[15, 25], decay_fraction=0.2)
    branches = [str(parent / "branches" / f"at_{k}") for k in (15, 25)]
    assert list(results) == [str(parent), *branches]
    parent_ckpt = checkpointing.Checkpointer(parent, read_only=True)
    assert {15, 25} <= set(parent_ckpt.steps())  # fork points are kept

    child_dir = parent / "branches" / "at_15"
    decay = branch.decay_steps_for(15, 0.2)
    assert decay == 4  # 20% of the branch's 19 steps
    lineage = json.loads((child_dir / "lineage.json").read_text())
    assert lineage["step"] == 15 and lineage["parent"] == str(parent.absolute())
    assert lineage["config_diff"]["schedule.branch.at_step"] == [-1, 15]
    assert lineage["config_diff"]["steps"] == [25, 15 + decay]
    assert results[branches[0]]["step"] == 15 + decay

    # The branch starts from the parent's state at step 15, bit for bit.
    child_config = json.loads((child_dir / "config.json").read_text())
    probe = train.train(
        branch.load_config(child_dir) if child_config else None,
        tmp_path / "probe",
        stop_after=15,
        return_state=True,
    )
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), probe["state"])
    at_fork = parent_ckpt.restore(15, abstract)
    assert int(probe["state"]["step"]) == 15
    for a, b in zip(leaves(at_fork), leaves(probe["state"]), strict=True):
        np.testing.assert_array_equal(a, b)

    # The learning rate is continuous at the fork and reaches the end value.
    base = train.build_schedule(stable_config())
    decayed = train.build_schedule(branch.load_config(child_dir))
    assert float(decayed(14)) == float(base(14))
    assert float(decayed(15)) == pytest.approx(float(base(15)))
    assert float(decayed(15 + decay)) == 0.0
    lrs = [r["lr"] for r in metrics.read_metrics(child_dir) if r["split"] == "train"]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < base(15)


def test_fork_onto_another_mesh(tmp_path):
    parent = tmp_path / "main"
    config = stable_config(20)
    config.workload = mlp_config().workload
    config.checkpoint.keep_steps = [10]
    train.train(config, parent)
    child = branch.branch_config(config, str(parent), 10, 0.5, "linear", 0.0)
    child.mesh.data, child.mesh.fsdp = 2, 4
    result = train.train(child, tmp_path / "child", return_state=True)
    assert result["origin"]["kind"] == "fork" and result["step"] == 20
    w = result["state"]["params"]
    assert any("fsdp" in str(x.sharding.spec) for x in jax.tree.leaves(w))


def test_wsd_s_mode_decays_in_place(tmp_path):
    results = branch.run(stable_config(), str(tmp_path / "s"), at=[20, 40], mode="wsd-s")
    assert list(results) == [str(tmp_path / "s")]
    lrs = {
        r["step"]: r["lr"] for r in metrics.read_metrics(tmp_path / "s") if r["split"] == "train"
    }
    assert lrs[20] < 0.05 * 0.5 and lrs[25] == pytest.approx(0.05)  # decayed, then back at peak


def test_nan_loss_stops_with_the_step(tmp_path):
    config = quadratic_config(40)
    config.optimizer.name = "sgd"
    config.optimizer.kwargs = {}
    config.schedule.kwargs.peak = 1e4
    with pytest.raises(train.NonFiniteLossError, match=r"at step \d+.*Last good checkpoint"):
        train.train(config, tmp_path)


# Smaller instances of the heavier workloads, for tests of the loop rather than the workload.
SMALL = {
    "lm": {"d_model": 32, "num_heads": 2, "context": 16, "batch_size": 16, "eval_windows": 16},
    "cnn_mnist1d": {"num_samples": 1000, "channels": 8, "batch_size": 32},
}


def test_every_workload_runs_a_few_sharded_steps(tmp_path):
    # A 2 x 2 mesh (batch split over both axes, params over fsdp): every kind of split, at a
    # quarter of the 8-device compile and run time on a 2-core CPU.
    for name in workloads.names():
        config = quadratic_config(2, **{"mesh.data": 2, "mesh.fsdp": 2})
        config.workload = workloads.default_config(name)
        config.workload.update(SMALL.get(name, {}))
        config.eval_every = 2
        result = train.train(config, tmp_path / name, devices=jax.devices()[:4])
        assert result["step"] == 2 and np.isfinite(result["eval"]["eval_loss"]), name


def test_bad_input(tmp_path):
    config = quadratic_config(4)
    config.optimizer.name = "adamw_typo"
    with pytest.raises(ValueError, match="unknown optimizer 'adamw_typo'.*lamb"):
        train.train(config, tmp_path / "a")
    config = quadratic_config(4)
    config.schedule.name = "cosinus"
    with pytest.raises(ValueError, match="unknown schedule 'cosinus'.*wsd"):
        train.train(config, tmp_path / "b")

    train.train(quadratic_config(4), tmp_path / "c")
    other = quadratic_config(4)
    other.optimizer.kwargs.weight_decay = 0.1
    with pytest.raises(ValueError, match="(?s)another run's config.*optimizer.kwargs.weight_decay"):
        train.train(other, tmp_path / "c")

    fork = quadratic_config(8, **{"fork.parent": str(tmp_path / "c"), "fork.step": 3})
    with pytest.raises(ValueError, match=r"no checkpoint at step 3; it has steps \[4\]"):
        train.train(fork, tmp_path / "d")

    config = quadratic_config(4)
    config.mesh.data, config.mesh.fsdp = 3, -1
    with pytest.raises(ValueError, match="does not divide the 8 devices"):
        train.train(config, tmp_path / "e")
    with pytest.raises(ValueError, match="stable learning rate"):
        branch.run(quadratic_config(10), str(tmp_path / "f"), at=[5])


def test_override_of_a_missing_key_is_an_error(tmp_path):
    command = [
        sys.executable,
        "-m",
        "experiments.main",
        "--config=experiments/configs/quadratic.py",
        f"--workdir={tmp_path}",
        "--config.optimizer.nmae=lamb",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "nmae" in result.stderr


@pytest.mark.parametrize("name", optlib.registry.names())
def test_every_registered_optimizer_trains_in_the_loop(tmp_path, name):
    config = quadratic_config(3)
    config.optimizer.name = name
    config.optimizer.kwargs = {}
    config.eval_every = 3
    result = train.train(config, tmp_path)
    assert result["step"] == 3 and np.isfinite(result["eval"]["eval_loss"])


def test_study_runs_at_toy_size(tmp_path):
    from experiments import study

    # The study's plumbing on the quadratic (compiling the LM six times would dominate).
    tiny = {
        "workload": workloads.default_config("quadratic"),
        "eval_every": 2,  # enough eval points to fit the seven-parameter law on
        "checkpoint.every": 10,
    }
    result = study.run_study(tmp_path, [10, 20], progress_bar=False, overrides=tiny)
    assert [row["budget"] for row in result["rows"]] == [10, 20]
    assert [row["wsd_steps"] for row in result["rows"]] == [10, 20]
    assert result["totals"] == {"cosine": 30, "wsd": 16 + 2 + 4}
    text = study.comparison_table(result)
    assert "| 10 |" in text and "73% of the cosine runs" in text
    assert result["report"].exists()
    assert "decay@8" in result["report"].read_text()
    # The laws, fitted on the WSD main branch + cosine_20 only, predict both WSD branches.
    prediction = result["prediction"]
    assert prediction["laws"]["multipower"]["fitted_on"] == ["wsd", "cosine_20"]
    branches = {r["schedule"]: r for r in prediction["rows"] if r["fork_step"] is not None}
    assert sorted(branches) == ["wsd/at_16", "wsd/at_8"]
    measured = {row["budget"]: row["wsd"] for row in result["rows"]}
    assert branches["wsd/at_8"]["measured"] == pytest.approx(measured[10])
    for row in branches.values():
        assert not row["in_fit"] and set(row["predicted"]) == {"multipower", "annealing"}
    assert "| wsd/at_8 |" in text and "on the WSD branches" in text
    assert (tmp_path / "report" / "predict.png").exists()
    failed = study.prediction_table({"error": "fit: no start converged"})
    assert "no prediction (fit: no start converged)" in failed
    # Every run exists now: a second call reuses them and reports the same numbers.
    again = study.run_study(tmp_path, [10, 20], progress_bar=False, overrides=tiny, laws=())
    assert again["rows"] == result["rows"] and again["totals"] == result["totals"]


CONFIG_DIR = pathlib.Path(__file__).parent.parent / "experiments" / "configs"
# batch_size.py configures a study of many runs (`experiments.batch_size`), not one run.
TRAIN_CONFIGS = sorted(
    p.stem for p in CONFIG_DIR.glob("*.py") if p.stem not in ("__init__", "common", "batch_size")
)


@pytest.mark.parametrize("name", TRAIN_CONFIGS)
def test_every_config_builds_and_documents_its_command(name):
    module = importlib.import_module(f"experiments.configs.{name}")
    assert f"--config=experiments/configs/{name}.py" in module.__doc__
    assert "Runtime:" in module.__doc__ and "Expected:" in module.__doc__
    config = module.get_config()
    # Every key of the base config is there (kwargs are the optimizer's/schedule's own).
    keys = set(common.flatten(common.base_config(config.workload.name)))
    keys = {k for k in keys if not k.startswith(("optimizer.kwargs.", "schedule.kwargs."))}
    assert keys <= set(common.flatten(config))
    program = train.build(config)  # names, kwargs, mesh and batch size are all valid
    assert program.workload.name == config.workload.name
