"""The `make run` demo and the `make bench` benchmark run end to end at toy size (no timing)."""

import numpy as np

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


def test_demo_trains_every_optimizer_on_a_workload():
    for factory in demo.OPTIMIZERS.values():
        losses = demo.train_grid(factory, demo.quadratic, steps=20)
        assert losses.shape == (len(demo.LEARNING_RATES),)
        initial = float(demo.quadratic()[1](demo.quadratic()[0]))
        assert np.nanmin(losses) < initial
