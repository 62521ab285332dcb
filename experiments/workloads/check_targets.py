"""Shows that each workload's config reaches the workload's target, through the one loop.

    python -m experiments.workloads.check_targets [--only NAME[,NAME...]] [--steps N]
        [--workdir runs/check_targets]

For every workload, the config of the same name (`experiments/configs/<name>.py`, the only
record of its recipe) is trained by `experiments.train` in `<workdir>/<name>`, and the first
evaluation at which the workload's target was reached is read back from its metrics. A
finished run in the workdir is reused. A measurement, not a test: run it one workload at a
time on a busy machine.
"""

from __future__ import annotations

import argparse
import importlib
import pathlib
import time

import ml_collections

import experiments.workloads as workloads
from experiments import metrics, train


def load_config(name: str) -> ml_collections.ConfigDict:
    """`get_config()` of `experiments/configs/<name>.py`."""
    return importlib.import_module(f"experiments.configs.{name}").get_config()


def first_reached(records: list[dict], target: workloads.Target) -> int | None:
    """The first eval step whose metrics reach `target`, or None."""
    for record in records:
        if record["split"] == "eval" and target.reached(record):
            return record["step"]
    return None


def run(name: str, workdir: str | pathlib.Path, steps: int | None = None) -> dict:
    """Trains config `name` (for `steps` if given) and reports when its target was reached."""
    config = load_config(name)
    if steps:
        config.steps = steps
    config.progress_bar = False
    start = time.perf_counter()
    summary = train.train(config, pathlib.Path(workdir) / name)
    seconds = time.perf_counter() - start
    target = workloads.make(config.workload).target
    reached_at = first_reached(metrics.read_metrics(pathlib.Path(workdir) / name), target)
    final = summary["eval"]
    print(
        f"{name}: target {target.metric} {'<=' if target.mode == 'min' else '>='} {target.value}"
        f" {'reached at step ' + str(reached_at) if reached_at else 'NOT reached'}; final "
        f"{target.metric}={final[target.metric]:.5g} after {summary['step']} steps "
        f"({seconds:.1f} s, compile included)",
        flush=True,
    )
    return {"reached_at": reached_at, "final": final, "seconds": seconds}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated workload names")
    parser.add_argument("--steps", type=int, default=0, help="override the config's step count")
    parser.add_argument("--workdir", default="runs/check_targets")
    args = parser.parse_args(argv)
    chosen = args.only.split(",") if args.only else workloads.names()
    for name in chosen:
        if name not in workloads.names():
            parser.error(f"unknown workload {name!r}; choose from {workloads.names()}")
        run(name, args.workdir, args.steps or None)


if __name__ == "__main__":
    main()
