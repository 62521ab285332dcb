"""AutoLRS (experiments/autolrs.py): forecasting, the Bayesian optimiser, one stage on the loop."""

import math

import chex
import jax
import numpy as np
import pytest

from experiments import autolrs, checkpointing, train
from experiments.configs import common


@pytest.mark.parametrize(
    "a, b, c, start, n",
    [(2.5, 0.3, 0.7, 0, 10), (-1.5, 0.01, 3.0, 50, 40), (0.8, 0.05, -0.2, 0, 80)],
)
def test_fit_exponential_recovers_a_noiseless_curve(a, b, c, start, n):
    x = np.arange(start, start + n, dtype=np.float64)
    fitted = autolrs.fit_exponential(x, a * np.exp(-b * x) + c)
    np.testing.assert_allclose(fitted, (a, b, c), rtol=0, atol=1e-6)


def test_forecast_extrapolates_a_clean_curve_and_rejects_divergence():
    losses = 2.5 * np.exp(-0.03 * np.arange(40)) + 0.7
    assert autolrs.forecast(losses, 400) == pytest.approx(0.7 + 2.5 * math.exp(-12), abs=1e-5)
    # An outlier in the first half (a spike after a restore) is ignored by the denoising.
    spiked = losses.copy()
    spiked[5] += 1.0
    assert autolrs.forecast(spiked, 400) == pytest.approx(0.7, abs=0.02)
    assert autolrs.forecast(np.append(losses[:10], np.nan), 400) == math.inf
    assert autolrs.forecast(losses[:4], 400) == math.inf  # too few losses to fit


def test_lcb_search_stays_in_range_never_repeats_and_finds_a_minimum():
    objective = lambda lr: (math.log10(lr) + 1.3) ** 2  # minimum at lr = 10**-1.3
    search = autolrs.LcbSearch(0.01, 1.0, kappa=2.0)
    tried = []
    for _ in range(8):
        lr = search.ask()
        search.tell(objective(lr))
        tried.append(lr)
    assert tried[0] == pytest.approx(0.1)  # the geometric centre first
    assert len(set(tried)) == len(tried) and all(0.01 <= lr <= 1.0 for lr in tried)
    assert min(abs(math.log10(lr) + 1.3) for lr in tried) < 0.05
    # The authors' kappa = 1e6 explores: the range's ends come right after the centre.
    search = autolrs.LcbSearch(0.01, 1.0, kappa=1e6)
    explored = []
    for _ in range(3):
        explored.append(search.ask())
        search.tell(objective(explored[-1]))
    assert sorted(explored) == pytest.approx([0.01, 0.1, 1.0])


def test_stages_double_up_to_the_cap_and_bad_settings_name_the_argument():
    settings = autolrs.Settings(0.01, 1.0, tau=100, tau_prime=10, tau_max=800)
    lengths = [autolrs.stage_lengths(settings, s) for s in range(5)]
    assert lengths == [(100, 10), (200, 20), (400, 40), (800, 80), (800, 80)]
    for kwargs, name in [
        ({"tau": 0}, "tau"),
        ({"tau": -5}, "tau"),
        ({"tau_prime": 0}, "tau_prime"),
        ({"tau_prime": -1}, "tau_prime"),
        ({"tau_prime": 3}, "tau_prime"),
        ({"tau": 10, "tau_prime": 20}, "tau_prime"),
        ({"tau_max": 50}, "tau_max"),
        ({"max_lr": 0.001}, "max_lr"),
    ]:
        args = {"min_lr": 0.01, "max_lr": 1.0, **kwargs}
        with pytest.raises(ValueError, match=name):
            autolrs.Settings(**args)


def _quadratic_config(steps):
    config = common.base_config("quadratic")
    config.optimizer.name = "sgd_momentum"
    config.optimizer.kwargs = {}
    config.schedule.name = "constant"
    config.schedule.kwargs = {"value": 0.05}
    config.steps = steps
    config.progress_bar = False
    return config


def test_learning_rate_in_state_matches_the_schedule():
    config = _quadratic_config(3)
    devices = jax.devices()[:1]
    plain = train.build(config, devices)
    held = train.build(config, devices, learning_rate_in_state=True)
    a, b = plain.init(None), autolrs.with_learning_rate(held.init(None), 0.05)
    for step in range(3):
        batch = plain.workload.batch(step)
        a, metrics_a = plain.step_fn(a, batch)
        b, metrics_b = held.step_fn(b, batch)
        assert float(metrics_b["lr"]) == pytest.approx(0.05)
    chex.assert_trees_all_close(a["params"], b["params"], rtol=1e-6)


def test_one_stage_on_the_quadratic_picks_the_best_forecast(tmp_path):
    config = _quadratic_config(20)
    program = train.build(config, jax.devices()[:1], learning_rate_in_state=True)
    settings = autolrs.Settings(0.005, 0.5, tau=20, tau_prime=5, num_candidates=3, tau_max=20)
    checkpointer = checkpointing.Checkpointer(tmp_path, every=10**9, keep=1)
    try:
        trainer = autolrs.Trainer(program, checkpointer)
        state, record = autolrs.run_stage(trainer, program.init(None), settings, stage=0)
        forecasts = [t["forecast"] for t in record.trials]
        assert len(record.trials) == 3 and len({t["lr"] for t in record.trials}) == 3
        assert all(np.isfinite(forecasts))
        assert record.chosen_lr == record.trials[int(np.argmin(forecasts))]["lr"]
        # The main trajectory trained tau steps at the chosen rate from the checkpoint, and
        # every trial step was charged.
        assert int(state["step"]) == 20 and record.steps_trained == 20
        assert float(state["opt_state"].hyperparams["learning_rate"]) == pytest.approx(
            record.chosen_lr, rel=1e-6
        )
        assert trainer.spent == record.spent_after == 3 * 5 + 20
        # Each trial started from the restored stage start: replaying the chosen one agrees.
        chosen = next(t for t in record.trials if t["lr"] == record.chosen_lr)
        _, losses = trainer.train(trainer.restore(0), record.chosen_lr, 5, explore=True)
        assert losses[-1] == pytest.approx(chosen["last_loss"], rel=1e-6)
    finally:
        checkpointer.close()


def test_a_budget_stops_a_stage_during_its_trials(tmp_path):
    config = _quadratic_config(20)
    program = train.build(config, jax.devices()[:1], learning_rate_in_state=True)
    settings = autolrs.Settings(0.005, 0.5, tau=20, tau_prime=5, num_candidates=3, tau_max=20)
    checkpointer = checkpointing.Checkpointer(tmp_path, every=10**9, keep=1)
    try:
        trainer = autolrs.Trainer(program, checkpointer, budget=12)
        state, records = autolrs.run(trainer, program.init(None), settings, max_steps=20)
        assert trainer.stopped == "budget" and trainer.spent == 12
        assert int(state["step"]) == 0 and records[0].chosen_lr is None
    finally:
        checkpointer.close()
