"""The critical batch size of each optimizer: steps and examples to a target per batch size.

    python -m experiments.batch_size --workdir=runs/batch_size \
        [--config=experiments/configs/batch_size.py --config.rule=sqrt] [--only=adamw,lamb]

Every run is one call of the training loop, `experiments.train.train(config, workdir,
stop_at_target=True)`: the same step, sharding, probes and checkpoints as any experiment, each
run in its own directory `<workdir>/<optimizer>/b<B>_lr<lr>` (finished runs are reused, so an
interrupted study resumes). For each optimizer of the study config and each batch size B:

1. the learning rate is the reference one at `reference_batch` B0 scaled by the rule:
   `linear` lr0 B/B0, `sqrt` lr0 (B/B0)^(1/2), or `tuned`: the sqrt rule times each factor of
   `grid`, keeping the one that reaches the target in the fewest steps;
2. S(B), the steps to the workload's target: the run stops at its first evaluation at the
   target, and S is interpolated linearly in the metric between that evaluation and the one
   before it; E(B) = B S(B), the examples to the target;
3. `probes.fit_critical_batch` fits McCandlish et al.'s (S/S_min - 1)(E/E_min - 1) = 1 to the
   batch sizes that reached the target: S_min, E_min and B_crit = E_min / S_min;
4. the gradient noise scale B_simple of each run at the target (its EMA at the last log step
   before the target; the runs measure it from microbatches), reported next to B_crit as the
   median over the batch sizes.

Writes `<workdir>/batch_size.json` (every run), `batch_size.md` (the tables) and
`steps_vs_examples.png` (S against E, one curve per optimizer, with the fitted hyperbola).

Reference: McCandlish, Kaplan, Amodei, OpenAI Dota Team, "An Empirical Model of Large-Batch
Training", arXiv:1812.06162, 2018.
"""

from __future__ import annotations

import json
import math
import pathlib
import sys
from collections.abc import Sequence

import ml_collections
import numpy as np

from experiments import metrics, probes, train, workloads

RULES = ("linear", "sqrt", "tuned")
RESULT_FILE = "study_result.json"


def check_study(study: ml_collections.ConfigDict) -> None:
    """A ValueError naming the study key that is bad, before anything runs."""
    sizes = list(study.batch_sizes)
    if not sizes or any(
        isinstance(b, bool) or not isinstance(b, int) or b < 1 or b & (b - 1) for b in sizes
    ):
        raise ValueError(f"batch_sizes must be powers of two, got {sizes}")
    if len(set(sizes)) != len(sizes) or len(sizes) < 3:
        raise ValueError(f"batch_sizes must be at least three distinct sizes, got {sizes}")
    if study.rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {study.rule!r}")
    if study.rule == "tuned" and (not study.grid or any(f <= 0 for f in study.grid)):
        raise ValueError(f"grid must be positive factors for rule 'tuned', got {study.grid}")
    for key in ("reference_batch", "max_examples", "max_steps", "eval_examples"):
        if not isinstance(study[key], int) or study[key] < 1:
            raise ValueError(f"{key} must be an int >= 1, got {study[key]!r}")
    if not study.optimizers:
        raise ValueError("optimizers must name at least one optimizer")
    for name, spec in study.optimizers.items():
        if not spec.lr > 0:
            raise ValueError(f"optimizers.{name}.lr must be > 0, got {spec.lr!r}")


def learning_rates(study: ml_collections.ConfigDict, lr0: float, batch_size: int) -> list:
    """The learning rates tried at `batch_size`: one, or one per grid factor (rule 'tuned')."""
    ratio = batch_size / study.reference_batch
    if study.rule == "linear":
        return [lr0 * ratio]
    if study.rule == "sqrt":
        return [lr0 * math.sqrt(ratio)]
    return [lr0 * math.sqrt(ratio) * factor for factor in study.grid]


def run_config(
    study: ml_collections.ConfigDict, name: str, batch_size: int, lr: float
) -> ml_collections.ConfigDict:
    """The experiment config of one run: the study's experiment at this optimizer, B and lr."""
    spec = study.optimizers[name]
    config = ml_collections.ConfigDict(study.experiment.to_dict())
    config.workload.batch_size = batch_size
    config.optimizer.name = name
    config.optimizer.kwargs = ml_collections.ConfigDict(spec.kwargs.to_dict())
    steps = min(study.max_steps, math.ceil(study.max_examples / batch_size))
    config.steps = steps
    warmup = math.ceil(study.warmup_examples / batch_size) if spec.get("warmup", True) else 0
    config.schedule.kwargs.peak = lr
    config.schedule.kwargs.warmup_steps = min(warmup, steps // 2)
    config.eval_every = max(1, study.eval_examples // batch_size)
    config.log_every = config.eval_every
    # Microbatches must leave at least one example per device in each microbatch.
    config.microbatches = min(config.microbatches, batch_size)
    return config


def steps_to_target(records: list[dict], target) -> float | None:
    """S: the steps at which the eval metric crosses the target, interpolated linearly between
    the last evaluation before the target and the first at it; None if never reached."""
    evals = [r for r in records if r["split"] == "eval"]
    previous = None
    for record in evals:
        if target.reached(record):
            if previous is None:
                return float(record["step"])
            before, after = previous[target.metric], record[target.metric]
            fraction = (target.value - before) / (after - before) if after != before else 1.0
            return previous["step"] + min(max(fraction, 0.0), 1.0) * (
                record["step"] - previous["step"]
            )
        previous = record
    return None


def noise_scale_at(records: list[dict], step: float) -> float | None:
    """The noise-scale EMA of the last train record at or before `step`."""
    before = [
        r for r in records if r["split"] == "train" and r["step"] <= step and "noise_scale" in r
    ]
    return before[-1]["noise_scale"] if before else None


def run_one(study, name: str, batch_size: int, lr: float, workdir: pathlib.Path) -> dict:
    """Trains (or reuses) one run; returns its row: optimizer, B, lr, S, E, noise scale."""
    result_path = workdir / RESULT_FILE
    config = run_config(study, name, batch_size, lr)
    as_json = json.loads(json.dumps(config.to_dict()))
    if result_path.exists():
        row = json.loads(result_path.read_text())
        if row.get("config") == as_json:
            return row
    try:
        summary = train.train(config, workdir, stop_at_target=True)
    except train.NonFiniteLossError as e:  # diverged: the target was not reached
        summary = {"step": None, "eval": {}, "target_reached": False, "error": str(e)}
    target = workloads.make(config.workload).target
    records = metrics.read_metrics(workdir)
    steps = steps_to_target(records, target) if summary["target_reached"] else None
    row = {
        "optimizer": name,
        "batch_size": batch_size,
        "lr": lr,
        "steps": steps,
        "examples": None if steps is None else steps * batch_size,
        "steps_run": summary["step"],
        "noise_scale": None if steps is None else noise_scale_at(records, steps),
        "final_eval": summary["eval"],
        "diverged": "error" in summary,
        "config": as_json,
    }
    result_path.write_text(json.dumps(row, indent=1) + "\n")
    return json.loads(result_path.read_text())  # as a reused run returns it


def run_study(
    study: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    only: Sequence[str] | None = None,
    log=print,
) -> dict:
    """Runs every (optimizer, batch size, learning rate) of `study`; returns rows and fits."""
    check_study(study)
    workdir = pathlib.Path(workdir)
    names = list(only) if only else list(study.optimizers)
    unknown = sorted(set(names) - set(study.optimizers))
    if unknown:
        raise ValueError(f"--only names {unknown}, not in the study's optimizers")
    rows, fits = [], {}
    for name in names:
        best = []
        for batch_size in sorted(study.batch_sizes):
            tried = []
            for lr in learning_rates(study, study.optimizers[name].lr, batch_size):
                run_dir = workdir / name / f"b{batch_size}_lr{lr:.4g}"
                row = run_one(study, name, batch_size, lr, run_dir)
                rows.append(row)
                tried.append(row)
                shown = "not reached" if row["steps"] is None else f"S={row['steps']:.1f}"
                log(f"{name} B={batch_size} lr={lr:.4g}: {shown}", file=sys.stderr)
            reached = [r for r in tried if r["steps"] is not None]
            best.append(min(reached, key=lambda r: r["steps"]) if reached else tried[0])
        for row in rows:
            if row["optimizer"] == name:
                row["best"] = any(row is b for b in best)
        fits[name] = _fit(best)
    return {"rows": rows, "fits": fits, "rule": study.rule}


def _fit(best: list[dict]) -> dict:
    """The critical-batch fit of one optimizer's best runs, or why there is none."""
    sizes = [r["batch_size"] for r in best]
    steps = [r["steps"] for r in best]
    noise = [r["noise_scale"] for r in best if r["noise_scale"] is not None]
    out = {"noise_scale": float(np.median(noise)) if noise else None}
    try:
        fit = probes.fit_critical_batch(sizes, steps)
    except ValueError as e:
        return {**out, "error": str(e)}
    return {**out, **fit._asdict()}


def tables(result: dict) -> str:
    """Markdown: B_crit per optimizer next to its noise scale, then every run."""
    lines = [
        f"Learning-rate rule: {result['rule']}.",
        "",
        "| optimizer | B_crit | S_min | E_min | fit residual (rms) | B_simple at target "
        "(median) | batch sizes fitted |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, fit in result["fits"].items():
        noise = _num(fit["noise_scale"])
        if "error" in fit:
            lines.append(f"| {name} | no fit | | | | {noise} | {fit['error']} |")
            continue
        fitted = ", ".join(str(int(b)) for b in fit["batch_sizes"])
        lines.append(
            f"| {name} | {fit['b_crit']:.0f} | {fit['s_min']:.0f} | {fit['e_min']:,.0f} | "
            f"{fit['relative_rms_residual']:.3f} | {noise} | {fitted} |"
        )
    lines += [
        "",
        "Every run (S: steps to target, interpolated between evaluations; E = B S; "
        "* marks the learning rate kept for the fit):",
        "",
        "| optimizer | B | lr | S | E | B_simple at target |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        steps = "not reached" if row["steps"] is None else f"{row['steps']:.1f}"
        steps = "diverged" if row.get("diverged") else steps
        examples = "" if row["examples"] is None else f"{row['examples']:,.0f}"
        mark = "*" if row.get("best") and result["rule"] == "tuned" else ""
        lines.append(
            f"| {row['optimizer']} | {row['batch_size']} | {row['lr']:.4g}{mark} | {steps} | "
            f"{examples} | {_num(row['noise_scale'])} |"
        )
    return "\n".join(lines)


def _num(value) -> str:
    return "" if value is None else f"{value:.3g}"


def figure(result: dict, path: pathlib.Path) -> pathlib.Path:
    """Steps against examples to the target, one curve per optimizer, fits dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(6.5, 4.5))
    for name, fit in result["fits"].items():
        best = [
            r
            for r in result["rows"]
            if r["optimizer"] == name and r.get("best") and r["steps"] is not None
        ]
        if not best:
            continue
        (line,) = axis.plot(
            [r["examples"] for r in best], [r["steps"] for r in best], "o-", label=name
        )
        for r in best:
            axis.annotate(
                str(r["batch_size"]),
                (r["examples"], r["steps"]),
                fontsize=6,
                textcoords="offset points",
                xytext=(3, 3),
            )
        if "error" not in fit:
            b = np.geomspace(min(fit["batch_sizes"]) / 2, max(fit["batch_sizes"]) * 2, 50)
            s = fit["s_min"] + fit["e_min"] / b
            axis.plot(b * s, s, "--", color=line.get_color(), alpha=0.5)
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("examples to target, E")
    axis.set_ylabel("steps to target, S")
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_outputs(result: dict, workdir: str | pathlib.Path) -> dict[str, pathlib.Path]:
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    paths = {"json": workdir / "batch_size.json", "tables": workdir / "batch_size.md"}
    paths["json"].write_text(json.dumps(result, indent=1) + "\n")
    paths["tables"].write_text(tables(result) + "\n")
    try:
        paths["figure"] = figure(result, workdir / "steps_vs_examples.png")
    except ImportError:
        pass
    return paths


def main(argv) -> None:
    from absl import app, flags
    from ml_collections import config_flags

    config_flag = config_flags.DEFINE_config_file(
        "config", "experiments/configs/batch_size.py", "the study config", lock_config=True
    )
    workdir_flag = flags.DEFINE_string("workdir", "runs/batch_size", "the study's directory")
    only_flag = flags.DEFINE_list("only", None, "run only these optimizers of the config")

    def run(args):
        if len(args) > 1:
            raise app.UsageError(f"unexpected arguments: {args[1:]}")
        from experiments import cli

        result = cli.run_reporting_errors(
            lambda: run_study(config_flag.value, workdir_flag.value, only_flag.value)
        )
        paths = write_outputs(result, workdir_flag.value)
        print(tables(result))
        print("\n" + ", ".join(str(p) for p in paths.values()))

    app.run(run, argv)


if __name__ == "__main__":
    from experiments import cli

    cli.quiet_logs(sys.argv)
    main(sys.argv)
