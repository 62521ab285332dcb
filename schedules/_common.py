"""Private helpers shared by the schedule modules: steps, phases, warm-up and decay values.

Not API: the public schedules live in `_basic`, `_wsd`, `_budget`, `_power`, `_infinite`,
`_refine` and `_compose`, and argument checks in `_validation`. Everything here runs inside a
traced schedule and follows the package conventions (see `schedules._basic`):

* the step is the absolute, 0-based update count; Python ints, integer and float arrays;
* values come out in the default float dtype (float32, or float64 under x64);
* integer steps are compared with phase boundaries, and reduced to "steps into the phase" and
  "steps left in the phase", in integer arithmetic before any cast to float.
"""

import math
from collections.abc import Callable

import jax.numpy as jnp

from schedules._validation import check_float, check_int, check_le, check_peak_and_warmup

# Decay shapes that are an affine map of a fixed profile f, f = 1 at p = 0 and 0 at p = 1.
# Each is written in terms of the remaining fraction q = 1 - p where it has a factor (1 - p),
# and q is computed from the integer steps left, so values near the end of a long decay keep
# their relative precision in float32 (no cancellation in 1 - p).
_PROFILES: dict[str, Callable] = {
    "linear": lambda p, q: q,
    "cosine": lambda p, q: jnp.square(jnp.sin(0.5 * jnp.pi * q)),  # (1 + cos(pi p)) / 2
    "1-sqrt": lambda p, q: q / (1.0 + jnp.sqrt(p)),  # 1 - sqrt(p)
    "1-square": lambda p, q: q * (2.0 - q),  # 1 - p^2
    "rex": lambda p, q: 2.0 * q / (1.0 + q),  # (1 - p) / (1 - p / 2)
}


def _float_dtype():
    """The default float dtype at trace time (float32, or float64 under x64)."""
    return jnp.result_type(float)


def _as_step(step):
    """The step as a jax array; bools become int32."""
    step = jnp.asarray(step)
    if step.dtype == jnp.bool_:
        step = step.astype(jnp.int32)
    return step


def _is_int(step) -> bool:
    return jnp.issubdtype(step.dtype, jnp.integer)


def _shift(step, by: int):
    """`max(step - by, 0)`; integer arithmetic for integer steps (no wrap for by >= 0)."""
    if by >= 0:
        return jnp.maximum(step, by) - by
    return jnp.maximum(step + (-by), 0)


def _elapsed(step, start: int, length: int | None = None):
    """`clip(step - start, 0, length)` as a float; exact integer arithmetic for integer steps."""
    hi = None if length is None else start + length
    if _is_int(step):
        return (jnp.clip(step, start, hi) - start).astype(_float_dtype())
    return jnp.clip(step.astype(_float_dtype()), start, hi) - start


def _progress(step, start: int, length: int):
    """Progress through the phase [start, start + length], clipped to [0, 1]; length >= 1."""
    return _elapsed(step, start, length) / length


def _phase(step, start, length):
    """(p, q): progress through [start, start + length] and the fraction left, q = 1 - p.

    Both come from exact integer step counts for integer steps; `start` and `length` may
    be Python ints or integer arrays (one per element of `step`).
    """
    dtype = _float_dtype()
    end = start + length
    if _is_int(step):
        clipped = jnp.clip(step, start, end)
        done, left = (clipped - start).astype(dtype), (end - clipped).astype(dtype)
    else:
        clipped = jnp.clip(step.astype(dtype), start, end)
        done, left = clipped - start, end - clipped
    length = jnp.asarray(length, dtype)
    return done / length, left / length


def _warmup_value(p, init: float, peak: float, shape: str):
    """Warm-up from `init` (p = 0) to `peak` (p = 1)."""
    if shape == "linear":
        value = init + (peak - init) * p
    elif shape == "cosine":
        value = init + (peak - init) * 0.5 * (1.0 - jnp.cos(jnp.pi * p))
    else:  # exponential (geometric), init > 0 checked at construction
        value = jnp.exp(math.log(init) + p * (math.log(peak) - math.log(init)))
    return jnp.clip(value, init, peak)


def _decay_value(p, q, start, end, shape: str):
    """Decay from `start` (p = 0) to `end` (p = 1), q = 1 - p; `start` may be traced."""
    dtype = p.dtype
    start = jnp.asarray(start, dtype)
    end = jnp.asarray(end, dtype)
    if shape in _PROFILES:
        value = end + (start - end) * _PROFILES[shape](p, q)
    else:
        tiny = jnp.finfo(dtype).tiny
        safe_start = jnp.maximum(start, tiny)
        if shape == "exponential":  # geometric: start * (end / start) ** p
            log_start, log_end = jnp.log(safe_start), jnp.log(jnp.maximum(end, tiny))
            value = jnp.exp(log_start + p * (log_end - log_start))
        else:  # inverse-proportional: start / (1 + p (start / end - 1)); end > 0 checked
            value = safe_start * end / (end + p * (safe_start - end))
    value = jnp.clip(value, jnp.minimum(start, end), jnp.maximum(start, end))
    return jnp.where(p <= 0.0, start, jnp.where(p >= 1.0, end, value))


def _with_warmup(step, warmup_steps: int, init: float, peak: float, shape: str, after):
    """`after(step)` preceded by a warm-up of `warmup_steps` steps from `init` to `peak`."""
    value = after(step)
    if warmup_steps == 0:
        return value
    p = _progress(step, 0, warmup_steps)
    return jnp.where(step < warmup_steps, _warmup_value(p, init, peak, shape), value)


def _warmup_then_decay(
    where: str,
    peak,
    total_steps,
    end_value,
    warmup_steps,
    init_value,
    warmup_shape,
    decay_value: Callable,
) -> Callable:
    """Validates the common arguments; returns warm-up then `decay_value(p, q, peak, end)`."""
    peak, warmup_steps, init_value, warmup_shape = check_peak_and_warmup(
        where, peak, warmup_steps, init_value, warmup_shape
    )
    total_steps = check_int(where, "total_steps", total_steps, 1)
    end_value = check_float(where, "end_value", end_value, 0.0, peak)
    check_le(where, "warmup_steps", warmup_steps, "total_steps - 1", total_steps - 1)
    decay_steps = total_steps - warmup_steps

    def schedule(step):
        step = _as_step(step)

        def after(s):
            p, q = _phase(s, warmup_steps, decay_steps)
            return decay_value(p, q, peak, end_value)

        return _with_warmup(step, warmup_steps, init_value, peak, warmup_shape, after)

    return schedule
