"""The keys every experiment config has, and config comparison for lineage records.

Config files start from `base_config(workload)` and change what they need, so every config
has every key the loop reads and a command-line override of a missing key is an error.
"""

from __future__ import annotations

import json
from typing import Any

import ml_collections

from experiments import workloads


def base_config(workload: str) -> ml_collections.ConfigDict:
    """A complete config for `workload` with AdamW + cosine defaults."""
    config = ml_collections.ConfigDict()
    config.workload = workloads.default_config(workload)
    config.steps = 1000
    config.seed = 0  # parameter initialisation; the data order uses workload.seed
    config.optimizer = ml_collections.ConfigDict({"name": "adamw", "kwargs": {"weight_decay": 0.0}})
    # The learning rate: a schedule from `schedules.registry` built with `total_steps=steps`
    # where it takes one. When `branch.at_step >= 0` it is followed until that step and then
    # decayed over `branch.decay_steps` (how a WSD run's decays are branched).
    config.schedule = ml_collections.ConfigDict(
        {
            "name": "cosine",
            "kwargs": {"peak": 1e-3, "warmup_steps": 0},
            "branch": {"at_step": -1, "decay_steps": 0, "shape": "linear", "end_value": 0.0},
        }
    )
    config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1})
    # Gradient accumulation: the batch is split into this many microbatches whose gradients
    # are averaged in one jitted step (the update equals that of the whole batch).
    config.microbatches = 1
    # Measurements of the training dynamics (`experiments.probes`), all off by default. The
    # gradient noise scale B_simple = tr(Sigma) / |G|^2 (EMAs with `noise_scale_decay`) needs
    # gradients at two batch sizes from the step itself: microbatches > 1, or a mesh with
    # data > 1 (each data shard's gradient). The sharpness (top Hessian eigenvalue by
    # `sharpness_iterations` power iterations; also of P^-1 H where the optimizer has an
    # Adam-type second moment) is measured every `sharpness_every` steps (0: never) on a fixed
    # batch of `sharpness_batch_size` examples (0: the microbatch size). `layer_ratios` logs
    # each param's |update| / |param|, what LARS and LAMB control.
    config.probes = ml_collections.ConfigDict(
        {
            "noise_scale": False,
            "noise_scale_decay": 0.99,
            "sharpness_every": 0,
            "sharpness_iterations": 20,
            "sharpness_batch_size": 0,
            "layer_ratios": False,
        }
    )
    config.log_every = 10
    config.eval_every = 100
    config.checkpoint = ml_collections.ConfigDict(
        {"every": 500, "keep": 3, "keep_steps": ml_collections.FieldReference([], list)}
    )
    # Start from another run: its full state at `fork.step`, or its latest params only.
    config.fork = ml_collections.ConfigDict({"parent": "", "step": -1})
    config.init_params_from = ""
    config.progress_bar = True
    return config


# Keys that may differ between a run and its resumption: they change how a run is watched
# and which checkpoints it keeps, not what it computes (a run dir written before a key
# existed resumes too).
WATCH_ONLY_KEYS = (
    "progress_bar",
    "log_every",
    "eval_every",
    "checkpoint.every",
    "checkpoint.keep",
    "checkpoint.keep_steps",
    # Probes measure; they do not change the trajectory (beyond the rounding of how the
    # gradient is summed), so a run may be resumed with them switched on or off.
    "probes.noise_scale",
    "probes.noise_scale_decay",
    "probes.sharpness_every",
    "probes.sharpness_iterations",
    "probes.sharpness_batch_size",
    "probes.layer_ratios",
)


def flatten(config: ml_collections.ConfigDict | dict, prefix: str = "") -> dict[str, Any]:
    """{"optimizer.kwargs.b1": 0.9, ...} with JSON-comparable values."""
    items = config.to_dict() if hasattr(config, "to_dict") else config
    flat = {}
    for key, value in items.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = json.loads(json.dumps(value))
    return flat


def diff(old: dict, new: dict) -> dict[str, list]:
    """{key: [old, new]} for every flattened key whose value differs."""
    old, new = flatten(old), flatten(new)
    return {
        key: [old.get(key), new.get(key)]
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    }
