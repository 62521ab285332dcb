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


def _averaged(factory: Callable[..., optax.GradientTransformation]) -> Callable:
    """`factory` wrapped in iterate averaging (DoG's authors: "must be combined with it")."""

    def build(learning_rate, kind="polynomial", gamma=8.0, decay=0.999, **kwargs):
        return optlib.with_averaging(factory(learning_rate, **kwargs), kind, gamma, decay)

    return build


def _sam(learning_rate, base="sgd", base_kwargs=None, **sam_kwargs):
    """SAM around the optimizer named `base`, which gets the learning rate."""
    return optlib.sam(build(base, learning_rate, **(base_kwargs or {})), **sam_kwargs)


def _average_of(opt_state, params):
    del params
    return optlib.averaged_params(opt_state)


OPTIMIZERS: dict[str, OptimizerEntry] = {
    # optax baselines
    "adamw": OptimizerEntry(optax.adamw),
    "nadamw": OptimizerEntry(optax.nadamw),
    "sgd": OptimizerEntry(optax.sgd),
    # optlib
    "dog": OptimizerEntry(optlib.dog),
    "dog_averaged": OptimizerEntry(_averaged(optlib.dog), eval_params=_average_of),
    "lamb": OptimizerEntry(optlib.lamb),
    "lars": OptimizerEntry(optlib.lars),
    "ldog": OptimizerEntry(optlib.ldog),
    "ldog_averaged": OptimizerEntry(_averaged(optlib.ldog), eval_params=_average_of),
    "momo": OptimizerEntry(optlib.momo, needs=("value",)),
    "momo_adam": OptimizerEntry(optlib.momo_adam, needs=("value",)),
    "sam": OptimizerEntry(_sam, needs=("grad_fn",)),
    "schedule_free_adamw": OptimizerEntry(
        optlib.schedule_free_adamw, eval_params=optlib.schedule_free_eval_params
    ),
    "schedule_free_sgd": OptimizerEntry(
        optlib.schedule_free_sgd, eval_params=optlib.schedule_free_eval_params
    ),
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
