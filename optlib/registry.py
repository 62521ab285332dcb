"""Optimizers by name, so experiment configs choose them as `name` plus keyword arguments.

Each entry says how to build the optimizer (`factory(learning_rate, **kwargs)`), which extra
arguments its `update` needs from the training loop ("value": the mini-batch loss, as MoMo
takes it; "grad_fn": a gradient function of the params, as SAM's opaque mode takes it), and
how to get the params to evaluate from its state where they differ from the trained ones
(schedule-free's x, an iterate average).

Example:
  >>> import optlib.registry
  >>> opt = optlib.registry.build("lamb", 1e-3, weight_decay=0.01)
  >>> optlib.registry.get("lamb").needs
  ()
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import optax

import optlib


@dataclasses.dataclass(frozen=True)
class OptimizerEntry:
    """How the training loop builds and drives one optimizer."""

    factory: Callable[..., optax.GradientTransformation]
    needs: tuple[str, ...] = ()
    eval_params: Callable[[Any, Any], Any] | None = None


OPTIMIZERS: dict[str, OptimizerEntry] = {
    # optax baselines
    "adamw": OptimizerEntry(optax.adamw),
    "nadamw": OptimizerEntry(optax.nadamw),
    "sgd": OptimizerEntry(optax.sgd),
    # optlib
    "lamb": OptimizerEntry(optlib.lamb),
    "lars": OptimizerEntry(optlib.lars),
    "tvlars": OptimizerEntry(optlib.tvlars),
}


def names() -> list[str]:
    return sorted(OPTIMIZERS)


def get(name: str) -> OptimizerEntry:
    """The entry of `name`; an unknown name is a ValueError that lists the choices."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of: {', '.join(names())}")
    return OPTIMIZERS[name]


def build(
    name: str, learning_rate: optax.ScalarOrSchedule, **kwargs: Any
) -> optax.GradientTransformation:
    """`get(name).factory(learning_rate, **kwargs)`."""
    return get(name).factory(learning_rate, **kwargs)
