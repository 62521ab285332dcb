"""Runs one experiment config.

    python -m experiments.main --config=experiments/configs/lm_adamw_cosine.py --workdir=runs/x \
        [--config.optimizer.name=lamb --config.steps=500 ...]

The config is locked: overriding a key it does not have is an error. When several processes
run the same command (a TPU pod slice, or `JAX_NUM_PROCESSES` / a coordinator address set in
the environment), `jax.distributed.initialize()` joins them first, and the mesh spans every
process's devices.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "an experiment config file", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "the run directory (checkpoints, logs)")
flags.mark_flags_as_required(["config", "workdir"])

# Set by launchers of multi-process runs (tpu/run.sh, tests of multi-process training).
_MULTIPROCESS_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "TPU_WORKER_HOSTNAMES")


def maybe_initialize_distributed() -> None:
    """Joins a multi-process run when the environment describes one; no-op otherwise."""
    if not any(os.environ.get(name) for name in _MULTIPROCESS_ENV):
        return
    import jax

    kwargs = {}
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        kwargs = {
            "coordinator_address": os.environ["JAX_COORDINATOR_ADDRESS"],
            "num_processes": int(os.environ["JAX_NUM_PROCESSES"]),
            "process_id": int(os.environ["JAX_PROCESS_ID"]),
        }
    jax.distributed.initialize(**kwargs)


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    maybe_initialize_distributed()
    from experiments import train  # after distributed init: importing jax code is fine either way

    summary = train.train(_CONFIG.value, _WORKDIR.value)
    print(json.dumps({k: summary[k] for k in ("step", "eval", "target_reached")}), file=sys.stdout)


if __name__ == "__main__":
    app.run(main)
