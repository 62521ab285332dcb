"""What the probes cost: LM step time with the noise scale and sharpness on, against off.

    python -m experiments.benchmarks.probe_overhead [--rounds 8] [--chunk 100]
        [--microbatches 2] [--sharpness_every 100] [--sharpness_iterations 20] [--devices 2]

Three programs of the LM config (`experiments/configs/lm.py`) are built with `train.build`, the
same gradient accumulation (`--microbatches`) in both, so the only difference is the probes:
"off"; "noise", `probes.noise_scale` (from the microbatches); and "noise + sharpness", also
the sharpness every `--sharpness_every` steps (on the fixed batch of one microbatch,
`--sharpness_iterations` power iterations, and the preconditioned variant: the LM trains with
AdamW). Each round runs `--chunk` steps of each program (in an order rotating between rounds),
the last one's chunk including one sharpness measurement, and waits for every step as the CPU
loop does; the overhead is the median over rounds of the paired ratio of chunk times, so slow
drifts of a shared machine cancel out. Process CPU time (all threads) is reported next to the
wall time: on a machine shared with other jobs it measures the work the probes add.
`--devices N` (N simulated CPU devices, read before jax starts) adds the same comparison with
the noise scale from N data shards instead, on a mesh of data=N without microbatches.
Compilation is not timed. Timings are never asserted in tests; the numbers go into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time


def _programs(microbatches: int, data: int, every: int, iterations: int):
    import jax

    from experiments import train
    from experiments.configs import lm

    programs = {}
    for arm in ARMS:
        config = lm.get_config()
        config.microbatches = microbatches
        config.mesh.data, config.mesh.fsdp = data, 1
        config.probes.noise_scale = arm != "off"
        if arm == "noise + sharpness":
            config.probes.sharpness_every = every
            config.probes.sharpness_iterations = iterations
        programs[arm] = train.build(config, jax.devices()[:data])
    return programs


ARMS = ("off", "noise", "noise + sharpness")


class Arm:
    """One program's state, batches and (for "on") the sharpness batch; `chunk()` times steps."""

    def __init__(self, program, chunk: int):
        from experiments import sharding

        self.program = program
        self.chunk_steps = chunk
        self.state = program.init(None)
        mesh = program.mesh
        self.batches = [sharding.shard_batch(program.workload.batch(i), mesh) for i in range(8)]
        self.sharpness_batch = None
        if program.sharpness_fn is not None:
            self.sharpness_batch = sharding.shard_batch(program.sharpness_batch(), mesh)
        self.step = 0
        self.chunk()  # compile

    def chunk(self) -> tuple[float, float]:
        """(wall seconds, process CPU seconds) of `chunk_steps` steps (+ one sharpness)."""
        import jax

        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(self.chunk_steps):
            self.state, step_metrics = self.program.step_fn(
                self.state, self.batches[self.step % len(self.batches)]
            )
            float(step_metrics["loss"])
            self.step += 1
        if self.sharpness_batch is not None:
            jax.block_until_ready(self.program.sharpness_fn(self.state, self.sharpness_batch))
        return time.perf_counter() - start, time.process_time() - cpu


def measure(programs: dict, rounds: int, chunk: int) -> dict:
    import numpy as np

    arms = {name: Arm(program, chunk) for name, program in programs.items()}
    times = {name: [] for name in arms}
    names = list(arms)
    for i in range(rounds):
        for name in names[i % len(names) :] + names[: i % len(names)]:  # rotating order
            times[name].append(arms[name].chunk())
    times = {k: np.asarray(v) for k, v in times.items()}  # [rounds, (wall, cpu)]
    ratios = {k: v / times["off"] - 1 for k, v in times.items() if k != "off"}
    return {
        "ms_per_step": {k: 1e3 * np.median(v, axis=0) / chunk for k, v in times.items()},
        "overhead": {k: np.median(v, axis=0) for k, v in ratios.items()},
        "overhead_range": {k: (v[:, 0].min(), v[:, 0].max()) for k, v in ratios.items()},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--chunk", type=int, default=100)
    parser.add_argument("--microbatches", type=int, default=2)
    parser.add_argument("--sharpness_every", type=int, default=100)
    parser.add_argument("--sharpness_iterations", type=int, default=20)
    parser.add_argument("--devices", type=int, default=0)
    args = parser.parse_args(argv)
    for name in ("rounds", "chunk", "microbatches", "sharpness_every", "sharpness_iterations"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if args.chunk != args.sharpness_every:
        parser.error("--chunk must equal --sharpness_every (one measurement per chunk)")
    if args.devices:
        if "jax" in sys.modules:
            parser.error("--devices must be read before jax is imported")
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={args.devices}"
    import jax

    setups = {f"microbatches={args.microbatches}": (args.microbatches, 1)}
    if args.devices > 1:
        setups[f"data shards={args.devices}"] = (1, args.devices)
    print(
        f"LM (experiments/configs/lm.py), noise scale on + sharpness every "
        f"{args.sharpness_every} steps ({args.sharpness_iterations} iterations) vs off; "
        f"{args.rounds} rounds of {args.chunk} steps; jax {jax.__version__}, "
        f"{jax.devices()[0].platform} ({platform.processor() or platform.machine()})\n"
    )
    print(
        "| noise-scale source | probes | ms/step (wall) | overhead (wall, median) "
        "| wall range over rounds | CPU ms/step | overhead (CPU time, median) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for label, (microbatches, data) in setups.items():
        programs = _programs(microbatches, data, args.sharpness_every, args.sharpness_iterations)
        result = measure(programs, args.rounds, args.chunk)
        for arm in ARMS:
            wall, spread, cpu = "", "", ""
            if arm != "off":
                low, high = result["overhead_range"][arm]
                wall, cpu = (f"{x:+.1%}" for x in result["overhead"][arm])
                spread = f"{low:+.1%} .. {high:+.1%}"
            ms_wall, ms_cpu = result["ms_per_step"][arm]
            print(
                f"| {label} | {arm} | {ms_wall:.1f} | {wall} | {spread} | {ms_cpu:.1f} | {cpu} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
