"""Do the loss laws predict our char-LM? The verification of issue 14, regenerated in one command.

    python -m experiments.predict verify [--workdir runs/predict_verify] [--seeds 0,1,2] \
        [--steps 600]

For each seed s (the parameter initialisation and the data order both use s), on the char-LM
of `experiments/configs/lm.py` (AdamW, peak 3e-3, 50 warm-up steps) with budget T = `--steps`:

* the constant main branch of `lm_wsd.py` (warm-up, then the peak held) to the last fork step;
* one cosine run of T steps (`lm.py`);
* WSD branches off the main branch for decay fractions f in {0.1, 0.2, 0.4} and shapes linear
  and 1-sqrt: fork at k = (1 - f) T, decay to 0 over f T steps, T steps in all.

Both laws are fitted per seed on the main branch + the cosine run (eval records), and predict
the six branches, which they have not seen (the main branch's stable phase up to each fork is
in the fit, the decays are not). Reported: the mean relative error of the predicted final
losses; for each shape, whether the predicted order of the decay fractions matches the
measured one (mean over seeds) for every pair whose measured gap exceeds the spread across
seeds (max - min of the per-seed differences). Then the multi-power law fitted on every seed's
two training curves gives a law-optimal schedule for T (same peak and warm-up, floor 0), which
is trained for every seed and compared with cosine and the best WSD branch.

Writes `<workdir>/verify.md`, `verify.json` and `verify.png`. Runs that exist are reused (an
interrupted verification resumes); the law-optimal rates are kept in `optimal.json` so a rerun
trains exactly the same schedule.

Runtime: 3 seeds x (0.9 + 1 + 1.4 + 1) T steps = 12.9 T steps of the LM (~0.1 s/step on a quiet
2-core CPU: about 15 minutes at T = 600, plus ~25 s of compilation per run).
"""

from __future__ import annotations

import json
import pathlib
import sys

import ml_collections
import numpy as np

FRACTIONS = (0.1, 0.2, 0.4)
SHAPES = ("linear", "1-sqrt")
STEPS = 600
EVAL_EVERY = 20


def lm_config(seed: int, steps: int, eval_every: int = EVAL_EVERY) -> ml_collections.ConfigDict:
    """`lm.py` for `steps` steps, seed `seed` for both the initialisation and the data order."""
    from experiments.configs import lm

    config = lm.get_config()
    config.steps = steps
    config.seed = seed
    config.workload.seed = seed
    config.eval_every = eval_every
    config.progress_bar = False
    return config


def fork_steps(steps: int, fractions=FRACTIONS) -> dict[float, int]:
    """The fork step k = (1 - f) T of each decay fraction f (the branch decays over T - k)."""
    return {f: round((1 - f) * steps) for f in fractions}


def main_branch_config(seed: int, steps: int, fractions=FRACTIONS) -> ml_collections.ConfigDict:
    from experiments import branch
    from experiments.configs import lm_wsd

    config = lm_wsd.get_config()
    base = lm_config(seed, steps)
    with config.unlocked():
        config.seed, config.workload.seed = base.seed, base.workload.seed
        config.eval_every, config.progress_bar = base.eval_every, base.progress_bar
    at = sorted(set(fork_steps(steps, fractions).values()))
    return branch.main_config(config, at, "wsd", 0.2, "1-sqrt")


def branch_name(shape: str, fraction: float) -> str:
    return f"wsd_{shape}_{fraction:g}"


def train_runs(
    workdir: str | pathlib.Path,
    seeds=(0, 1, 2),
    steps: int = STEPS,
    fractions=FRACTIONS,
    shapes=SHAPES,
) -> dict[int, dict[str, pathlib.Path]]:
    """Trains (or reuses) the main branch, the cosine run and the WSD branches of every seed.

    Returns {seed: {"main": dir, "cosine": dir, "wsd_<shape>_<f>": dir, ...}}.
    """
    from experiments import branch

    workdir = pathlib.Path(workdir)
    runs = {}
    for seed in seeds:
        seed_dir = workdir / f"seed_{seed}"
        main = main_branch_config(seed, steps, fractions)
        dirs = {"main": seed_dir / "main", "cosine": seed_dir / "cosine"}
        print(f"== seed {seed}: constant main branch to step {main.steps}", file=sys.stderr)
        _train(main, dirs["main"])
        forks = fork_steps(steps, fractions)
        for fraction in fractions:
            for shape in shapes:
                name = branch_name(shape, fraction)
                print(f"== seed {seed}: {name} (fork at {forks[fraction]})", file=sys.stderr)
                child = branch.branch_config(
                    main, str(dirs["main"]), forks[fraction], fraction, shape, 0.0
                )
                if child.steps != steps:  # rounding of k and D: the budget must be T
                    raise ValueError(
                        f"fraction {fraction} gives a branch of {child.steps} steps, not {steps}; "
                        "choose --steps so that (1 - f) T is an integer"
                    )
                dirs[name] = seed_dir / name
                _train(child, dirs[name])
        print(f"== seed {seed}: cosine, {steps} steps", file=sys.stderr)
        _train(lm_config(seed, steps), dirs["cosine"])
        runs[seed] = dirs
    return runs


def _train(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> None:
    """Trains `config` in `workdir`, or skips it when that run is there and finished (the
    same config, an eval record at its last step): no rebuild and recompile to re-read it."""
    from experiments import rundir, train
    from experiments.metrics import read_metrics

    if (workdir / rundir.CONFIG_FILE).exists():
        rundir.check_config(workdir, config)  # another run's config is an error, not a skip
        done = rundir.read_config(workdir)["steps"] == config.steps and any(
            r["split"] == "eval" and r["step"] == config.steps for r in read_metrics(workdir)
        )
        if done:
            return
    train.train(config, workdir)


def table_config(seed: int, steps: int, peak: float, values) -> ml_collections.ConfigDict:
    """`lm.py` with its schedule replaced by a table of per-step rates (`schedules.table`)."""
    config = lm_config(seed, steps)
    with config.unlocked():
        config.schedule.name = "table"
        config.schedule.kwargs = ml_collections.ConfigDict(
            {"peak": peak, "values": [float(v) for v in values]}
        )
    return config


def _mean_std(values) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0


def predictions(runs: dict, kinds, min_step: int = 1) -> dict:
    """Per seed: both laws fitted on main + cosine, predicting every branch's final loss."""
    from experiments import predict

    out = {}
    for seed, dirs in runs.items():
        read = {name: predict.read_run(d, f"seed_{seed}/{name}") for name, d in dirs.items()}
        fitted = predict.fit_laws([read["main"], read["cosine"]], kinds, min_step)
        branches = [n for n in read if n.startswith("wsd_")]
        rows = {}
        for name in branches:
            run = read[name]
            if run.final_loss is None:
                raise ValueError(f"{run.name} is unfinished (last eval at step {run.steps[-1]})")
            rows[name] = {
                "measured": run.final_loss,
                "predicted": {
                    k: float(law.predict(run.lrs, [run.total_steps])[0])
                    for k, law in fitted.items()
                },
            }
        out[seed] = {"laws": fitted, "rows": rows, "runs": read}
    return out


def ranking(per_seed: dict, kinds, fractions, shapes) -> list[dict]:
    """For each shape and pair of fractions: the measured gap (mean over seeds of the paired
    differences), its spread across seeds, and whether each law orders the pair the same way."""
    seeds = list(per_seed)
    pairs = []
    for shape in shapes:
        for i, fi in enumerate(fractions):
            for fj in fractions[i + 1 :]:
                a, b = branch_name(shape, fi), branch_name(shape, fj)
                diff = np.array(
                    [
                        per_seed[s]["rows"][a]["measured"] - per_seed[s]["rows"][b]["measured"]
                        for s in seeds
                    ]
                )
                finals = {
                    n: np.array([per_seed[s]["rows"][n]["measured"] for s in seeds]) for n in (a, b)
                }
                row = {
                    "shape": shape,
                    "pair": (fi, fj),
                    "gap": float(diff.mean()),
                    "paired_spread": float(np.ptp(diff)),
                    "unpaired_spread": float(max(np.ptp(v) for v in finals.values())),
                    "predicted_gap": {},
                    "agrees": {},
                }
                row["resolved"] = abs(row["gap"]) > row["paired_spread"]
                for k in kinds:
                    pred = np.mean(
                        [
                            per_seed[s]["rows"][a]["predicted"][k]
                            - per_seed[s]["rows"][b]["predicted"][k]
                            for s in seeds
                        ]
                    )
                    row["predicted_gap"][k] = float(pred)
                    row["agrees"][k] = bool(np.sign(pred) == np.sign(row["gap"]))
                pairs.append(row)
    return pairs


def optimal_schedule(
    workdir: pathlib.Path, runs: dict, steps: int, iterations: int = 10_000
) -> dict:
    """The multi-power law fitted on every seed's main + cosine, and its law-optimal rates for
    `steps` (kept in optimal.json: a rerun trains exactly these rates)."""
    from experiments import predict
    from schedules import laws

    path = workdir / "optimal.json"
    if path.exists():
        record = json.loads(path.read_text())
        if record["steps"] == steps and record["seeds"] == sorted(runs):
            return record
    fit_runs = [
        predict.read_run(dirs[name], f"seed_{seed}/{name}")
        for seed, dirs in runs.items()
        for name in ("main", "cosine")
    ]
    law = predict.fit_laws(fit_runs, ["multipower"])["multipower"]
    peak, warmup = predict.reference_schedule(fit_runs[1])
    lrs = laws.optimal_lrs(law, steps, peak, warmup, 0.0, iterations=iterations)
    record = {
        "steps": steps,
        "seeds": sorted(runs),
        "peak": peak,
        "warmup_steps": warmup,
        "law": predict.law_record(law),
        "lrs": [float(v) for v in lrs],
    }
    _dump(path, record)
    return record


def train_optimal(workdir: pathlib.Path, seeds, steps: int, record: dict) -> dict:
    """Trains (or reuses) the law-optimal rates of `record` for every seed."""
    peak = record["peak"]
    values = [v / peak for v in record["lrs"]]
    dirs = {}
    for seed in seeds:
        dirs[seed] = workdir / f"seed_{seed}" / "optimal"
        print(f"== seed {seed}: the law-optimal schedule, {steps} steps", file=sys.stderr)
        _train(table_config(seed, steps, peak, values), dirs[seed])
    return dirs


def verify(
    workdir: str | pathlib.Path = "runs/predict_verify",
    seeds=(0, 1, 2),
    steps: int = STEPS,
    kinds=("multipower", "annealing"),
    min_step: int = 1,
    iterations: int = 10_000,
    train_optimal_runs: bool = True,
) -> dict:
    """Trains (or reuses) every run, fits, predicts, trains the law-optimal schedule, reports."""
    from experiments import predict

    workdir = pathlib.Path(workdir)
    seeds = sorted(seeds)
    if len(seeds) < 3:
        raise ValueError(f"--seeds: give at least 3 seeds (the spread across seeds), got {seeds}")
    runs = train_runs(workdir, seeds, steps)
    per_seed = predictions(runs, kinds, min_step)
    errors = {
        k: [
            abs(r["predicted"][k] - r["measured"]) / r["measured"]
            for s in seeds
            for r in per_seed[s]["rows"].values()
        ]
        for k in kinds
    }
    pairs = ranking(per_seed, kinds, list(FRACTIONS), list(SHAPES))
    result = {
        "steps": steps,
        "seeds": seeds,
        "mean_error": {k: float(np.mean(v)) for k, v in errors.items()},
        "max_error": {k: float(np.max(v)) for k, v in errors.items()},
        "pairs": pairs,
        "per_seed": {
            s: {
                "laws": {k: predict.law_record(law) for k, law in per_seed[s]["laws"].items()},
                "rows": per_seed[s]["rows"],
            }
            for s in seeds
        },
    }
    record = optimal_schedule(workdir, runs, steps, iterations)
    result["optimal"] = {k: v for k, v in record.items() if k != "lrs"}
    if train_optimal_runs:
        optimal_dirs = train_optimal(workdir, seeds, steps, record)
        finals = {"law-optimal": [], "cosine": []}
        for seed in seeds:
            finals["law-optimal"].append(
                predict.read_run(optimal_dirs[seed], f"seed_{seed}/optimal").final_loss
            )
            finals["cosine"].append(per_seed[seed]["runs"]["cosine"].final_loss)
        branch_means = {
            name: float(np.mean([per_seed[s]["rows"][name]["measured"] for s in seeds]))
            for name in per_seed[seeds[0]]["rows"]
        }
        best = min(branch_means, key=branch_means.get)
        finals[f"best WSD ({best})"] = [per_seed[s]["rows"][best]["measured"] for s in seeds]
        result["comparison"] = {
            name: {"per_seed": v, "mean": _mean_std(v)[0], "std": _mean_std(v)[1]}
            for name, v in finals.items()
        }
        opt = np.array(finals["law-optimal"])
        result["optimal_minus"] = {
            name: _mean_std(opt - np.array(v))
            for name, v in finals.items()
            if name != "law-optimal"
        }
        result["best_wsd"] = best
    _dump(workdir / "verify.json", _jsonable(result))
    (workdir / "verify.md").write_text(markdown(result, kinds) + "\n")
    try:
        figure(workdir, per_seed, seeds, record, result)
    except ImportError:
        pass
    return result


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    return value


def markdown(result: dict, kinds) -> str:
    from experiments.predict import KIND_LABELS

    seeds = result["seeds"]
    lines = [
        f"# Loss laws on the char-LM: {result['steps']} steps, seeds {seeds}",
        "",
        "Fitted per seed on the constant main branch + the cosine run (eval losses); predicting "
        "the final eval loss of the WSD branches (not in the fit).",
        "",
    ]
    head = ["branch"] + [f"seed {s} measured" for s in seeds]
    head += [f"{KIND_LABELS[k]}: mean predicted" for k in kinds]
    head += [f"{KIND_LABELS[k]}: mean error" for k in kinds]
    lines += ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    first = result["per_seed"][seeds[0]]["rows"]
    for name in first:
        rows = [result["per_seed"][s]["rows"][name] for s in seeds]
        cells = [name] + [f"{r['measured']:.4f}" for r in rows]
        cells += [f"{np.mean([r['predicted'][k] for r in rows]):.4f}" for k in kinds]
        cells += [
            f"{np.mean([(r['predicted'][k] - r['measured']) / r['measured'] for r in rows]):+.2%}"
            for k in kinds
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for k in kinds:
        lines.append(
            f"- {KIND_LABELS[k]} law: mean |relative error| {result['mean_error'][k]:.2%}, "
            f"worst {result['max_error'][k]:.2%} (target 1%)."
        )
    lines += [
        "",
        "Ranking of decay fractions (gap = mean over seeds of the paired difference of final "
        "losses; a pair counts where |gap| > the range of the per-seed differences):",
        "",
        "| shape | pair | measured gap | paired spread | unpaired spread | counts | "
        + " | ".join(f"{KIND_LABELS[k]} gap (agrees)" for k in kinds)
        + " |",
        "|" + "---:|" * (6 + len(kinds)),
    ]
    for p in result["pairs"]:
        cells = [
            p["shape"],
            f"{p['pair'][0]:g} vs {p['pair'][1]:g}",
            f"{p['gap']:+.4f}",
            f"{p['paired_spread']:.4f}",
            f"{p['unpaired_spread']:.4f}",
            "yes" if p["resolved"] else "no",
        ]
        cells += [
            f"{p['predicted_gap'][k]:+.4f} ({'yes' if p['agrees'][k] else 'NO'})" for k in kinds
        ]
        lines.append("| " + " | ".join(cells) + " |")
    for k in kinds:
        counted = [p for p in result["pairs"] if p["resolved"]]
        agree = sum(p["agrees"][k] for p in counted)
        lines.append(
            f"- {KIND_LABELS[k]} law: {agree} of {len(counted)} resolved pairs ordered as measured."
        )
    if "comparison" in result:
        opt = result["optimal"]
        lines += [
            "",
            f"Law-optimal schedule (multi-power law fitted on all seeds' main + cosine: "
            f"{', '.join(f'{k}={v:.4g}' for k, v in opt['law']['params'].items())}), "
            f"{result['steps']} steps, peak {opt['peak']:g}, {opt['warmup_steps']} warm-up "
            "steps, floor 0:",
            "",
            "| schedule | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | std |",
            "|" + "---:|" * (len(seeds) + 3),
        ]
        for name, c in result["comparison"].items():
            lines.append(
                f"| {name} | "
                + " | ".join(f"{v:.4f}" for v in c["per_seed"])
                + f" | {c['mean']:.4f} | {c['std']:.4f} |"
            )
        lines.append("")
        for name, (mean, std) in result["optimal_minus"].items():
            lines.append(f"- law-optimal - {name}: {mean:+.4f} (std over seeds {std:.4f})")
    return "\n".join(lines)


def figure(workdir: pathlib.Path, per_seed: dict, seeds, record: dict, result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from experiments import predict

    first = per_seed[seeds[0]]
    candidates = predict.measured_candidates(
        list(first["runs"].values()), [first["runs"]["main"], first["runs"]["cosine"]]
    )
    predict.plot(
        first["laws"],
        candidates,
        workdir / "verify_seed.png",
        title=f"seed {seeds[0]}: fitted on main + cosine",
    )
    fig, (ax_lr, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    steps = np.arange(record["steps"])
    ax_lr.plot(steps, record["lrs"], label="law-optimal (multi-power)")
    runs = first["runs"]
    names = ["cosine"] + ([result["best_wsd"]] if "best_wsd" in result else [])
    for name in names:
        ax_lr.plot(steps, runs[name].lrs, label=name)
    if "comparison" in result:
        for seed in seeds:
            opt = predict.read_run(workdir / f"seed_{seed}" / "optimal", "optimal")
            for i, (label, run) in enumerate(
                [("law-optimal", opt)] + [(n, per_seed[seed]["runs"][n]) for n in names]
            ):
                ax_loss.plot(
                    run.steps,
                    run.losses,
                    color=f"C{i}",
                    lw=0.8,
                    label=label if seed == seeds[0] else None,
                )
        lows = [min(c["per_seed"]) for c in result["comparison"].values()]
        ax_loss.set_ylim(min(lows) - 0.02, min(lows) + 0.4)
    ax_lr.set_xlabel("step")
    ax_lr.set_ylabel("learning rate")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("eval loss (every seed)")
    for ax in (ax_lr, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(workdir / "verify.png", dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    import argparse

    from experiments import cli
    from schedules import laws

    parser = argparse.ArgumentParser(
        prog="python -m experiments.predict verify", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--workdir", default="runs/predict_verify")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--min_step", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=10_000)
    args = parser.parse_args(argv)
    cli.quiet_logs([])
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]

    def run():
        return verify(
            args.workdir, seeds, args.steps, min_step=args.min_step, iterations=args.iterations
        )

    try:
        cli.run_reporting_errors(run)
    except laws.FitError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    print((pathlib.Path(args.workdir) / "verify.md").read_text())


def _dump(path: pathlib.Path, value) -> None:
    path.write_text(json.dumps(value, indent=1) + "\n")
