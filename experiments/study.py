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

Runtime: about 6 minutes on 2 CPU cores with the default budgets (6 min 27 s for `make run` in
a fresh clone, venv and install included, 2026-11-24).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from experiments import branch, report, train
from experiments.configs import lm, lm_schedule_free, lm_wsd


def run_study(
    workdir: str | pathlib.Path,
    budgets: list[int],
    decay_fraction: float = 0.2,
    shape: str = "1-sqrt",
    progress_bar: bool = True,
    overrides: dict | None = None,
) -> dict:
    """Runs (or reuses) every run of the study; returns the comparison rows and totals."""
    workdir = pathlib.Path(workdir)
    budgets = sorted(budgets)

    # Warm-up is at most a fifth of the smallest budget, so toy-sized studies stay valid.
    warmup = min(lm.get_config().schedule.kwargs.warmup_steps, budgets[0] // 5)

    def configure(config, steps=None):
        config.progress_bar = progress_bar
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
    return {
        "rows": rows,
        "totals": totals,
        "schedule_free": sf_result["eval"]["eval_loss"],
        "report": report_path,
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
