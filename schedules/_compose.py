"""Combinators: join schedules, shift or stretch one, and branch a decay off a base schedule.

With integer steps t and integer boundaries, every shift is done in integer arithmetic:

* `join([s_0, ..., s_n], [b_1, ..., b_n])(t) = s_i(t - b_i)` for b_i <= t < b_{i+1} (b_0 = 0)
* `offset(s, k)(t) = s(max(t - k, 0))`
* `stretch(s, c)(t) = s(t / c)`
* `branch(base, k, D, shape, m)(t) = base(t)` for t < k, then a decay from `base(k)` to m,
  p = min((t - k) / D, 1). It is continuous at k, reaches m at k + D and stays there.

References:
  Hu et al. 2024, "MiniCPM" (arXiv 2404.06395): WSD runs branch their decays off the stable
  phase. Hagele et al. 2024 (arXiv 2405.18392): cooldowns such as 1-sqrt.
"""

import numbers
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from schedules._common import (
    _as_step,
    _at_or_after,
    _decay_value,
    _float_dtype,
    _known,
    _phase,
    _shift,
)
from schedules._validation import (
    check_callable,
    check_decay,
    check_float,
    check_increasing_ints,
    check_int,
)


def join(schedules: Sequence[Callable], boundaries: Sequence[int]) -> Callable:
    """Runs `schedules[i]` on [boundaries[i-1], boundaries[i]), each from its own step 0.

    With b_0 = 0: for b_{i} <= t < b_{i+1}, `s(t) = schedules[i](t - b_i)`. The local step
    `t - b_i` is computed in integer arithmetic for integer steps.

    Args:
      schedules: n >= 1 schedules.
      boundaries: n - 1 strictly increasing steps >= 1.

    Returns:
      A schedule: a jittable function of the 0-based step returning a float scalar.

    Example:
      >>> import schedules
      >>> lr = schedules.join([schedules.warmup(1.0, 10), schedules.linear_decay(1.0, 90)],
      ...                     boundaries=[10])
      >>> [round(float(lr(t)), 4) for t in (5, 10, 55, 100)]
      [0.5, 1.0, 0.5, 0.0]

    References:
      Same semantics as `optax.join_schedules`.
    """
    where = "join"
    if isinstance(schedules, (str, bytes)) or not isinstance(schedules, Sequence):
        raise ValueError(f"{where}: `schedules` must be a non-empty sequence of schedules")
    schedules = tuple(check_callable(where, f"schedules[{i}]", s) for i, s in enumerate(schedules))
    if not schedules:
        raise ValueError(f"{where}: `schedules` must be a non-empty sequence of schedules")
    boundaries = check_increasing_ints(where, "boundaries", boundaries, 1, allow_empty=True)
    if len(boundaries) != len(schedules) - 1:
        raise ValueError(
            f"{where}: `boundaries` must have len(schedules) - 1 = {len(schedules) - 1} "
            f"entries, got {len(boundaries)}"
        )

    def schedule(step):
        step = _as_step(step)
        value = jnp.asarray(schedules[0](step), _float_dtype())
        for fn, b in zip(schedules[1:], boundaries, strict=True):
            piece = jnp.asarray(fn(_shift(step, b)), _float_dtype())
            value = jnp.where(_at_or_after(step, b), piece, value)
        return value

    return schedule


def offset(schedule: Callable, steps: int) -> Callable:
    """Delays a schedule by `steps`: `s(t) = schedule(max(t - steps, 0))`.

    A negative `steps` advances it: `offset(warmup(peak, W), -1)` is the `(t + 1) / W`
    warm-up of the schedule-free code (the peak is reached at t = W - 1).

    Args:
      schedule: the schedule to shift.
      steps: an integer; the shifted schedule takes the value `schedule(0)` until step `steps`.

    Returns:
      A schedule: a jittable function of the 0-based step returning a float scalar.

    Example:
      >>> import schedules
      >>> lr = schedules.offset(schedules.warmup(1.0, 4), -1)
      >>> [float(lr(t)) for t in range(5)]
      [0.25, 0.5, 0.75, 1.0, 1.0]

    References:
      None; a convenience.
    """
    base = check_callable("offset", "schedule", schedule)
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral):
        raise ValueError(f"offset: `steps` must be an integer (any sign), got {steps!r}")
    steps = int(steps)

    def shifted(step):
        step = _as_step(step)
        return jnp.asarray(base(_shift(step, steps)), _float_dtype())

    return shifted


def stretch(schedule: Callable, factor: float) -> Callable:
    """Stretches a schedule in time: `s(t) = schedule(t / factor)` (a float step).

    `stretch(cosine(peak, 100), 3.0)` is a cosine over 300 steps. The wrapped schedule is
    called with a float step, so it must accept one (all of this package's schedules do).

    Args:
      schedule: the schedule to stretch.
      factor: > 0; above 1 slows the schedule down.

    Returns:
      A schedule: a jittable function of the 0-based step returning a float scalar.

    Example:
      >>> import schedules
      >>> lr = schedules.stretch(schedules.linear_decay(1.0, 10), 3.0)
      >>> round(float(lr(15)), 4)
      0.5

    References:
      None; a convenience.
    """
    base = check_callable("stretch", "schedule", schedule)
    factor = check_float("stretch", "factor", factor, 0.0, open_min=True)

    def stretched(step):
        step = _as_step(step)
        return jnp.asarray(base(step.astype(_float_dtype()) / factor), _float_dtype())

    return stretched


def branch(
    base: Callable,
    at_step: int,
    decay_steps: int,
    shape: str = "linear",
    end_value: ArrayLike = 0.0,
) -> Callable:
    """Follows `base` until step k, then decays from `base(k)` to `end_value` over D steps.

    * t < k: `base(t)`
    * t >= k: `decay(p)` from `base(k)` to `end_value`, p = min((t - k) / D, 1)

    This is how a WSD run branches a decay from a checkpoint of its stable phase; the value
    is continuous at k. Because the step is absolute, a branch restored from a checkpoint
    at count k needs no offset.

    Args:
      base: the schedule followed before the branch point.
      at_step: k, the branch step, >= 0.
      decay_steps: D >= 1.
      shape: one of `schedules.DECAY_SHAPES`.
      end_value: the floor, in [0, base(at_step)]; > 0 for "exponential" and
        "inverse-proportional".

    Returns:
      A schedule: a jittable function of the 0-based step returning a float scalar.

    Example:
      >>> import schedules
      >>> lr = schedules.branch(schedules.constant(1.0), at_step=100, decay_steps=10)
      >>> [round(float(lr(t)), 4) for t in (99, 100, 105, 110, 200)]
      [1.0, 1.0, 0.5, 0.0, 0.0]

    References:
      Hu et al. 2024, "MiniCPM" (arXiv 2404.06395); Hagele et al. 2024 (arXiv 2405.18392).
    """
    where = "branch"
    base = check_callable(where, "base", base)
    at_step = check_int(where, "at_step", at_step, 0)
    decay_steps = check_int(where, "decay_steps", decay_steps, 1)
    shape, end_value = check_decay(where, shape, end_value, shape_name="shape")
    try:  # the value to decay from, when the base can be evaluated concretely
        start_value = float(base(at_step))
    except (TypeError, jax.errors.JAXTypeError):
        start_value = None
    if start_value is not None and _known(end_value) and end_value > start_value:
        raise ValueError(
            f"{where}: `end_value` must be <= base(at_step) = {start_value!r} (a decay), "
            f"got {end_value!r}"
        )

    def schedule(step):
        step = _as_step(step)
        dtype = _float_dtype()
        start = jnp.asarray(base(at_step), dtype)
        p, q = _phase(step, at_step, decay_steps)
        decayed = _decay_value(p, q, start, end_value, shape)
        before = jnp.asarray(base(step), dtype)
        return jnp.where(_at_or_after(step, at_step), decayed, before)

    return schedule
