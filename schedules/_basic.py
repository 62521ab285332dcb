"""Basic schedules: constant, warm-up shapes, linear, cosine, polynomial, rsqrt, exponential.

Conventions shared by every schedule in this package:

* A schedule is a pure function of the absolute, 0-based update count `t` (what optax passes
  as `count`); it accepts Python ints, integer arrays (int32 from optax) and float arrays, and
  works elementwise on arrays of steps.
* It returns the default float dtype (float32, or float64 when x64 is enabled).
* Integer steps are compared with phase boundaries and reduced to "steps into the phase" in
  integer arithmetic before any cast to float, so steps past 2**24 land in the right phase.
* Warm-ups are 0-based: the value is `init_value` at t = 0 and reaches the peak at t = W. The
  `(t + 1) / W` convention of the schedule-free code is `schedules.offset(s, -1)`.
* Decays over D steps reach `end_value` at the end of the window (t = start + D) and stay there.

Shapes, for progress p in [0, 1] after a warm-up of W steps, from `peak` to a floor m:
linear `m + (peak - m)(1 - p)`; cosine `m + (peak - m)(1 + cos(pi p)) / 2`; polynomial
`m + (peak - m)(1 - p)^k`; with no horizon, rsqrt `peak sqrt(tau / (tau + t - W))` and
exponential `m + (peak - m) 0.5^((t - W) / half_life)`. Warm-ups go from `init_value` to
`peak` linearly, along a half cosine, or geometrically.

References:
  Defazio, Cutkosky, Mehta, Mishchenko 2023 (arXiv 2310.07831): linear decay to zero is the
  worst-case optimal last-iterate schedule. Loshchilov and Hutter 2017 (arXiv 1608.03983):
  cosine. Goyal et al. 2017 (arXiv 1706.02677): gradual warm-up.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax.numpy as jnp

from schedules._validation import (
    check_decay_shape,
    check_float,
    check_int,
    check_le,
    check_warmup,
)

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


# ----------------------------------------------------------------------------------------
# Private helpers, shared by the other modules of the package.
# ----------------------------------------------------------------------------------------


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
    peak = check_float(where, "peak", peak, 0.0)
    total_steps = check_int(where, "total_steps", total_steps, 1)
    end_value = check_float(where, "end_value", end_value, 0.0, peak)
    warmup_steps, init_value, warmup_shape = check_warmup(
        where, warmup_steps, init_value, peak, warmup_shape
    )
    check_le(where, "warmup_steps", warmup_steps, "total_steps - 1", total_steps - 1)
    decay_steps = total_steps - warmup_steps

    def schedule(step):
        step = _as_step(step)

        def after(s):
            p, q = _phase(s, warmup_steps, decay_steps)
            return decay_value(p, q, peak, end_value)

        return _with_warmup(step, warmup_steps, init_value, peak, warmup_shape, after)

    return schedule


# ----------------------------------------------------------------------------------------
# Public schedules.
# ----------------------------------------------------------------------------------------


def constant(value: float) -> Callable:
    """A constant learning rate.

    `s(t) = value` for every step.

    Args:
      value: the learning rate, >= 0.

    Returns:
      A schedule: a jittable function of the 0-based step returning a float scalar.

    Example:
      >>> import schedules
      >>> lr = schedules.constant(0.1)
      >>> round(float(lr(123)), 6)
      0.1

    References:
      Standard; no single source.
    """
    value = check_float("constant", "value", value, 0.0)

    def schedule(step):
        step = _as_step(step)
        return jnp.full(step.shape, value, _float_dtype())

    return schedule


def warmup(
    peak: float,
    warmup_steps: int,
    init_value: float = 0.0,
    shape: str = "linear",
) -> Callable:
    """A warm-up from `init_value` to `peak` over `warmup_steps` steps, then constant.

    With p = min(t / W, 1) (0-based: the value is `init_value` at t = 0, `peak` at t = W):

    * linear: `init + (peak - init) p`
    * cosine: `init + (peak - init) (1 - cos(pi p)) / 2`
    * exponential: `init (peak / init)^p` (geometric; needs init > 0)

    Args:
      peak: the value reached at step `warmup_steps`, >= 0.
      warmup_steps: W, an integer >= 0 (0 gives the constant `peak`).
      init_value: the value at step 0, in [0, peak].
      shape: one of `WARMUP_SHAPES`.

    Returns:
      A schedule: a jittable function of the 0-based step returning a float scalar.

    Example:
      >>> import schedules
      >>> lr = schedules.warmup(1.0, warmup_steps=4)
      >>> [float(lr(t)) for t in range(6)]
      [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]

    References:
      Goyal et al. 2017, "Accurate, Large Minibatch SGD" (arXiv 1706.02677): gradual warm-up.
    """
    where = "warmup"
    peak = check_float(where, "peak", peak, 0.0)
    warmup_steps, init_value, shape = check_warmup(where, warmup_steps, init_value, peak, shape)

    def schedule(step):
        step = _as_step(step)

        def after(s):
            return jnp.full(s.shape, peak, _float_dtype())

        return _with_warmup(step, warmup_steps, init_value, peak, shape, after)

    return schedule


def linear_decay(
    peak: float,
    total_steps: int,
    end_value: float = 0.0,
    warmup_steps: int = 0,
    init_value: float = 0.0,
    warmup_shape: str = "linear",
) -> Callable:
    """Warm-up, then linear decay from `peak` to `end_value` at step `total_steps`.

    With p = (t - W) / (T - W) clipped to [0, 1]: `s(t) = end + (peak - end)(1 - p)` after the
    warm-up. Linear decay to zero is the worst-case optimal last-iterate schedule of Defazio
    et al., and matches or beats cosine in their evaluation.

    Args:
      peak: the value after warm-up, >= 0.
      total_steps: T, the step at which `end_value` is reached, >= 1.
      end_value: the floor, in [0, peak].
      warmup_steps: W, in [0, T - 1].
      init_value: the value at step 0 when W > 0, in [0, peak].
      warmup_shape: one of `WARMUP_SHAPES`.

    Returns:
      A schedule: a jittable function of the 0-based step returning a float scalar.

    Example:
      >>> import schedules
      >>> lr = schedules.linear_decay(1.0, total_steps=10)
      >>> [round(float(lr(t)), 2) for t in (0, 5, 10, 20)]
      [1.0, 0.5, 0.0, 0.0]

    References:
      Defazio, Cutkosky, Mehta, Mishchenko 2023, "When, Why and How Much? Adaptive Learning
      Rate Scheduling by Refinement" (arXiv 2310.07831).
    """
    return _warmup_then_decay(
        "linear_decay",
        peak,
        total_steps,
        end_value,
        warmup_steps,
        init_value,
        warmup_shape,
        lambda p, q, a, b: _decay_value(p, q, a, b, "linear"),
    )


def cosine(
    peak: float,
    total_steps: int,
    end_value: float = 0.0,
    warmup_steps: int = 0,
    init_value: float = 0.0,
    warmup_shape: str = "linear",
) -> Callable:
    """Warm-up, then cosine decay from `peak` to `end_value` at step `total_steps`.

    With p = (t - W) / (T - W) clipped to [0, 1]:
    `s(t) = end + (peak - end) (1 + cos(pi p)) / 2` after the warm-up.

    Args:
      peak: the value after warm-up, >= 0.
      total_steps: T, the step at which `end_value` is reached, >= 1.
      end_value: the floor, in [0, peak].
      warmup_steps: W, in [0, T - 1].
      init_value: the value at step 0 when W > 0, in [0, peak].
      warmup_shape: one of `WARMUP_SHAPES`.

    Returns:
      A schedule: a jittable function of the 0-based step returning a float scalar.

    Example:
      >>> import schedules
      >>> lr = schedules.cosine(1.0, total_steps=110, warmup_steps=10)
      >>> [round(float(lr(t)), 4) for t in (0, 5, 10, 60, 110)]
      [0.0, 0.5, 1.0, 0.5, 0.0]

    References:
      Loshchilov and Hutter 2017, "SGDR: Stochastic Gradient Descent with Warm Restarts"
      (arXiv 1608.03983).
    """
    return _warmup_then_decay(
        "cosine",
        peak,
        total_steps,
        end_value,
        warmup_steps,
        init_value,
        warmup_shape,
        lambda p, q, a, b: _decay_value(p, q, a, b, "cosine"),
    )


def polynomial(
    peak: float,
    total_steps: int,
    power: float = 2.0,
    end_value: float = 0.0,
    warmup_steps: int = 0,
    init_value: float = 0.0,
    warmup_shape: str = "linear",
) -> Callable:
    """Warm-up, then polynomial decay `end + (peak - end)(1 - p)^power`.

    p = (t - W) / (T - W) clipped to [0, 1]. LARS uses power 2; the refinement paper fits
    powers from 0.8 to 3 to its refined schedules.

    Args:
      peak: the value after warm-up, >= 0.
      total_steps: T, the step at which `end_value` is reached, >= 1.
      power: the exponent k > 0 (1 is linear decay).
      end_value: the floor, in [0, peak].
      warmup_steps: W, in [0, T - 1].
      init_value: the value at step 0 when W > 0, in [0, peak].
      warmup_shape: one of `WARMUP_SHAPES`.

    Returns:
      A schedule: a jittable function of the 0-based step returning a float scalar.

    Example:
      >>> import schedules
      >>> lr = schedules.polynomial(1.0, total_steps=10, power=2.0)
      >>> round(float(lr(5)), 4)
      0.25

    References:
      You, Gitman, Ginsburg 2017, "Large Batch Training of Convolutional Networks"
      (arXiv 1708.03888).
    """
    power = check_float("polynomial", "power", power, 0.0, open_min=True)

    def decay_value(p, q, start, end):
        return end + (start - end) * jnp.power(q, power)

    return _warmup_then_decay(
        "polynomial",
        peak,
        total_steps,
        end_value,
        warmup_steps,
        init_value,
        warmup_shape,
        decay_value,
    )


def rsqrt(
    peak: float,
    warmup_steps: int = 0,
    timescale: float | None = None,
    init_value: float = 0.0,
    warmup_shape: str = "linear",
) -> Callable:
    """Warm-up, then inverse-square-root decay (no horizon).

    After the warm-up, `s(t) = peak * sqrt(tau / (tau + t - W))`. With the default
    tau = W this is the usual `peak * sqrt(W / t)`, continuous at t = W.

    Args:
      peak: the value at the end of warm-up, >= 0.
      warmup_steps: W, an integer >= 0.
      timescale: tau > 0; defaults to `warmup_steps` (then W must be >= 1).
      init_value: the value at step 0 when W > 0, in [0, peak].
      warmup_shape: one of `WARMUP_SHAPES`.

    Returns:
      A schedule: a jittable function of the 0-based step returning a float scalar.

    Example:
      >>> import schedules
      >>> lr = schedules.rsqrt(1.0, warmup_steps=100)
      >>> [round(float(lr(t)), 4) for t in (50, 100, 400)]
      [0.5, 1.0, 0.5]

    References:
      Vaswani et al. 2017, "Attention Is All You Need" (arXiv 1706.03762).
    """
    where = "rsqrt"
    peak = check_float(where, "peak", peak, 0.0)
    warmup_steps, init_value, warmup_shape = check_warmup(
        where, warmup_steps, init_value, peak, warmup_shape
    )
    if timescale is None:
        if warmup_steps == 0:
            raise ValueError(
                f"{where}: `timescale` must be given (> 0) when `warmup_steps` is 0, "
                "since it defaults to warmup_steps"
            )
        timescale = warmup_steps
    timescale = check_float(where, "timescale", timescale, 0.0, open_min=True)

    def schedule(step):
        step = _as_step(step)

        def after(s):
            return peak * jnp.sqrt(timescale / (timescale + _elapsed(s, warmup_steps)))

        return _with_warmup(step, warmup_steps, init_value, peak, warmup_shape, after)

    return schedule


def exponential(
    peak: float,
    half_life: float,
    end_value: float = 0.0,
    warmup_steps: int = 0,
    init_value: float = 0.0,
    warmup_shape: str = "linear",
) -> Callable:
    """Warm-up, then exponential decay with a half-life, towards `end_value` (no horizon).

    After the warm-up, `s(t) = end + (peak - end) * 0.5 ** ((t - W) / half_life)`. MiniCPM's
    decay `0.5 ** ((s - T) / T_half)` is the case end = 0.

    Args:
      peak: the value at the end of warm-up, >= 0.
      half_life: steps over which `s - end` halves, > 0.
      end_value: the asymptote, in [0, peak].
      warmup_steps: W, an integer >= 0.
      init_value: the value at step 0 when W > 0, in [0, peak].
      warmup_shape: one of `WARMUP_SHAPES`.

    Returns:
      A schedule: a jittable function of the 0-based step returning a float scalar.

    Example:
      >>> import schedules
      >>> lr = schedules.exponential(1.0, half_life=10)
      >>> [float(lr(t)) for t in (0, 10, 20)]
      [1.0, 0.5, 0.25]

    References:
      Hu et al. 2024, "MiniCPM" (arXiv 2404.06395), section 6.2.
    """
    where = "exponential"
    peak = check_float(where, "peak", peak, 0.0)
    half_life = check_float(where, "half_life", half_life, 0.0, open_min=True)
    end_value = check_float(where, "end_value", end_value, 0.0, peak)
    warmup_steps, init_value, warmup_shape = check_warmup(
        where, warmup_steps, init_value, peak, warmup_shape
    )

    def schedule(step):
        step = _as_step(step)

        def after(s):
            factor = jnp.exp2(-_elapsed(s, warmup_steps) / half_life)
            return end_value + (peak - end_value) * factor

        return _with_warmup(step, warmup_steps, init_value, peak, warmup_shape, after)

    return schedule


def _check_decay_shape(where: str, shape: str, name: str = "decay_shape") -> str:
    return check_decay_shape(where, name=name, shape=shape)
