"""Argument checks shared by the optimizer factories.

Every factory validates its hyper-parameters when it is called, so a bad value fails where the
user wrote it, with a message that names the argument and the allowed range, instead of
surfacing later as a NaN or a shape error deep inside a jitted step.

Values that are traced (for example hyper-parameters injected by `optax.inject_hyperparams`
and read inside `jax.jit`) cannot be inspected and are accepted as they are.
"""

import math
from collections.abc import Iterable
from typing import Any

import jax
import numpy as np


def concrete_scalar(value: Any) -> float | None:
    """Returns `value` as a Python float when it is a concrete scalar, else None."""
    if isinstance(value, jax.core.Tracer):
        return None
    if isinstance(value, bool):
        return float(value)
    try:
        array = np.asarray(value)
    except Exception:  # noqa: BLE001 - anything that is not array-like is not a scalar
        return None
    if array.shape != () or not np.issubdtype(array.dtype, np.number):
        return None
    return float(array)


def is_zero(value: Any) -> bool:
    """True only for a concrete 0 (a traced value, e.g. from inject_hyperparams, is not)."""
    number = concrete_scalar(value)
    return number is not None and number == 0.0


def check_learning_rate(learning_rate: Any, name: str = "learning_rate") -> None:
    """A learning rate is a finite number >= 0 or a schedule (a callable of the step)."""
    if callable(learning_rate):
        return
    value = concrete_scalar(learning_rate)
    if value is None:
        if isinstance(learning_rate, jax.core.Tracer):
            return
        raise ValueError(
            f"{name} must be a finite number >= 0 or a schedule (a callable of the step), "
            f"got {learning_rate!r}"
        )
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")


def check_range(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Checks `low <= value <= high` (or strict where `*_open`) and finiteness."""
    if isinstance(value, jax.core.Tracer):
        return
    number = concrete_scalar(value)
    if number is None:
        raise ValueError(f"{name} must be a number, got {value!r}")
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    allowed = f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"
    bad = not math.isfinite(number)
    if low is not None:
        bad |= number <= low if low_open else number < low
    if high is not None:
        bad |= number >= high if high_open else number > high
    if bad:
        raise ValueError(f"{name} must be a finite number in {allowed}, got {number}")


def check_beta(name: str, value: Any) -> None:
    """A moment decay rate lies in [0, 1)."""
    check_range(name, value, 0.0, 1.0, high_open=True)


def check_non_negative(name: str, value: Any, *, schedule_ok: bool = False) -> None:
    """A finite number >= 0 (or, with `schedule_ok`, a schedule: a callable of the step)."""
    if schedule_ok and callable(value):
        return
    check_range(name, value, 0.0, None)


def check_float_dtype(name: str, value: Any) -> None:
    """None or a floating-point dtype (float16 up to float64)."""
    if value is None:
        return
    try:
        dtype = np.dtype(jax.dtypes.canonicalize_dtype(value))
    except TypeError:
        dtype = None
    if dtype is None or not jax.numpy.issubdtype(dtype, jax.numpy.floating):
        raise ValueError(f"{name} must be None or a floating-point dtype, got {value!r}")


def check_choice(name: str, value: Any, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
