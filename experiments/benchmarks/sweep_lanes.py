"""A sweep as lanes of one program against the same sweep as sequential runs, wall clock.

    python -m experiments.benchmarks.sweep_lanes [--steps 200] [--workdir /tmp/sweep_lanes]

The char-LM (`experiments/configs/lm.py`) with 8 lanes: peaks 1e-3, 2e-3, 3e-3, 6e-3 x 2
seeds, warm-up 10 steps, cosine to `--steps`. Both sides run through `experiments.sweep.run`
in this process, compile included: `--mode=vmap` (one program, one compile, one checkpoint of
the stacked state) and `--mode=processes` (one run per lane, one after another, each with its
own compile and checkpoint). Separate OS processes would also pay the Python and JAX import
per run; that is not counted here. Checkpoints and evaluations at the end only, so both sides
do the same work. Prints the two times, their ratio, the largest difference of a lane's final
eval loss between the modes, and the load average (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import shutil
import time

import jax

from experiments import sweep
from experiments.configs import lm

PEAKS = [1e-3, 2e-3, 3e-3, 6e-3]
SEEDS = 2


def config(steps: int):
    c = lm.get_config()
    c.steps = steps
    c.schedule.kwargs.warmup_steps = 10
    c.eval_every = steps
    c.log_every = 50
    c.checkpoint.every = steps
    c.progress_bar = False
    return c


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--workdir", default="/tmp/sweep_lanes")
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args(argv)
    workdir = pathlib.Path(args.workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    c = config(args.steps)
    grid = sweep.make_grid(c, [("schedule.kwargs.peak", PEAKS)], seeds=SEEDS)
    quiet = lambda *a, **k: None
    seconds, records = {}, {}
    for mode in ("vmap", "processes"):
        start = time.perf_counter()
        records[mode] = sweep.run(c, workdir / mode, grid, mode, log=quiet)
        seconds[mode] = time.perf_counter() - start
    diff = max(
        abs(a["eval"]["eval_loss"] - b["eval"]["eval_loss"])
        for a, b in zip(records["vmap"]["lanes"], records["processes"]["lanes"], strict=True)
    )
    result = {
        "lanes": len(grid),
        "steps": args.steps,
        "vmap_s": round(seconds["vmap"], 1),
        "sequential_s": round(seconds["processes"], 1),
        "speedup": round(seconds["processes"] / seconds["vmap"], 2),
        "max_eval_loss_diff": diff,
        "best_eval_loss": min(lane["eval"]["eval_loss"] for lane in records["vmap"]["lanes"]),
        "device": f"{jax.devices()[0].device_kind} x{jax.device_count()}",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average": [round(x, 1) for x in os.getloadavg()],
        "jax": jax.__version__,
    }
    print(json.dumps(result))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
