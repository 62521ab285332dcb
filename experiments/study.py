"""The default study behind `make run`: one WSD run against cosine runs at several budgets.

    python -m experiments.study [--workdir runs/study] [--budgets 300,600,1000]

On the character-level LM workload, for each budget B:

* AdamW with warm-up + cosine decay to 0 over exactly B steps (a separate run per budget);
* one WSD run (warm-up, then the same peak held constant) whose decays branch off at
  k = (1 - f) B and run for f B steps with a 1-sqrt shape, f = `--decay_fraction`;

plus schedule-free AdamW for the largest budget, evaluated at its averaged point x. Writes a
report (table, loss and learning-rate figures) and prints, per budget, the final validation
loss of the WSD branch next to the cosine run's, and the total steps each approach computed.
Runs that already exist in the workdir are reused, so an interrupted study resumes.

Then both loss laws (`schedules.laws`, via `experiments.predict`) are fitted on the WSD main
branch and the largest cosine run only, and predict the final loss of every WSD branch (whose
decays they have not seen) and of the other cosine runs: predicted against measured, in the
report (`report/predict.md`, `report/predict.png`) and the printed table.

Runtime: about 6 minutes on 2 CPU cores with the default budgets (6 min 27 s for `make run` in
a fresh clone, venv and install included, 2026-11-24, with an eval every 100 steps). Evals every
20 steps (for the laws) add about 6% to the training; the two law fits take seconds (measured on
the char-LM's curves: 3.6 s of CPU for the multi-power law, 0.8 s for the annealing law).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from collections.abc import Sequence

from experiments import branch, predict, report, train
from experiments.configs import lm, lm_schedule_free, lm_wsd

EVAL_EVERY = 20  # steps between evals: curves dense enough to fit the loss laws on


def run_study(
    workdir: str | pathlib.Path,
    budgets: list[int],
    decay_fraction: float = 0.2,
    shape: str = "1-sqrt",
    progress_bar: bool = True,
    overrides: dict | None = None,
    laws: Sequence[str] = predict.DEFAULT_LAWS,
) -> dict:
    """Runs (or reuses) every run of the study; returns the comparison rows and totals, and
    (unless `laws` is empty) the loss laws' predictions of the WSD branches."""
    workdir = pathlib.Path(workdir)
    budgets = sorted(budgets)

    # Warm-up is at most a fifth of the smallest budget, so toy-sized studies stay valid.
    warmup = min(lm.get_config().schedule.kwargs.warmup_steps, budgets[0] // 5)

    def configure(config, steps=None):
        config.progress_bar = progress_bar
        config.eval_every = EVAL_EVERY  # loss curves dense enough to fit the laws on
        for kwargs in (config.schedule.kwargs, config.optimizer.kwargs):
            if "warmup_steps" in kwargs:
                kwargs.warmup_steps = warmup
        if steps is not None:
            config.steps = steps
        for key, value in (overrides or {}).items():
            node = config
            *parents, leaf = key.split(".")
            for name in parents:
                node = node[name]
            node[leaf] = value
        return config

    rows = []
    cosine_results = {}
    for budget in budgets:
        print(f"== cosine, {budget} steps", file=sys.stderr)
        run_dir = workdir / f"cosine_{budget}"
        cosine_results[budget] = (run_dir, train.train(configure(lm.get_config(), budget), run_dir))

    fork_steps = {budget: round((1 - decay_fraction) * budget) for budget in budgets}
    print(f"== WSD main branch to step {max(fork_steps.values())}, decays", file=sys.stderr)
    wsd_dir = workdir / "wsd"
    wsd_results = branch.run(
        configure(lm_wsd.get_config()),
        str(wsd_dir),
        at=list(fork_steps.values()),
        decay_fraction=decay_fraction,
        shape=shape,
    )

    print(f"== schedule-free AdamW, {budgets[-1]} steps", file=sys.stderr)
    sf_dir = workdir / f"schedule_free_{budgets[-1]}"
    sf_result = train.train(configure(lm_schedule_free.get_config(), budgets[-1]), sf_dir)

    for budget in budgets:
        branch_dir = wsd_dir / "branches" / f"at_{fork_steps[budget]}"
        wsd_summary = wsd_results[str(branch_dir)]
        rows.append(
            {
                "budget": budget,
                "wsd_steps": wsd_summary["step"],
                "cosine": cosine_results[budget][1]["eval"]["eval_loss"],
                "wsd": wsd_summary["eval"]["eval_loss"],
            }
        )
    wsd_compute = max(fork_steps.values()) + sum(
        r["wsd_steps"] - fork_steps[r["budget"]] for r in rows
    )
    totals = {"cosine": sum(budgets), "wsd": wsd_compute}
    report_path = report.report(
        [str(d) for d, _ in cosine_results.values()] + [str(wsd_dir), str(sf_dir)],
        workdir / "report",
    )
    result = {
        "rows": rows,
        "totals": totals,
        "schedule_free": sf_result["eval"]["eval_loss"],
        "report": report_path,
    }
    if laws:
        print("== loss laws: fit on the WSD main branch + the largest cosine run", file=sys.stderr)
        largest = cosine_results[budgets[-1]][0]
        cosine_dirs = [d for d, _ in cosine_results.values()]
        result["prediction"] = predict_branches(
            wsd_dir, largest, cosine_dirs, workdir / "report", laws
        )
    return result


def predict_branches(wsd_dir, fit_cosine, cosine_dirs, out, kinds=predict.DEFAULT_LAWS) -> dict:
    """Both laws fitted on the WSD main branch + one cosine run, predicting the branches and the
    other cosine runs. A fit that fails is reported, not raised: the runs stand on their own."""
    from schedules.laws import FitError

    try:
        result = predict.predict(
            fit=[wsd_dir, fit_cosine], measured=[wsd_dir, *cosine_dirs], kinds=kinds, out=out
        )
    except (ValueError, FitError) as e:
        return {"error": str(e)}
    return {
        "laws": {k: predict.law_record(law) for k, law in result["laws"].items()},
        "rows": result["rows"],
        "report": result["report"],
    }


def comparison_table(result: dict) -> str:
    lines = [
        "| budget (steps) | cosine: final val loss | WSD branch: final val loss | WSD - cosine |",
        "|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['budget']} | {row['cosine']:.4f} | {row['wsd']:.4f} | "
            f"{row['wsd'] - row['cosine']:+.4f} |"
        )
    totals = result["totals"]
    lines.append("")
    lines.append(
        f"Total steps computed: cosine runs {totals['cosine']:,}, WSD run with all branches "
        f"{totals['wsd']:,} ({totals['wsd'] / totals['cosine']:.0%} of the cosine runs)."
    )
    lines.append(
        f"Schedule-free AdamW at {result['rows'][-1]['budget']} steps: final val loss "
        f"{result['schedule_free']:.4f} (at its averaged point x)."
    )
    if "prediction" in result:
        lines += ["", prediction_table(result["prediction"])]
    return "\n".join(lines)


def prediction_table(prediction: dict) -> str:
    """Predicted against measured final loss of every run the laws were not fitted on."""
    if "error" in prediction:
        return f"Loss laws: no prediction ({prediction['error']})."
    kinds = list(prediction["laws"])
    labels = [predict.KIND_LABELS[k] for k in kinds]
    fitted = prediction["laws"][kinds[0]]["fitted_on"]
    lines = [
        f"Loss laws fitted on {' + '.join(fitted)} only, predicting the final val loss of the "
        "other runs (WSD branches: their decays are not in the fit):",
        "",
        "| run | measured | " + " | ".join(f"{x} law (error)" for x in labels) + " |",
        "|---|---:|" + "---:|" * len(kinds),
    ]
    for row in prediction["rows"]:
        if row["in_fit"] or row["measured"] is None:
            continue
        cells = [row["schedule"], f"{row['measured']:.4f}"]
        cells += [f"{row['predicted'][k]:.4f} ({row['error'][k]:+.2%})" for k in kinds]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for kind, label in zip(kinds, labels, strict=True):
        branches = [abs(r["error"][kind]) for r in prediction["rows"] if "/" in r["schedule"]]
        others = [
            abs(r["error"][kind])
            for r in prediction["rows"]
            if not r["in_fit"] and kind in r["error"]
        ]
        mean = f"{sum(branches) / len(branches):.2%}" if branches else "n/a"
        lines.append(
            f"- {label} law: mean |error| {mean} on the WSD branches, "
            f"{sum(others) / max(len(others), 1):.2%} on every run not in the fit."
        )
    lines.append(f"- Figure: {pathlib.Path(prediction['report']).parent / 'predict.png'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/study")
    parser.add_argument("--budgets", default="300,600,1000")
    parser.add_argument("--decay_fraction", type=float, default=0.2)
    parser.add_argument("--shape", default="1-sqrt")
    args = parser.parse_args(argv)
    budgets = [int(b) for b in args.budgets.split(",")]
    if not budgets or min(budgets) < 10:
        parser.error("--budgets must be comma-separated step counts >= 10")
    result = run_study(args.workdir, budgets, args.decay_fraction, args.shape)
    text = comparison_table(result)
    with open(result["report"], "a") as f:
        f.write("\n## WSD branches against cosine runs\n\n" + text + "\n")
    print(text)
    print(f"\nreport and figures: {result['report']}")


if __name__ == "__main__":
    main()
