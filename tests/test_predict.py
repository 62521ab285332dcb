"""experiments.predict: reading runs for the loss laws, fitting, ranking candidates, bad input.

Two kinds of runs: a few tiny quadratic runs trained by the loop (the step conventions of real
logs), and synthetic run directories whose eval losses are a known law's values on their own
schedule (so a fit must find the law back and predict the held-out branches exactly).
"""

from __future__ import annotations

import json
import math
import pathlib

import jax
import numpy as np
import pytest

import schedules
from experiments import branch, metrics, predict, rundir, train
from experiments.configs import common
from schedules import laws

PEAK, WARMUP = 0.05, 5


def _config(steps: int, schedule: str = "cosine", **kwargs):
    config = common.base_config("quadratic")
    config.steps = steps
    config.log_every = 5
    config.eval_every = 10
    config.checkpoint.every = 1000
    config.progress_bar = False
    config.schedule.name = schedule
    config.schedule.kwargs = {"peak": PEAK, "warmup_steps": WARMUP, **kwargs}
    return config


# ----------------------------------------------------------------------------------------
# Real runs: the loop's logs
# ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A WSD main branch (to 20) with a 1-sqrt decay branched at 20, and a 40-step cosine run."""
    root = tmp_path_factory.mktemp("trained")
    branch.run(_config(30, "warmup"), str(root / "wsd"), at=[20], decay_fraction=0.5)
    train.train(_config(40), root / "cosine")
    return root


def test_read_run_follows_the_step_conventions(trained):
    run = predict.read_run(trained / "wsd" / "branches" / "at_20", "b")
    assert run.fork_step == 20 and run.total_steps == 40
    # The parent's eval records up to the fork, then the branch's own.
    assert run.steps.tolist() == [10, 20, 30, 40]
    parent = {
        r["step"]: r["eval_loss"]
        for r in metrics.read_metrics(trained / "wsd")
        if r["split"] == "eval"
    }
    assert run.losses[:2].tolist() == [parent[10], parent[20]]
    assert run.final_loss == run.losses[-1]
    # lrs[k] is the rate of update k: the train record of step s logged lrs[s - 1].
    schedule = train.build_schedule(branch.load_config(trained / "wsd" / "branches" / "at_20"))
    np.testing.assert_allclose(run.lrs, [float(schedule(k)) for k in range(40)], rtol=1e-6)
    logged = {
        r["step"]: r["lr"]
        for r in metrics.read_metrics(trained / "wsd" / "branches" / "at_20")
        if r["split"] == "train"
    }
    assert logged  # the branch's own train records: steps 25, 30, 35, 40
    for s, lr in logged.items():
        assert lr == pytest.approx(run.lrs[s - 1], rel=1e-6)
        assert lr != pytest.approx(run.lrs[s], rel=1e-3) if s < 40 else True  # not lrs[s]


def test_predict_on_trained_runs_writes_a_ranked_table_and_a_figure(trained, tmp_path):
    result = predict.predict(
        fit=[trained / "wsd", trained / "cosine"],
        measured=[trained],
        kinds=["annealing"],
        fractions=[0.2, 0.5],
        shapes=["linear"],
        budgets=[40],
        schedules_=["linear_decay", "rex:alpha=0.5"],
        decays=(0.99,),
        fit_options={"annealing": {"grid": {"L0": [0.0, 0.1], "A": [1.0], "C": [1.0]}}},
        out=tmp_path,
    )
    rows = result["rows"]
    names = [r["schedule"] for r in rows]
    assert {"wsd", "wsd/at_20", "cosine"} <= set(names)
    assert {"wsd linear f=0.2 T=40", "linear_decay T=40", "rex:alpha=0.5 T=40"} <= set(names)
    predicted = [r["predicted"]["annealing"] for r in rows]
    assert predicted == sorted(predicted)  # ranked
    by_name = {r["schedule"]: r for r in rows}
    assert by_name["wsd"]["in_fit"] and not by_name["wsd/at_20"]["in_fit"]
    held_out = by_name["wsd/at_20"]
    measured = predict.read_run(trained / "wsd" / "branches" / "at_20").final_loss
    assert held_out["measured"] == measured
    assert held_out["error"]["annealing"] == pytest.approx(
        (held_out["predicted"]["annealing"] - measured) / measured
    )
    text = (tmp_path / "predict.md").read_text()
    assert "| 1 |" in text and "wsd/at_20" in text and "(fit)" in text
    assert (tmp_path / "predict.png").stat().st_size > 0
    saved = json.loads((tmp_path / "predict.json").read_text())
    assert saved["laws"]["annealing"]["fitted_on"] == ["wsd", "cosine"]


# ----------------------------------------------------------------------------------------
# Synthetic runs: losses of a known law
# ----------------------------------------------------------------------------------------


TRUTH = laws.AnnealingLaw(L0=0.8, A=0.3, alpha=0.5, C=0.02, decay=0.99)


def _fake_run(workdir, config, law=TRUTH, parent=None, fork=None, lr_shift=0, corrupt=None):
    """A run directory as the loop writes it, its eval losses the law's on its own schedule."""
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True)
    rundir.write_config(workdir, config)
    lrs = predict.schedule_rates(config.to_dict())
    start = fork or 0
    steps = np.arange(config.eval_every, config.steps + 1, config.eval_every)
    steps = steps[steps > start]
    losses = law.predict(lrs, steps)
    if corrupt is not None:
        losses = corrupt(losses)
    with metrics.Writer(workdir, tensorboard=False) as writer:
        for s in range(start + config.log_every, config.steps + 1, config.log_every):
            rate = lrs[min(s - 1 + lr_shift, len(lrs) - 1)]
            writer.write({"split": "train", "step": s, "loss": 1.0, "lr": float(np.float32(rate))})
        for s, loss in zip(steps, losses, strict=True):
            writer.write({"split": "eval", "step": int(s), "eval_loss": float(loss)})
    if parent is not None:
        lineage = {"parent": str(pathlib.Path(parent).absolute()), "step": fork}
        (workdir / "lineage.json").write_text(json.dumps(lineage))
    return workdir


def _synthetic(root, law=TRUTH):
    main = branch.main_config(_config(400, "warmup"), [240, 320], "wsd", 0.2, "linear")
    _fake_run(root / "wsd", main, law)
    for k, f, shape in ((320, 0.2, "linear"), (240, 0.4, "1-sqrt")):
        child = branch.branch_config(main, str(root / "wsd"), k, f, shape, 0.0)
        _fake_run(root / "wsd" / "branches" / f"at_{k}", child, law, root / "wsd", k)
    _fake_run(root / "cosine", _config(400), law)
    return root


def test_fit_on_main_and_cosine_predicts_the_branches_of_a_known_law(tmp_path):
    root = _synthetic(tmp_path / "runs")
    result = predict.predict(
        fit=[root / "wsd", root / "cosine"],
        measured=[root / "wsd"],
        kinds=["annealing"],
        decays=(0.9, 0.99, 0.999),
        fit_options={"annealing": {"grid": {"L0": [0.5, 1.0], "A": [1.0], "C": [1.0]}}},
    )
    law = result["laws"]["annealing"]
    assert law.decay == 0.99  # lambda chosen on the fitted curves
    for name, value in law.params.items():
        assert value == pytest.approx(TRUTH.params[name], rel=1e-3), name
    branches = [r for r in result["rows"] if r["fork_step"] is not None]
    assert sorted(r["schedule"] for r in branches) == ["wsd/at_240", "wsd/at_320"]
    for row in branches:
        assert abs(row["error"]["annealing"]) < 1e-5, row


def test_multipower_fit_predicts_the_branches_of_a_known_multipower_law(tmp_path):
    truth = laws.MultiPowerLaw(L0=0.8, A=0.3, alpha=0.5, B=2.0, C=2.0, beta=0.5, gamma=0.5)
    root = _synthetic(tmp_path / "runs", truth)
    fit = [root / "wsd", root / "cosine"]
    starts = {"L0": [0.6, 1.0], "A": [0.5], "alpha": [0.4], "B": [1.0]}  # stage 1 (the default
    # grid, built from the data, is tested in test_laws.py)
    result = predict.predict(
        fit=fit,
        measured=[root / "wsd"],
        kinds=["multipower"],
        fit_options={"multipower": {"stage2": "lbfgsb", "grid": starts}},  # to the optimum
    )
    errors = [abs(r["error"]["multipower"]) for r in result["rows"] if r["fork_step"]]
    assert len(errors) == 2 and max(errors) < 1e-5, errors
    # The default stage 2 (the authors' AdamW) stops early by design: close, not exact.
    early = predict.predict(
        fit=fit,
        measured=[root / "wsd"],
        kinds=["multipower"],
        fit_options={"multipower": {"grid": starts}},
    )
    errors = [abs(r["error"]["multipower"]) for r in early["rows"] if r["fork_step"]]
    assert max(errors) < 1e-2, errors


# ----------------------------------------------------------------------------------------
# schedules.table, which trains a law-optimal schedule
# ----------------------------------------------------------------------------------------


def test_table_schedule_looks_up_each_update_and_holds_the_last():
    values = np.array([0.0, 0.5, 1.0, 0.25])
    lr = jax.jit(schedules.table(0.1, values.tolist()))
    np.testing.assert_allclose(lr(np.arange(6)), [0.0, 0.05, 0.1, 0.025, 0.025, 0.025], rtol=1e-6)
    assert float(lr(1.5)) == pytest.approx(0.075)
    built = schedules.registry.build("table", total_steps=99, peak=0.1, values=list(values))
    assert float(built(2)) == pytest.approx(0.1)
    with pytest.raises(ValueError, match=r"table: `values` must be finite and >= 0.*index 1"):
        schedules.table(1.0, [1.0, -0.5])
    with pytest.raises(ValueError, match=r"table: `values` must be a non-empty 1-D"):
        schedules.table(1.0, [])
    with pytest.raises(ValueError, match=r"table: `peak` must be a finite number"):
        schedules.table(-1.0, [1.0])


def test_optimal_candidates_are_ranked_with_the_others(tmp_path):
    root = _synthetic(tmp_path / "runs")
    result = predict.predict(
        fit=[root / "wsd", root / "cosine"],
        kinds=["annealing"],
        fractions=[0.2],
        shapes=["linear"],
        budgets=[400],
        schedules_=["cosine"],
        optimal=True,
        iterations=300,
        decays=(0.99,),
    )
    rows = {r["schedule"]: r["predicted"]["annealing"] for r in result["rows"]}
    assert rows["annealing-optimal T=400"] <= min(rows.values()) + 1e-9
    lrs = next(c.lrs for c in result["candidates"] if c.name == "annealing-optimal T=400")
    np.testing.assert_allclose(lrs[:WARMUP], PEAK * np.arange(WARMUP) / WARMUP)
    assert np.all(np.diff(lrs[WARMUP:]) <= 1e-12)


# ----------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------


def test_bad_runs_name_the_run_and_the_problem(tmp_path):
    with pytest.raises(ValueError, match=r"nowhere: .* is not a run directory"):
        predict.read_run(tmp_path / "nowhere")
    _fake_run(tmp_path / "shifted", _config(100), lr_shift=1)  # lr of update s logged at s
    with pytest.raises(ValueError, match=r"shifted: the learning rate logged at step 5 "):
        predict.read_run(tmp_path / "shifted")
    empty = tmp_path / "empty"
    empty.mkdir()
    rundir.write_config(empty, _config(100))
    with pytest.raises(ValueError, match=r"empty: .* has no eval records"):
        predict.read_run(empty)

    def nan_at_40(losses):
        return np.where(np.arange(losses.size) == 3, np.nan, losses)

    _fake_run(tmp_path / "nan", _config(100), corrupt=nan_at_40)
    _fake_run(tmp_path / "negative", _config(100), corrupt=lambda y: -y)
    _fake_run(tmp_path / "ok", _config(100))
    for name, message in (
        ("nan", r"nan: loss nan at step 40 is not finite"),
        ("negative", r"negative: loss .* at step 10 is not > 0"),
    ):
        with pytest.raises(ValueError, match=message):
            predict.predict(fit=[tmp_path / "ok", tmp_path / name], measured=[tmp_path / "ok"])
    short = _config(30)
    _fake_run(tmp_path / "short", short)
    with pytest.raises(ValueError, match=r"7 parameters .* only 3 points \(short: 3\)"):
        predict.predict(fit=[tmp_path / "short"], kinds=["multipower"], measured=[tmp_path / "ok"])


def test_bad_options_are_refused_with_the_choices(tmp_path):
    _fake_run(tmp_path / "ok", _config(100))
    fit = [tmp_path / "ok"]
    with pytest.raises(ValueError, match=r"unknown law kind 'power'.*multipower"):
        predict.predict(fit=fit, kinds=["power"], measured=fit)
    with pytest.raises(ValueError, match=r"unknown schedule 'cosinus'.*wsd"):
        predict.predict(fit=fit, kinds=["annealing"], schedules_=["cosinus"], decays=(0.99,))
    with pytest.raises(ValueError, match=r"schedule 'cosine' takes no argument alpah"):
        predict.predict(fit=fit, kinds=["annealing"], schedules_=["cosine:alpah=1"])
    with pytest.raises(ValueError, match=r"decay fractions must be in \(0, 1\)"):
        predict.predict(fit=fit, kinds=["annealing"], fractions=[1.5], decays=(0.99,))
    with pytest.raises(ValueError, match=r"unknown decay shape 'sqrt'"):
        predict.predict(fit=fit, kinds=["annealing"], fractions=[0.2], shapes=["sqrt"])
    with pytest.raises(ValueError, match=r"budgets must be integers > the warm-up \(5 steps\)"):
        predict.predict(fit=fit, kinds=["annealing"], fractions=[0.2], budgets=[3])
    with pytest.raises(ValueError, match=r"nothing to predict"):
        predict.predict(fit=fit, kinds=["annealing"], decays=(0.99,))


def test_command_line_reports_bad_input_in_one_line(tmp_path, capsys):
    _fake_run(tmp_path / "ok", _config(100))
    with pytest.raises(SystemExit) as exit_info:
        predict.main(["--fit", str(tmp_path / "ok"), "--laws", "power", "--measured", "x"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown law kind 'power'" in err[0]
    out = tmp_path / "out"
    predict.main(
        ["--fit", str(tmp_path / "ok"), "--laws", "annealing", "--fractions", "0.2"]
        + ["--budgets", "100", "--out", str(out)]
    )
    assert "wsd linear f=0.2 T=100" in capsys.readouterr().out
    row = json.loads((out / "predict.json").read_text())["rows"][0]
    assert math.isfinite(row["predicted"]["annealing"])


def test_verification_ranking_counts_only_pairs_resolved_across_seeds():
    from experiments import predict_verify as v

    # Measured finals per seed (three seeds) and one law's predictions, for one shape.
    measured = {0.1: [1.40, 1.41, 1.42], 0.2: [1.30, 1.31, 1.32], 0.4: [1.305, 1.30, 1.33]}
    predicted = {0.1: 1.35, 0.2: 1.36, 0.4: 1.20}
    per_seed = {
        s: {
            "rows": {
                v.branch_name("linear", f): {
                    "measured": measured[f][i],
                    "predicted": {"annealing": predicted[f]},
                }
                for f in measured
            }
        }
        for i, s in enumerate((0, 1, 2))
    }
    pairs = {p["pair"]: p for p in v.ranking(per_seed, ["annealing"], [0.1, 0.2, 0.4], ["linear"])}
    # 0.1 vs 0.2: gap +0.1 every seed (spread 0): resolved; predicted -0.01: disagrees.
    assert pairs[(0.1, 0.2)]["gap"] == pytest.approx(0.1)
    assert pairs[(0.1, 0.2)]["paired_spread"] == pytest.approx(0.0, abs=1e-12)
    assert pairs[(0.1, 0.2)]["resolved"] and not pairs[(0.1, 0.2)]["agrees"]["annealing"]
    # 0.1 vs 0.4: +0.095, +0.11, +0.09: resolved, and the law agrees.
    assert pairs[(0.1, 0.4)]["resolved"] and pairs[(0.1, 0.4)]["agrees"]["annealing"]
    # 0.2 vs 0.4: -0.005, +0.01, -0.01: mean gap below its spread: not counted.
    assert not pairs[(0.2, 0.4)]["resolved"]
    assert pairs[(0.2, 0.4)]["unpaired_spread"] == pytest.approx(0.03)
