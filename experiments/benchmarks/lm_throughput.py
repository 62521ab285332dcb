"""Training throughput of an LM config: tokens per second of the real jitted step, and MFU.

    python -m experiments.benchmarks.lm_throughput --config=experiments/configs/lm.py \
        [--steps=20] [--warmup=2] [--devices=1] [--config.key=value ...]

Builds the training program of `--config` (`experiments.train.build`) on the first `--devices`
devices, runs `--warmup` steps (the first compiles), then times `--steps` steps, each placing
its batch (`sharding.shard_step_batch`, so token-file reads count) and waiting for its loss.
Prints the median step time, tokens/s (batch x context / step time), model FLOPs per token by
the 6N + attention formula, and MFU against the device's peak (`experiments.devices`); on CPU
MFU is "n/a" (no peak to compare with).
"""

from __future__ import annotations

import statistics
import sys
import time

from absl import app, flags
from ml_collections import config_flags


def measure(config, devices, steps: int, warmup: int) -> dict:
    import jax

    from experiments import devices as devices_lib
    from experiments import sharding, train

    program = train.build(config, devices)
    workload, mesh = program.workload, program.mesh
    state = program.init(None)
    times = []
    for step in range(warmup + steps):
        tic = time.perf_counter()
        batch = sharding.shard_step_batch(workload, step, mesh)
        state, metrics = program.step_fn(state, batch)
        float(metrics["loss"])
        if step >= warmup:
            times.append(time.perf_counter() - tic)
    seconds = statistics.median(times)
    tokens = workload.batch_size * workload.tokens_per_example
    flops = workload.flops_per_token()
    peak = devices_lib.peak_flops(devices[0])
    mfu = None if peak is None else tokens * flops / seconds / (peak * len(devices))
    return {
        "params": sum(x.size for x in jax.tree.leaves(state["params"])),
        "device": f"{len(devices)} x {devices[0].device_kind}",
        "step_seconds": seconds,
        "tokens_per_step": tokens,
        "tokens_per_second": tokens / seconds,
        "flops_per_token": flops,
        "mfu": mfu,
    }


def main(argv) -> None:
    config_flag = config_flags.DEFINE_config_file("config", None, "an LM config", lock_config=True)
    steps_flag = flags.DEFINE_integer("steps", 20, "timed steps")
    warmup_flag = flags.DEFINE_integer("warmup", 2, "untimed steps first (the first compiles)")
    devices_flag = flags.DEFINE_integer("devices", 1, "devices of the mesh (the first N)")
    flags.mark_flags_as_required(["config"])

    def run(args):
        if len(args) > 1:
            raise app.UsageError(f"unexpected arguments: {args[1:]}")
        import jax

        config = config_flag.value
        with config.unlocked():
            config.mesh.data, config.mesh.fsdp = -1, 1
        result = measure(
            config, jax.devices()[: devices_flag.value], steps_flag.value, warmup_flag.value
        )
        mfu = "n/a" if result["mfu"] is None else f"{result['mfu']:.1%}"
        print(
            f"{result['params']:,} params on {result['device']}: step {result['step_seconds']:.3f}"
            f" s (median of {steps_flag.value}), {result['tokens_per_step']:,} tokens/step, "
            f"{result['tokens_per_second']:,.0f} tokens/s, "
            f"{result['flops_per_token']:.3g} FLOPs/token (6N + attention), MFU {mfu}"
        )

    app.run(run, argv)


if __name__ == "__main__":
    main(sys.argv)
