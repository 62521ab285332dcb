"""Schedules by name, so experiment configs choose them as `name` plus keyword arguments.

`build(name, total_steps, **kwargs)` passes the run's `total_steps` to the schedules that take
one (cosine, linear decay, WSD, REX, UBA, ...) unless the config sets it, so a config can change
its budget in one place.

Example:
  >>> import schedules.registry
  >>> lr = schedules.registry.build("cosine", total_steps=100, peak=1.0, warmup_steps=10)
  >>> round(float(lr(10)), 4)
  1.0
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import schedules

SCHEDULES: dict[str, Callable[..., Callable]] = {
    "constant": schedules.constant,
    "cosine": schedules.cosine,
    "exponential": schedules.exponential,
    "infinite": schedules.infinite,
    "linear_decay": schedules.linear_decay,
    "polynomial": schedules.polynomial,
    "power": schedules.power,
    "rewarm": schedules.rewarm,
    "rex": schedules.rex,
    "rsqrt": schedules.rsqrt,
    "table": schedules.table,  # per-step rates, e.g. a law-optimal schedule
    "uba": schedules.uba,
    "warmup": schedules.warmup,  # warm-up, then constant: the main branch of a WSD run
    "wsd": schedules.wsd,
    "wsd_s": schedules.wsd_s,
}


def names() -> list[str]:
    return sorted(SCHEDULES)


def get(name: str) -> Callable[..., Callable]:
    """The factory of `name`; an unknown name is a ValueError that lists the choices."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of: {', '.join(names())}")
    return SCHEDULES[name]


def takes_total_steps(name: str) -> bool:
    """Whether schedule `name` depends on the run length (cosine does, a warm-up does not)."""
    return "total_steps" in inspect.signature(get(name)).parameters


def accepted_kwargs(name: str) -> tuple[str, ...]:
    """The keyword arguments schedule `name` takes."""
    return tuple(inspect.signature(get(name)).parameters)


def check_kwargs(name: str, kwargs: dict) -> None:
    """A ValueError naming every argument schedule `name` does not take, and those it does."""
    unknown = sorted(set(kwargs) - set(accepted_kwargs(name)))
    if unknown:
        raise ValueError(
            f"schedule {name!r} takes no argument {', '.join(unknown)}; "
            f"it takes: {', '.join(accepted_kwargs(name))}"
        )


def build(name: str, total_steps: int | None = None, **kwargs: Any) -> Callable:
    """The schedule `name` built from `kwargs` (plus `total_steps` where it takes one)."""
    if takes_total_steps(name) and "total_steps" not in kwargs:
        kwargs["total_steps"] = total_steps
    return get(name)(**kwargs)
