"""What the training loop costs on top of its jitted step: `train.train` against a bare loop.

    python -m experiments.benchmarks.loop_overhead [--rounds 5] [--steps 60] [--devices 1]

Both arms run the char-LM config (`experiments/configs/lm.py`) for `--steps` steps:

* "loop": `train.train` in a fresh workdir, as `experiments.main` runs it (batch placement,
  loss checks, throughput records every `log_every` = 10 steps, metrics files, the checkpoint
  decisions; evals and checkpoints only at the end). Its time is the `seconds` between its
  step-10 and its last train record, read back from `metrics.jsonl`, so compilation, the
  first steps, the final eval and the final checkpoint are not in it.
* "bare": the same program's jitted step (`train.build(...).step_fn`) called on one batch
  already on the devices, waiting for each step (the loop waits for every step on the CPU
  backend, DESIGN.md), timed over the same steps.

The two arms alternate in every round and the overhead is the median over rounds of the
paired ratio loop/bare, so slow drifts of a shared machine cancel out. Timings are never
asserted in tests; the numbers go into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time

FIRST_TIMED = 10  # the loop's first train record (log_every); earlier steps include compiling


def _config(steps: int):
    from experiments.configs import lm

    config = lm.get_config()
    config.steps = steps
    config.log_every = FIRST_TIMED
    config.eval_every = 0
    config.checkpoint.every = 0
    config.progress_bar = False
    config.mesh.data, config.mesh.fsdp = -1, 1
    return config


def loop_seconds(steps: int, devices) -> float:
    """Seconds `train.train` spends on steps FIRST_TIMED+1 .. `steps` (from its own records)."""
    from experiments import metrics, train

    with tempfile.TemporaryDirectory() as workdir:
        train.train(_config(steps), workdir, devices=devices)
        seconds = {
            r["step"]: r["seconds"] for r in metrics.read_metrics(workdir) if r["split"] == "train"
        }
    return seconds[steps] - seconds[FIRST_TIMED]


def bare_seconds(program, state, batch, steps: int) -> tuple[float, object]:
    tic = time.perf_counter()
    for _ in range(steps):
        state, step_metrics = program.step_fn(state, batch)
        step_metrics["loss"].block_until_ready()
    return time.perf_counter() - tic, state


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=60, help="steps per run (> 10)")
    parser.add_argument("--devices", type=int, default=1, help="devices of the mesh")
    args = parser.parse_args(argv)
    if args.steps <= FIRST_TIMED:
        parser.error(f"--steps must be > {FIRST_TIMED}")

    import jax

    from experiments import train

    devices = jax.devices()[: args.devices]
    program = train.build(_config(args.steps), devices)
    state = program.init(None)
    batch = program.batch(0)
    _, state = bare_seconds(program, state, batch, 2)  # compile
    timed = args.steps - FIRST_TIMED
    ratios, loops, bares = [], [], []
    for _ in range(args.rounds):
        loop = loop_seconds(args.steps, devices)
        bare, state = bare_seconds(program, state, batch, timed)
        loops.append(loop / timed)
        bares.append(bare / timed)
        ratios.append(loop / bare)
    print(
        f"char-LM, {len(devices)} x {devices[0].device_kind} ({platform.processor() or '?'}), "
        f"{timed} timed steps x {args.rounds} rounds"
    )
    print(f"bare jitted step: {statistics.median(bares) * 1e3:.2f} ms/step (median)")
    print(f"train.train loop: {statistics.median(loops) * 1e3:.2f} ms/step (median)")
    print(
        f"loop / bare: {statistics.median(ratios):.3f} (median of paired rounds; "
        f"min {min(ratios):.3f}, max {max(ratios):.3f})"
    )


if __name__ == "__main__":
    main()
