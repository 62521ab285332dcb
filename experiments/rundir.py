"""A run directory's own records: the config it ran and the guard against mixing runs.

`config.json` is written by the run's main process when training starts; a later run in the
same workdir must be a resumption of that run (`check_config`), so two experiments never
write into one directory. A fork's `lineage.json` (written by `experiments.checkpointing`)
carries the config diff against its parent, from `lineage_fields`.
"""

from __future__ import annotations

import json
import math
import pathlib

import jax
import ml_collections

import schedules.registry
from experiments.configs import common

CONFIG_FILE = "config.json"


def check_config(workdir: pathlib.Path, config: ml_collections.ConfigDict) -> None:
    """Refuses a workdir that holds another run: only a resumption of the same run may reuse it.

    `steps` may grow when the schedule does not depend on it (a WSD main branch at constant
    learning rate is extended this way); keys that only change logging may differ.
    """
    path = pathlib.Path(workdir) / CONFIG_FILE
    if not path.exists():
        return
    differences = common.diff(json.loads(path.read_text()), config.to_dict())
    for key in common.WATCH_ONLY_KEYS:
        differences.pop(key, None)
    steps_change = differences.pop("steps", None)
    if steps_change is not None:
        takes_total = schedules.registry.takes_total_steps(config.schedule.name)
        if takes_total and "total_steps" not in config.schedule.kwargs:
            differences["steps"] = steps_change
    if differences:
        lines = "\n".join(f"  {k}: {old!r} -> {new!r}" for k, (old, new) in differences.items())
        raise ValueError(
            f"workdir {workdir} holds another run's config; these keys differ:\n{lines}\n"
            "Use a new --workdir, or fork this run with --config.fork.parent."
        )


def write_config(workdir: pathlib.Path, config: ml_collections.ConfigDict) -> None:
    (pathlib.Path(workdir) / CONFIG_FILE).write_text(config.to_json_best_effort(indent=2) + "\n")


def read_config(workdir: str | pathlib.Path) -> dict:
    return json.loads((pathlib.Path(workdir) / CONFIG_FILE).read_text())


def lineage_fields(config: ml_collections.ConfigDict) -> dict | None:
    """Extra fields of a fork's lineage record: the config diff against its parent."""
    if not config.fork.parent:
        return None
    parent = pathlib.Path(config.fork.parent) / CONFIG_FILE
    if not parent.exists():
        return None
    return {"config_diff": common.diff(json.loads(parent.read_text()), config)}


def num_params(state) -> int:
    """Parameter count of a (possibly abstract) state's `params`."""
    return sum(math.prod(x.shape) for x in jax.tree.leaves(state["params"]))
