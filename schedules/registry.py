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
    "uba": schedules.uba,
    "warmup": schedules.warmup,  # warm-up, then constant: the main branch of a WSD run
    "wsd": schedules.wsd,
    "wsd_s": schedules.wsd_s,
}


def names() -> list[str]:
    return sorted(SCHEDULES)


def build(name: str, total_steps: int | None = None, **kwargs: Any) -> Callable:
    """The schedule `name` built from `kwargs` (plus `total_steps` where it takes one)."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of: {', '.join(names())}")
    factory = SCHEDULES[name]
    if "total_steps" in inspect.signature(factory).parameters and "total_steps" not in kwargs:
        kwargs["total_steps"] = total_steps
    return factory(**kwargs)
