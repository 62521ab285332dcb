"""A sweep as lanes of one program against the same sweep as sequential runs, wall clock.

    python -m experiments.benchmarks.sweep_lanes [--steps 200] [--abba] [--breakdown]
        [--workdir /tmp/sweep_lanes] [--json result.json]

The char-LM (`experiments/configs/lm.py`) with 8 lanes: peaks 1e-3, 2e-3, 3e-3, 6e-3 x 2
seeds, warm-up 10 steps, cosine to `--steps`. Both sides run through `experiments.sweep.run`
in this process, compile included: `--mode=vmap` (one program, one compile, one checkpoint of
the stacked state) and `--mode=processes` (one run per lane, one after another, each with its
own compile and checkpoint). Separate OS processes would also pay the Python and JAX import
per run; that is not counted here. Checkpoints and evaluations at the end only, so both sides
do the same work. Prints the two times (with `--abba` each the mean of two runs, in the order
vmap, sequential, sequential, vmap), their ratio, the largest difference of a lane's final
eval loss between the modes, and the load average (the machine may be shared).

`--breakdown` also separates compile from steps: it compiles the lanes program and one lane's
own program ahead of time (`step_fn.lower(...).compile()`, seconds each), then times, in
`--rounds` interleaved rounds, one lanes step against 8 steps of the single program, and
reports the median over rounds of their ratio (a shared machine's drifts cancel out).
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
import numpy as np

from experiments import sweep, train
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


def breakdown(c, grid: dict, rounds: int) -> dict:
    """Compile seconds of each program, and the median per-round ratio of step times."""
    name = next(iter(grid))
    programs = {
        "lanes": train.build(c, lanes=grid),
        "single": train.build(sweep.lane_config(c, name, grid[name])),
    }
    compiled, states, batches, compile_s = {}, {}, {}, {}
    for key, program in programs.items():
        start = time.perf_counter()
        lowered = program.step_fn.lower(program.abstract_state, program.abstract_batch())
        compiled[key] = lowered.compile()
        compile_s[key] = time.perf_counter() - start
        states[key] = program.init(None)
        batches[key] = program.batch(0)
        states[key], m = compiled[key](states[key], batches[key])  # warm-up
        jax.block_until_ready(m)
    ratios, lanes_s, single_s = [], [], []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(len(grid)):
            states["single"], m = compiled["single"](states["single"], batches["single"])
            jax.block_until_ready(m)
        single_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        states["lanes"], m = compiled["lanes"](states["lanes"], batches["lanes"])
        jax.block_until_ready(m)
        lanes_s.append(time.perf_counter() - start)
        ratios.append(lanes_s[-1] / single_s[-1])
    return {
        "compile_lanes_s": round(compile_s["lanes"], 2),
        "compile_single_s": round(compile_s["single"], 2),
        "lanes_step_s": round(float(np.median(lanes_s)), 4),
        "eight_single_steps_s": round(float(np.median(single_s)), 4),
        "lanes_over_sequential_step_ratio": round(float(np.median(ratios)), 3),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--workdir", default="/tmp/sweep_lanes")
    parser.add_argument("--json", default=None, help="also write the result here")
    parser.add_argument("--breakdown", action="store_true", help="compile vs step times")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--skip-sweeps", action="store_true", help="only the breakdown")
    parser.add_argument("--abba", action="store_true", help="run vmap, seq., seq., vmap")
    args = parser.parse_args(argv)
    workdir = pathlib.Path(args.workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    c = config(args.steps)
    grid = sweep.make_grid(c, [("schedule.kwargs.peak", PEAKS)], seeds=SEEDS)
    result: dict = {"lanes": len(grid), "steps": args.steps}
    if args.breakdown:
        result.update(breakdown(c, grid, args.rounds))
    if not args.skip_sweeps:
        result.update(sweeps(c, grid, workdir, args.abba))
    result.update(
        device=f"{jax.devices()[0].device_kind} x{jax.device_count()}",
        machine=f"{platform.machine()}, {os.cpu_count()} cores",
        load_average=[round(x, 1) for x in os.getloadavg()],
        jax=jax.__version__,
    )
    print(json.dumps(result))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return result


def sweeps(c, grid: dict, workdir: pathlib.Path, abba: bool = False) -> dict:
    """Both modes through `experiments.sweep.run`, wall clock with compile; with `abba` in the
    order vmap, processes, processes, vmap (a linear drift of the machine's load cancels in
    the means)."""
    quiet = lambda *a, **k: None
    order = ["vmap", "processes", "processes", "vmap"] if abba else ["vmap", "processes"]
    times: dict[str, list] = {"vmap": [], "processes": []}
    records = {}
    for i, mode in enumerate(order):
        start = time.perf_counter()
        records[mode] = sweep.run(c, workdir / f"{mode}_{i}", grid, mode, log=quiet)
        times[mode].append(time.perf_counter() - start)
    seconds = {mode: float(np.mean(t)) for mode, t in times.items()}
    diff = max(
        abs(a["eval"]["eval_loss"] - b["eval"]["eval_loss"])
        for a, b in zip(records["vmap"]["lanes"], records["processes"]["lanes"], strict=True)
    )
    return {
        "vmap_s": round(seconds["vmap"], 1),
        "sequential_s": round(seconds["processes"], 1),
        "each_s": {mode: [round(x, 1) for x in t] for mode, t in times.items()},
        "speedup": round(seconds["processes"] / seconds["vmap"], 2),
        "max_eval_loss_diff": diff,
        "best_eval_loss": min(lane["eval"]["eval_loss"] for lane in records["vmap"]["lanes"]),
    }


if __name__ == "__main__":
    main()
