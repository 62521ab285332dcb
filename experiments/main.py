"""Runs one experiment config.

    python -m experiments.main --config=experiments/configs/lm.py --workdir=runs/x \
        [--config.optimizer.name=lamb --config.steps=500 --config.optimizer.kwargs.b1=0.95 ...]

The config is locked: overriding a key it does not have is an error, except the optimizer's
and the schedule's kwargs, which may name any argument of their factory (`experiments.cli`).
A bad config, a NaN loss or Ctrl-C ends the command with one line saying what to do. When
several processes run the same command (a TPU pod slice, or `JAX_NUM_PROCESSES` / a
coordinator address set in the environment), `jax.distributed.initialize()` joins them first,
and the mesh spans every process's devices.
"""

from __future__ import annotations

import json
import sys

from absl import app, flags
from ml_collections import config_flags

from experiments import cli
from experiments.distributed import distributed_kwargs, maybe_initialize_distributed

__all__ = ["distributed_kwargs", "main", "maybe_initialize_distributed"]


def define_flags() -> dict:
    """The command's flags; defined only when run as a command, so importing this module
    never collides with another command's --config."""
    config = config_flags.DEFINE_config_file(
        "config", None, "an experiment config file", lock_config=True
    )
    workdir = flags.DEFINE_string("workdir", None, "the run directory (checkpoints, logs)")
    flags.mark_flags_as_required(["config", "workdir"])
    return {"config": config, "workdir": workdir}


def main(argv, holders: dict, overrides: cli.KwargsOverrides | None = None) -> None:
    config_flag, workdir_flag = holders["config"], holders["workdir"]
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    maybe_initialize_distributed()
    from experiments import train  # after distributed init: importing jax code is fine either way

    def run():
        config = cli.apply_kwargs_overrides(config_flag.value, overrides or cli.KwargsOverrides())
        return train.train(config, workdir_flag.value)

    summary = cli.run_reporting_errors(run)
    print(json.dumps({k: summary[k] for k in ("step", "eval", "target_reached")}), file=sys.stdout)


if __name__ == "__main__":
    cli.run_command(main, define_flags())
