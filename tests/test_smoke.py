"""The `make demo` demo and the `make bench` benchmark run end to end at toy size (no timing)."""

import numpy as np
import pytest

import optlib.registry
from experiments import demo
from experiments.benchmarks import step_time


def test_benchmark_runs_at_toy_size(capsys):
    step_time.main(["--leaves", "2", "--leaf-size", "1000", "--rounds", "2"])
    out = capsys.readouterr().out
    for row in (
        "floor (x * c)",
        "adamw (optax)",
        "lamb (optlib)",
        "lamb (optax)",
        "lars (optlib)",
        "tvlars (optlib)",
    ):
        assert f"| {row} |" in out


def test_demo_covers_every_registered_optimizer(monkeypatch):
    seen = []
    monkeypatch.setattr(demo, "train_grid", lambda name, *a: seen.append(name) or ([1.0], [0.0]))
    demo.main(["--steps", "1"])
    assert sorted(set(seen)) == optlib.registry.names()
    assert set(demo.KWARGS) <= set(optlib.registry.names())


# One optimizer per way of driving it: plain, with the loss (MoMo), with a gradient function
# (SAM), evaluated elsewhere than it trains (schedule-free); the contract table covers all.
@pytest.mark.parametrize("name", ["lamb", "momo", "sam", "schedule_free_sgd"])
def test_demo_trains_on_a_workload(name):
    peaks, losses = demo.train_grid(name, demo.quadratic, steps=20)
    assert losses.shape == peaks.shape == (len(demo.LR_FACTORS),)
    initial = float(demo.quadratic()[1](demo.quadratic()[0]))
    assert np.nanmin(losses) < initial
