"""experiments.batch_size: learning-rate rules, steps to target, bad input, and a tiny study
through the training loop (runs reused when the study is run again)."""

from __future__ import annotations

import math

import ml_collections
import pytest

from experiments import batch_size
from experiments.configs import batch_size as batch_size_config
from experiments.workloads.base import Target
from tests.test_experiments import quadratic_config


def test_learning_rate_rules():
    study = batch_size_config.get_config()
    study.reference_batch = 64
    study.rule = "linear"
    assert batch_size.learning_rates(study, 0.1, 256) == [pytest.approx(0.4)]
    study.rule = "sqrt"
    assert batch_size.learning_rates(study, 0.1, 256) == [pytest.approx(0.2)]
    study.rule = "tuned"
    study.grid = [0.5, 1.0, 2.0]
    assert batch_size.learning_rates(study, 0.1, 16) == pytest.approx([0.025, 0.05, 0.1])


def test_steps_to_target_interpolates_between_evaluations():
    target = Target("eval_accuracy", 0.9, "max")
    records = [
        {"split": "eval", "step": 10, "eval_accuracy": 0.5},
        {"split": "train", "step": 10, "loss": 1.0},
        {"split": "eval", "step": 20, "eval_accuracy": 0.8},
        {"split": "eval", "step": 30, "eval_accuracy": 0.95},
    ]
    assert batch_size.steps_to_target(records, target) == pytest.approx(20 + 10 * 0.1 / 0.15)
    assert batch_size.steps_to_target(records[:3], target) is None
    assert batch_size.steps_to_target(records[3:], target) == 30  # reached at the first one
    loss_target = Target("eval_loss", 1.0, "min")
    losses = [{"split": "eval", "step": s, "eval_loss": v} for s, v in ((5, 3.0), (10, 0.5))]
    assert batch_size.steps_to_target(losses, loss_target) == pytest.approx(5 + 5 * 2.0 / 2.5)


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("batch_sizes", [32, 48, 64], "powers of two"),
        ("batch_sizes", [32, 64], "at least three"),
        ("rule", "cubic", "rule must be one of"),
        ("grid", [0.5, -1.0], "grid must be positive"),
        ("max_steps", 0, "max_steps must be an int >= 1"),
    ],
)
def test_bad_study_config(tmp_path, key, value, match):
    study = batch_size_config.get_config()
    study[key] = value
    with pytest.raises(ValueError, match=match):
        batch_size.run_study(study, tmp_path)
    assert not (tmp_path / "adamw").exists()


def tiny_study() -> ml_collections.ConfigDict:
    """SGD on the quadratic at batch sizes 8, 16, 32 (the noise scale from the 8 simulated
    devices' data shards), to a loose target."""
    study = batch_size_config.get_config()
    experiment = quadratic_config(steps=10)
    experiment.workload.target_loss = 1.0
    experiment.schedule.name = "warmup"
    experiment.schedule.kwargs = {"peak": 0.0, "warmup_steps": 0}  # both set per run
    experiment.probes.noise_scale = True
    study.experiment = experiment
    study.batch_sizes = [8, 16, 32]
    study.reference_batch = 32
    study.rule = "sqrt"
    study.max_steps = 400
    study.eval_examples = 160
    study.warmup_examples = 0
    study.optimizers = ml_collections.ConfigDict(
        {"sgd": {"lr": 0.2, "warmup": True, "kwargs": {"momentum": 0.9}}}
    )
    return study


def test_a_tiny_study_through_the_loop(tmp_path):
    result = batch_size.run_study(tiny_study(), tmp_path, log=lambda *a, **k: None)
    rows = result["rows"]
    assert [r["batch_size"] for r in rows] == [8, 16, 32]
    assert [r["lr"] for r in rows] == pytest.approx([0.1, 0.2 / math.sqrt(2), 0.2])
    for row in rows:
        assert row["steps"] is not None and row["examples"] == row["steps"] * row["batch_size"]
        assert row["steps"] <= row["steps_run"] < 400  # stopped at the target
        assert math.isfinite(row["noise_scale"])
        assert row["best"]
    # Smaller batches with smaller learning rates need more steps.
    assert rows[0]["steps"] > rows[1]["steps"] > rows[2]["steps"]
    paths = batch_size.write_outputs(result, tmp_path)
    text = paths["tables"].read_text()
    assert "| sgd | 8 | 0.1 |" in text
    fit = result["fits"]["sgd"]  # a fit, or the reason there is none, in the table either way
    assert ("b_crit" in fit) != ("error" in fit)
    assert fit["noise_scale"] == pytest.approx(sorted(r["noise_scale"] for r in rows)[1])
    assert paths["figure"].exists()

    run_dir = tmp_path / "sgd" / "b8_lr0.1"
    mtime = (run_dir / "metrics.jsonl").stat().st_mtime
    again = batch_size.run_study(tiny_study(), tmp_path, log=lambda *a, **k: None)
    assert again["rows"] == rows  # reused, not run again
    assert (run_dir / "metrics.jsonl").stat().st_mtime == mtime
