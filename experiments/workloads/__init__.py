"""Workloads by name: `make(config)` builds one from its config block.

    import experiments.workloads as workloads
    config = workloads.default_config("lm")   # every key with its default
    config.batch_size = 64
    workload = workloads.make(config)

Each module in `WORKLOADS` exposes `default_config()` (a ConfigDict holding `name`, `seed`,
`batch_size` and every workload-specific key) and `make(config)`; `make` raises ValueError
naming the key when a value is bad or unknown.
"""

from __future__ import annotations

from types import ModuleType

import ml_collections

from experiments.workloads import (
    cnn_mnist1d,
    dro_regression,
    lm,
    logreg,
    mlp_digits,
    quadratic,
    rosenbrock,
)
from experiments.workloads.base import Target, Workload

WORKLOADS: dict[str, ModuleType] = {
    "cnn_mnist1d": cnn_mnist1d,
    "dro_regression": dro_regression,
    "lm": lm,
    "logreg": logreg,
    "mlp_digits": mlp_digits,
    "quadratic": quadratic,
    "rosenbrock": rosenbrock,
}

__all__ = ["WORKLOADS", "Target", "Workload", "default_config", "make", "names"]


def names() -> list[str]:
    """The registered workload names, sorted."""
    return sorted(WORKLOADS)


def _module(name: str) -> ModuleType:
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}; choose one of {names()}")
    return WORKLOADS[name]


def default_config(name: str) -> ml_collections.ConfigDict:
    """The full config block of workload `name`, every key at its default."""
    return _module(name).default_config()


def make(config: ml_collections.ConfigDict) -> Workload:
    """Builds the workload that `config.name` names from its config block."""
    if "name" not in config:
        raise ValueError(f"workload config needs a 'name' (one of {names()})")
    return _module(config.name).make(config)
