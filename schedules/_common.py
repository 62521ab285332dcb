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

import jax
import jax.numpy as jnp
import numpy as np

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


def _known(*values) -> bool:
    """Whether every value is a Python number (checked at construction), none traced."""
    return all(isinstance(v, (int, float)) for v in values)


def _on_values(exact: Callable, traced: Callable) -> Callable:
    """`exact` (Python math, float64) on Python numbers, else `traced` (jax)."""
    return lambda *values: exact(*values) if _known(*values) else traced(*values)


# Hyperparameters may be traced (a vmapped sweep over the peak); Python numbers keep the
# float64 arithmetic of the math module, which is what the golden values were taken with.
_log = _on_values(math.log, jnp.log)
_exp = _on_values(math.exp, jnp.exp)
_sqrt = _on_values(math.sqrt, jnp.sqrt)
_min = _on_values(min, jnp.minimum)


def _float_dtype():
    """The default float dtype at trace time (float32, or float64 under x64)."""
    return jnp.result_type(float)


def _as_step(step):
    """The step as a jax array: bools become int32, and an integer that the default integer
    type cannot hold (2**31 and beyond without x64) becomes uint32 where it fits, else a float
    step, instead of wrapping around or overflowing."""
    if isinstance(step, (bool, np.bool_)):
        return jnp.asarray(step, jnp.int32)
    concrete_int = isinstance(step, (int, np.integer)) or (
        isinstance(step, np.ndarray) and step.dtype.kind in "iu"
    )
    if not concrete_int:
        step = jnp.asarray(step)
        return step.astype(jnp.int32) if step.dtype == jnp.bool_ else step
    values = np.asarray(step, dtype=object if isinstance(step, int) else None)
    lo, hi = (int(values.min()), int(values.max())) if values.size else (0, 0)
    native = jax.dtypes.canonicalize_dtype(np.int64 if isinstance(step, int) else values.dtype)
    if np.iinfo(native).min <= lo and hi <= np.iinfo(native).max:
        return jnp.asarray(step)
    if 0 <= lo and hi <= np.iinfo(np.uint32).max:
        return jnp.asarray(values.astype(np.uint32))
    return jnp.asarray(values.astype(np.float64), _float_dtype())


def _is_int(step) -> bool:
    return jnp.issubdtype(step.dtype, jnp.integer)


def _int_range(step) -> tuple[int, int]:
    """The smallest and largest value the integer step's dtype holds."""
    info = jnp.iinfo(step.dtype)
    return int(info.min), int(info.max)


def _clamp(step, boundary: int) -> int:
    """A Python int boundary moved into the range of the integer step's dtype."""
    lo, hi = _int_range(step)
    return min(max(boundary, lo), hi)


def _const(step, value: int):
    """A Python int as an operand next to `step`.

    For an integer step, a constant of its dtype, clamped into its range (jax reads a bare
    Python int as int32, so 2**31 would overflow even next to a uint32 step); for a float
    step, a Python float.
    """
    if _is_int(step):
        return jnp.asarray(_clamp(step, value), step.dtype)
    return float(value)


def _pick(step, values: tuple, index, dtype=None):
    """`values[0]` without an index, else a table of `values` at `index`, as operands next to
    `step`: in its dtype (or `dtype`), integers clamped into its range; Python floats for a
    float dtype without an index.
    """
    dtype = jnp.dtype(dtype or step.dtype)
    if jnp.issubdtype(dtype, jnp.integer):
        values = [_clamp(step, v) for v in values]
    if index is None:
        return jnp.asarray(values[0], dtype) if dtype.kind in "iu" else float(values[0])
    return jnp.asarray(values, dtype)[index]


def _at_or_after(step, boundary, index=None):
    """`step >= boundary`, also when an integer step's dtype cannot hold the boundary.

    A boundary above the dtype's maximum is never reached (int32 steps never reach 2**31);
    comparing the step with it directly would overflow. `boundary` is a Python int, or, with
    `index` an integer array shaped like `step`, a tuple of them (one chosen per element).
    """
    if not _is_int(step):
        return step >= _pick(step, (boundary,) if index is None else boundary, index)
    lo, hi = _int_range(step)
    if index is None:
        if boundary > hi or boundary <= lo:
            return jnp.full(step.shape, boundary <= lo)
        return step >= _const(step, boundary)
    reachable = jnp.asarray([b <= hi for b in boundary])[index]
    return reachable & (step >= _pick(step, boundary, index))


def _before(step, boundary: int):
    """`step < boundary`; see `_at_or_after`."""
    return jnp.logical_not(_at_or_after(step, boundary))


def _shift(step, by: int):
    """`max(step - by, 0)`, exact for integer steps.

    A shift the integer dtype cannot hold gives 0 (a delay past its maximum) or saturates at
    the dtype's maximum (an advance past it), as optax's step counter does; it never wraps.
    """
    if not _is_int(step):
        by = float(by)
        return jnp.maximum(step, by) - by if by >= 0 else jnp.maximum(step + (-by), 0)
    hi = _int_range(step)[1]
    if by > hi:
        return jnp.zeros_like(step)
    if by >= 0:
        return jnp.maximum(step, _const(step, by)) - _const(step, by)
    if -by > hi:
        return jnp.full_like(step, hi)
    advance = _const(step, -by)
    return jnp.maximum(jnp.minimum(step, _const(step, hi + by)) + advance, 0)


def _elapsed(step, start: int, length: int | None = None):
    """`clip(step - start, 0, length)` as a float; exact integer arithmetic for integer steps."""
    dtype = _float_dtype()
    if _is_int(step):
        if start > _int_range(step)[1]:  # never reached: nothing has elapsed
            return jnp.zeros(step.shape, dtype)
        end = _const(step, start + (_int_range(step)[1] if length is None else length))
        start = _const(step, start)
        return (jnp.clip(step, start, end) - start).astype(dtype)
    end = None if length is None else float(start + length)
    return jnp.clip(step.astype(dtype), float(start), end) - float(start)


def _progress(step, start: int, length: int):
    """Progress through the phase [start, start + length], clipped to [0, 1]; length >= 1."""
    return _elapsed(step, start, length) / float(length)


def _phase(step, start, length, index=None):
    """(p, q): progress through [start, start + length] and the fraction left, q = 1 - p.

    `start` and `length` are Python ints (starts >= 0), or, with `index` an integer array
    shaped like `step`, tuples of them: each element of `step` then uses phase `index`.

    For integer steps both come from exact integer step counts: the steps done and the steps
    left are counted in the step's own dtype, between the phase's ends moved into the
    dtype's range; the part of the phase beyond that range (steps left after the dtype's
    maximum) is a Python int added after the cast to float. So a phase that ends at or
    beyond 2**31 works with int32 steps, and one that starts there is simply never entered.
    """
    dtype = _float_dtype()
    starts, lengths = ((start,), (length,)) if index is None else (tuple(start), tuple(length))
    ends = tuple(s + d for s, d in zip(starts, lengths, strict=True))
    if _is_int(step):
        low, high = _pick(step, starts, index), _pick(step, ends, index)
        clipped = jnp.clip(step, low, high)
        done, left = (clipped - low).astype(dtype), (high - clipped).astype(dtype)
        # Steps left beyond the dtype's maximum: end - max, or the whole phase when it starts
        # beyond it (then low = high = max: never entered, q = 1).
        hi = _int_range(step)[1]
        beyond = tuple(e - min(e, hi) - (s - min(s, hi)) for s, e in zip(starts, ends, strict=True))
        if any(beyond):
            left = left + _pick(step, beyond, index, dtype)
    else:
        low, high = _pick(step, starts, index, dtype), _pick(step, ends, index, dtype)
        clipped = jnp.clip(step.astype(dtype), low, high)
        done, left = clipped - low, high - clipped
    length = jnp.asarray(_pick(step, lengths, index, dtype), dtype)
    return done / length, left / length


def _warmup_value(p, init: float, peak: float, shape: str):
    """Warm-up from `init` (p = 0) to `peak` (p = 1)."""
    if shape == "linear":
        value = init + (peak - init) * p
    elif shape == "cosine":
        value = init + (peak - init) * 0.5 * (1.0 - jnp.cos(jnp.pi * p))
    else:  # exponential (geometric), init > 0 checked at construction
        value = jnp.exp(_log(init) + p * (_log(peak) - _log(init)))
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
    return jnp.where(p <= 0.0, start, jnp.where(q <= 0.0, end, value))


def _with_warmup(step, warmup_steps: int, init: float, peak: float, shape: str, after):
    """`after(step)` preceded by a warm-up of `warmup_steps` steps from `init` to `peak`."""
    value = after(step)
    if warmup_steps == 0:
        return value
    p = _progress(step, 0, warmup_steps)
    return jnp.where(_before(step, warmup_steps), _warmup_value(p, init, peak, shape), value)


def _shaped_decay(shape: str) -> Callable:
    """`decay_value(p, q, start, end)` for one of the decay shapes of `_decay_value`."""
    return lambda p, q, start, end: _decay_value(p, q, start, end, shape)


def _warmup_then_decay(
    where, decay_value, peak, total_steps, end_value, warmup_steps, init_value, warmup_shape
) -> Callable:
    """Validates the common arguments; returns warm-up then `decay_value(p, q, peak, end)`.

    The arguments after `decay_value` are those of `schedules.cosine`, in its order.
    """
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
