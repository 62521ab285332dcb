"""Basic schedules: constant, warm-up shapes, linear, cosine, polynomial, rsqrt, exponential.

Conventions shared by every schedule in this package:

* A schedule is a pure function of the absolute, 0-based update count `t` (what optax passes
  as `count`); it accepts Python ints, integer arrays (int32 from optax; uint32, or int64
  under x64) and float arrays, and works elementwise on arrays of steps.
* It returns the default float dtype (float32, or float64 when x64 is enabled).
* Integer steps are compared with phase boundaries and reduced to "steps into the phase" and
  "steps left" in the step's own integer type before any cast to float, so steps past 2**24
  land in the right phase. Boundaries may lie beyond what the step type holds (2**31 and up
  for int32): such a boundary is never reached, and a phase that ends there counts its steps
  left exactly. A Python int step past int32 is taken as uint32 where it fits, else as a
  float. `stretch` alone calls its schedule with a float step.
* Hyperparameters that set values (peaks, floors, shape parameters) may be jax arrays or
  tracers, so a learning-rate sweep can `jax.vmap` over the factory; concrete ones are checked
  (finite in the default float dtype: 1e39 is rejected in float32). Step counts, and the
  fractions that set them, must be concrete.
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

from collections.abc import Callable

import jax.numpy as jnp
from jax.typing import ArrayLike

from schedules._common import (
    _as_step,
    _elapsed,
    _float_dtype,
    _shaped_decay,
    _warmup_then_decay,
    _with_warmup,
)
from schedules._validation import check_float, check_peak_and_warmup


def constant(value: ArrayLike) -> Callable:
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
    peak: ArrayLike,
    warmup_steps: int,
    init_value: ArrayLike = 0.0,
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
    peak, warmup_steps, init_value, shape = check_peak_and_warmup(
        where, peak, warmup_steps, init_value, shape
    )

    def schedule(step):
        step = _as_step(step)

        def after(s):
            return jnp.full(s.shape, peak, _float_dtype())

        return _with_warmup(step, warmup_steps, init_value, peak, shape, after)

    return schedule


def linear_decay(
    peak: ArrayLike,
    total_steps: int,
    end_value: ArrayLike = 0.0,
    warmup_steps: int = 0,
    init_value: ArrayLike = 0.0,
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
    args = (peak, total_steps, end_value, warmup_steps, init_value, warmup_shape)
    return _warmup_then_decay("linear_decay", _shaped_decay("linear"), *args)


def cosine(
    peak: ArrayLike,
    total_steps: int,
    end_value: ArrayLike = 0.0,
    warmup_steps: int = 0,
    init_value: ArrayLike = 0.0,
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
    args = (peak, total_steps, end_value, warmup_steps, init_value, warmup_shape)
    return _warmup_then_decay("cosine", _shaped_decay("cosine"), *args)


def polynomial(
    peak: ArrayLike,
    total_steps: int,
    power: ArrayLike = 2.0,
    end_value: ArrayLike = 0.0,
    warmup_steps: int = 0,
    init_value: ArrayLike = 0.0,
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

    args = (peak, total_steps, end_value, warmup_steps, init_value, warmup_shape)
    return _warmup_then_decay("polynomial", decay_value, *args)


def rsqrt(
    peak: ArrayLike,
    warmup_steps: int = 0,
    timescale: ArrayLike | None = None,
    init_value: ArrayLike = 0.0,
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
    peak, warmup_steps, init_value, warmup_shape = check_peak_and_warmup(
        where, peak, warmup_steps, init_value, warmup_shape
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
    peak: ArrayLike,
    half_life: ArrayLike,
    end_value: ArrayLike = 0.0,
    warmup_steps: int = 0,
    init_value: ArrayLike = 0.0,
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
    peak, warmup_steps, init_value, warmup_shape = check_peak_and_warmup(
        where, peak, warmup_steps, init_value, warmup_shape
    )
    half_life = check_float(where, "half_life", half_life, 0.0, open_min=True)
    end_value = check_float(where, "end_value", end_value, 0.0, peak)

    def schedule(step):
        step = _as_step(step)

        def after(s):
            factor = jnp.exp2(-_elapsed(s, warmup_steps) / half_life)
            return end_value + (peak - end_value) * factor

        return _with_warmup(step, warmup_steps, init_value, peak, warmup_shape, after)

    return schedule
