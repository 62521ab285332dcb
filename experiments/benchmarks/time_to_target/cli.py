"""`python -m experiments.benchmarks.time_to_target`: score methods, or freeze targets.

    python -m experiments.benchmarks.time_to_target [--workloads quadratic logreg ...]
        [--optimizers adamw+cosine dog ... | core | all] [--seeds 3] [--budget-scale 1.0]
        [--tracks tuned self] [--markdown out.md] [--plot docs/time_to_target_profile.png]
        [--json costs.json]
    python -m experiments.benchmarks.time_to_target --set-targets [--workloads ...]

The procedure, the frozen targets and the latest tables are in BENCHMARKS.md ("Time to
target"). The default run (every method on the five cheap workloads, 3 seeds) took about 10
minutes on 2 CPU cores before the AutoLRS methods joined; those two run lane by lane on the
training loop and took 47 minutes on their own (5 workloads, 3 seeds, on 2 cores shared at load
~19), so name the methods with --optimizers when time matters.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import pathlib
import platform
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np

from experiments.benchmarks.time_to_target import figures, methods, runner, scoring

TARGETS_PATH = pathlib.Path(__file__).with_name("targets_v1.json")
DEFAULT_WORKLOADS = ("quadratic", "logreg", "mlp_digits", "cnn_mnist1d", "dro_regression")


def load_targets(path: pathlib.Path = TARGETS_PATH) -> dict:
    return json.loads(pathlib.Path(path).read_text())


def _budget(name: str, budget_scale: float) -> tuple[int, int]:
    budget = max(1, int(runner.BUDGETS[name] * budget_scale))
    return budget, min(runner.EVAL_EVERY[name], budget)


def set_targets(workloads: Sequence[str], num_seeds: int, budget_scale: float, path) -> dict:
    """Tunes the baseline (tuned track only) and freezes its median best metric per workload."""
    method = methods.METHODS[methods.BASELINE]
    path = pathlib.Path(path)
    data = json.loads(path.read_text()) if path.exists() else {}
    data.setdefault("version", 1)
    data["baseline"] = methods.BASELINE
    data["procedure"] = (
        "AdamW + cosine, the 5 tuned-track configurations, default budget; per seed the best "
        "target-metric value of any configuration at any evaluation; target = median over seeds"
    )
    data.setdefault("workloads", {})
    for name in workloads:
        budget, eval_every = _budget(name, budget_scale)
        problem = runner.Problem(name, num_seeds, budget, None)
        lanes = methods.make_lanes(method, num_seeds, budget, ("tuned",))
        result = runner.run_method(method, problem, lanes, eval_every)
        pick = np.min if problem.mode == "min" else np.max
        per_seed = [pick(result["best"][lanes.seed_index == s]) for s in range(num_seeds)]
        data["workloads"][name] = {
            "metric": problem.metric,
            "mode": problem.mode,
            "value": float(np.median(per_seed)),
            "per_seed_best": [float(v) for v in per_seed],
            "budget_steps": budget,
            "eval_every": eval_every,
            "workload_overrides": runner.WORKLOAD_OVERRIDES.get(name, {}),
            "seeds": num_seeds,
            "date": datetime.date.today().isoformat(),
        }
        print(f"{name}: target {problem.metric} {problem.mode} {np.median(per_seed):.6g}")
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return data


def run(
    workloads: Sequence[str],
    chosen: Sequence[methods.Method],
    num_seeds: int = 3,
    budget_scale: float = 1.0,
    targets: dict | None = None,
    tracks: Sequence[str] = ("tuned", "self"),
    log: Callable[[str], None] = print,
) -> dict:
    """{method name: {track: {workload: cost}}}."""
    targets = load_targets() if targets is None else targets
    results: dict[str, dict[str, dict[str, float]]] = {
        m.name: {t: {} for t in tracks} for m in chosen
    }
    for name in workloads:
        if name not in targets["workloads"]:
            raise ValueError(f"no frozen target for {name!r}: run with --set-targets first")
        budget, eval_every = _budget(name, budget_scale)
        length = int(math.ceil(methods.SELF_TUNING_FACTOR * budget)) if "self" in tracks else budget
        start = time.perf_counter()
        problem = runner.Problem(name, num_seeds, length, targets["workloads"][name])
        seconds = time.perf_counter() - start
        log(f"{name}: data for {num_seeds} seeds x {length} steps in {seconds:.1f} s")
        for method in chosen:
            start = time.perf_counter()
            lanes = methods.make_lanes(method, num_seeds, budget, tracks)
            result = runner.run_method(method, problem, lanes, eval_every)
            costs = scoring.costs_by_track(method, lanes, result["steps"], num_seeds)
            for track, cost in costs.items():
                results[method.name][track][name] = cost
            log(
                f"  {method.name:28s} "
                + " ".join(f"{t}={scoring._fmt_cost(c):>7s}" for t, c in costs.items())
                + f"  ({result['last_step']} steps, {time.perf_counter() - start:.1f} s)"
            )
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=list(DEFAULT_WORKLOADS))
    parser.add_argument(
        "--optimizers",
        nargs="+",
        default=None,
        help="method, optimizer or schedule names, 'core', or 'all' (default: all but autolrs)",
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget-scale", type=float, default=1.0)
    parser.add_argument("--tracks", nargs="+", choices=["tuned", "self"], default=["tuned", "self"])
    parser.add_argument("--targets", default=str(TARGETS_PATH))
    parser.add_argument("--set-targets", action="store_true")
    parser.add_argument("--markdown", default=None, help="also write the tables to this file")
    parser.add_argument("--plot", default=None, help="performance-profile PNG")
    parser.add_argument("--json", default=None, help="also write the costs as JSON")
    args = parser.parse_args(argv)
    if args.seeds <= 0:
        parser.error("--seeds must be a positive int")
    if args.budget_scale <= 0:
        parser.error("--budget-scale must be > 0")
    for name in args.workloads:
        if name not in runner.BUDGETS:
            parser.error(f"unknown workload {name!r}; choose from {sorted(runner.BUDGETS)}")
    if args.set_targets:
        return set_targets(args.workloads, args.seeds, args.budget_scale, args.targets)
    try:
        chosen = methods.select_methods(args.optimizers)
    except ValueError as e:
        parser.error(str(e))
    start = time.perf_counter()
    results = run(
        args.workloads,
        chosen,
        args.seeds,
        args.budget_scale,
        load_targets(args.targets),
        args.tracks,
    )
    header = (
        f"{len(chosen)} methods x {len(args.workloads)} workloads, {args.seeds} seeds, budget "
        f"scale {args.budget_scale}; {time.perf_counter() - start:.0f} s; jax {jax.__version__}, "
        f"{jax.devices()[0].platform} ({platform.machine()})\n"
    )
    text = header + "\n" + scoring.markdown(results, args.workloads)
    print("\n" + text)
    if args.markdown:
        pathlib.Path(args.markdown).write_text(text)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    if args.plot and not figures.plot_profiles(results, args.plot):
        print("matplotlib is not installed: no plot")
    return results
