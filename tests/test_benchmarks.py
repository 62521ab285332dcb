"""The benchmarks run end to end at toy size (no timing assertions), and the AlgoPerf score."""

import json

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.benchmarks import step_time
from experiments.benchmarks import time_to_target as ttt

INF = float("inf")


def test_step_time_toy_layout_has_bound_and_state_columns():
    result = step_time.measure(num_leaves=3, leaf_size=1000, rounds=1, warmup=1)
    text = step_time.table(result)
    rows = [line for line in text.splitlines() if line.startswith("| ") and "(opt" in line]
    assert len(rows) >= len(step_time.PAIRS) + 1
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[3].isdigit(), line  # every optimizer row states its pass count
        assert float(cells[4]) > 0  # and its ratio to that bound
    # Every benchmarked optimizer has a lower bound with a reason.
    for name, *_ in step_time.PAIRS:
        passes, why = step_time.PASSES[name]
        assert passes >= 2 and why


def test_state_bytes_per_param_from_eval_shape():
    params = {"a": jnp.zeros((10, 3)), "b": jnp.zeros(5)}
    # mu and nu (4 bytes each per param) plus adam's int32 step count, over 35 params.
    adamw = step_time.state_bytes_per_param(optax.adamw(1e-3), params)
    assert adamw == pytest.approx(8.0 + 4.0 / 35.0)
    assert step_time.state_bytes_per_param(optax.sgd(1e-3), params) == 0.0


def test_step_time_cli_rejects_layout_with_custom_sizes():
    with pytest.raises(SystemExit):
        step_time.main(["--layout", "one", "--leaves", "2"])


def test_profile_score_on_a_hand_made_table():
    costs = {
        "always_best": {"a": 10.0, "b": 5.0, "c": 7.0},
        "never": {"a": INF, "b": INF, "c": INF},
        "twice": {"a": 20.0, "b": 10.0, "c": 14.0},
        "one_of_three": {"a": 10.0, "b": INF, "c": INF},
    }
    scores = ttt.profile_scores(costs)
    assert scores["always_best"] == pytest.approx(1.0)
    assert scores["never"] == 0.0
    # Solves everything at exactly 2x the best: rho = 1 for tau >= 2, so (4 - 2) / 3.
    assert scores["twice"] == pytest.approx(2.0 / 3.0, abs=2e-3)
    assert scores["one_of_three"] == pytest.approx(1.0 / 3.0)
    taus = np.array([1.0, 1.5, 2.0, 4.0])
    profiles = ttt.performance_profiles(costs, taus)
    np.testing.assert_allclose(profiles["twice"], [0.0, 0.0, 1.0, 1.0])
    # A workload nobody solves stays in the denominator.
    costs["always_best"]["d"] = INF
    assert ttt.profile_scores(costs)["always_best"] == pytest.approx(0.75)


def test_search_space_is_a_fixed_shared_draw():
    draw = ttt.search_space()
    np.testing.assert_array_equal(draw, ttt.search_space())
    assert draw.shape == (ttt.NUM_TUNED, 3)
    assert np.all((draw[:, 0] >= 0.1) & (draw[:, 0] <= 10.0))
    assert np.all((draw[:, 1] == 0.0) | ((draw[:, 1] >= 1e-4) & (draw[:, 1] <= 0.1)))
    assert np.all((draw[:, 2] >= 0.0) & (draw[:, 2] <= 0.1))
    assert {"adamw+cosine", "sgd_momentum+linear_decay", "adamw+wsd"} <= set(ttt.METHODS)


def _targets(value):
    return {"version": 1, "workloads": {"quadratic": {"value": value}}}


def test_time_to_target_counts_gradient_evaluations():
    methods = ttt.select_methods(["adamw+cosine", "sam+cosine"])
    kwargs = dict(num_seeds=3, budget_scale=0.05, log=lambda _: None)
    # A target every run meets at its first evaluation: the cost is one eval interval of steps,
    # twice that in gradient evaluations for SAM.
    easy = ttt.run(["quadratic"], methods, targets=_targets(1e12), **kwargs)
    every = ttt.EVAL_EVERY["quadratic"]
    assert easy["adamw+cosine"] == {"tuned": {"quadratic": every}, "self": {"quadratic": every}}
    assert easy["sam+cosine"]["tuned"]["quadratic"] == 2 * every
    # A target nobody meets (eval_loss >= 0): infinite cost, score 0.
    hard = ttt.run(["quadratic"], methods, targets=_targets(-1.0), **kwargs)
    assert hard["adamw+cosine"]["tuned"]["quadratic"] == INF
    assert ttt.profile_scores({m: r["self"] for m, r in hard.items()}) == {
        "adamw+cosine": 0.0,
        "sam+cosine": 0.0,
    }


def test_sequential_lanes_stop_once_done(monkeypatch):
    # The lax.map + lax.cond path (used for the CNN and the LM) gives the same costs, and a lane
    # that has reached the target stops (its later metrics are NaN, not recomputed).
    monkeypatch.setattr(ttt.runner, "SEQUENTIAL_LANES", frozenset({"quadratic"}))
    method = ttt.METHODS["adamw+cosine"]
    problem = ttt.Problem("quadratic", 1, 100, {"value": 1e12})
    lanes = ttt.make_lanes(method, 1, 50, ("tuned", "self"))
    result = ttt.run_method(method, problem, lanes, eval_every=25)
    np.testing.assert_array_equal(result["steps"], np.full(len(lanes.seed_index), 25.0))
    assert result["last_step"] == 25


def test_time_to_target_cli_sets_targets_then_scores(tmp_path, capsys):
    targets = tmp_path / "targets.json"
    common = ["--workloads", "quadratic", "--budget-scale", "0.05", "--targets", str(targets)]
    ttt.main([*common, "--set-targets"])
    frozen = json.loads(targets.read_text())["workloads"]["quadratic"]
    assert frozen["metric"] == "eval_loss" and frozen["value"] == np.median(frozen["per_seed_best"])
    out_md, out_png = tmp_path / "t.md", tmp_path / "p.png"
    ttt.main(
        [
            *common,
            "--optimizers",
            "adamw+cosine",
            "dog",
            "--markdown",
            str(out_md),
            "--plot",
            str(out_png),
        ]
    )
    text = out_md.read_text()
    assert "| method | quadratic | score |" in text
    assert "| adamw+cosine |" in text and "| dog |" in text
    scores = [float(line.rsplit("|", 2)[1]) for line in text.splitlines() if line.startswith("| a")]
    assert all(0.0 <= s <= 1.0 for s in scores)
    pytest.importorskip("matplotlib")
    assert out_png.stat().st_size > 1000
    capsys.readouterr()


def test_unknown_method_is_rejected():
    with pytest.raises(ValueError, match="unknown method"):
        ttt.select_methods(["adamx"])


def test_self_tuning_lr_methods_run_and_autolrs_pays_for_its_trials(monkeypatch):
    # Hypergradient descent (plain and safeguarded) runs in the vmapped lanes; AutoLRS lane by
    # lane on the training loop, with tiny stages: tau 10 -> 20, tau' 5 -> 10, 2 trials each.
    monkeypatch.setattr(
        ttt.runner,
        "AUTOLRS_STAGES",
        {"tau": 10, "tau_prime": 5, "num_candidates": 2, "tau_max": 40},
    )
    assert {m.name for m in ttt.select_methods(["sgd_hd", "adam_hd", "autolrs"])} == {
        "sgd_hd",
        "sgd_hd-safeguard",
        "adam_hd",
        "adam_hd-safeguard",
        "sgd_momentum+autolrs",
        "adamw+autolrs",
    }
    methods = [ttt.METHODS[n] for n in ("sgd_hd-safeguard", "adam_hd", "sgd_momentum+autolrs")]
    kwargs = dict(num_seeds=1, budget_scale=0.05, tracks=("self",), log=lambda _: None)
    result = ttt.run(["quadratic"], methods, targets=_targets(1e12), **kwargs)
    every = ttt.EVAL_EVERY["quadratic"]
    assert result["sgd_hd-safeguard"]["self"]["quadratic"] == every
    assert result["adam_hd"]["self"]["quadratic"] == every
    # The first evaluation is at main step 25: stage 0 costs 2 x 5 trial + 10 main steps;
    # stage 1 2 x 10 trial steps, then main steps 11..25: 20 + 20 + 15 gradient evaluations.
    assert result["sgd_momentum+autolrs"]["self"]["quadratic"] == 55
