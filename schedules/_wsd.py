"""Warmup-stable-decay (WSD) with several decay shapes, and WSD-S.

Decay shapes (`DECAY_SHAPES`), for progress p in [0, 1] through a decay window, from a
start value `a` (the peak) to a floor `m` (`end_value`):

* "linear": `m + (a - m)(1 - p)`
* "cosine": `m + (a - m)(1 + cos(pi p)) / 2`
* "1-sqrt": `m + (a - m)(1 - sqrt(p))` (Hagele et al. 2024)
* "1-square": `m + (a - m)(1 - p^2)`
* "rex": `m + (a - m)(1 - p) / (1 - p / 2)` (Chen et al. 2022)
* "exponential": `a (m / a)^p`, geometric, needs m > 0. MiniCPM's half-life decay
  `0.5^(t / T_half)` over a window of D steps is the case m = a * 0.5^(D / T_half).
* "inverse-proportional" (alias "inverse"): `a / (1 + p (a / m - 1))`, needs m > 0 (the decay
  used in a common WSD-S realisation; with a = 1, m = 0.1 it is 1 / 5.5 at p = 1/2).

References:
  Hu et al. 2024, "MiniCPM" (arXiv 2404.06395), section 4.2: WSD.
  Wen, Li, Wang, Hall, Liang, Ma 2025, "Understanding Warmup-Stable-Decay Learning Rates: A
  River Valley Loss Landscape Perspective" (ICLR 2025, arXiv 2410.05192): WSD-S.
  Hagele et al. 2024 (arXiv 2405.18392): the 1-sqrt cooldown.
"""

from collections.abc import Callable, Sequence

import jax.numpy as jnp
from jax.typing import ArrayLike

from schedules._common import (
    _as_step,
    _at_or_after,
    _decay_value,
    _int_range,
    _is_int,
    _phase,
    _with_warmup,
)
from schedules._validation import (
    check_choice,
    check_decay,
    check_float,
    check_increasing_ints,
    check_int,
    check_ints,
    check_le,
    check_peak_and_warmup,
)


def _resolve_decay_steps(where: str, total: int, decay_steps, decay_fraction) -> int:
    if decay_steps is not None and decay_fraction is not None:
        raise ValueError(
            f"{where}: give at most one of `decay_steps` and `decay_fraction`, got both "
            f"({decay_steps!r}, {decay_fraction!r})"
        )
    if decay_steps is not None:
        return check_int(where, "decay_steps", decay_steps, 1)
    if decay_fraction is None:
        decay_fraction = 0.1
    decay_fraction = check_float(
        where, "decay_fraction", decay_fraction, 0.0, 1.0, open_min=True, static=True
    )
    return max(1, round(decay_fraction * total))


def wsd(
    peak: ArrayLike,
    total_steps: int,
    warmup_steps: int = 0,
    decay_steps: int | None = None,
    decay_fraction: float | None = None,
    decay_shape: str = "linear",
    end_value: ArrayLike = 0.0,
    init_value: ArrayLike = 0.0,
    warmup_shape: str = "linear",
) -> Callable:
    """Warmup-stable-decay: warm-up, a constant stretch at `peak`, then a decay window.

    With T = `total_steps`, W = `warmup_steps` and D decay steps, S = T - D:

    * t < W: warm-up from `init_value` to `peak` (0-based, `peak` at t = W)
    * W <= t < S: `peak`
    * S <= t: `decay(p)` with p = min((t - S) / D, 1), so `end_value` is reached at t = T

    The decay shapes are listed in the module docstring (`schedules.DECAY_SHAPES`). MiniCPM
    reports that decaying over 10% of training is enough (the default), 2.5% is not.
    A WSD run usually branches its decay from a checkpoint of the stable phase:
    `schedules.branch(schedules.warmup(peak, W), at_step=S, decay_steps=D, shape=...)` gives
    the same values as this schedule.

    Args:
      peak: the stable value, >= 0.
      total_steps: T, the step at which `end_value` is reached, >= 1.
      warmup_steps: W >= 0, with W + D <= T.
      decay_steps: D >= 1. At most one of `decay_steps` and `decay_fraction`.
      decay_fraction: D as a fraction of T in (0, 1], rounded (at least 1 step). Defaults to
        0.1 when neither is given.
      decay_shape: one of `schedules.DECAY_SHAPES`.
      end_value: the floor, in [0, peak]; > 0 for "exponential" and
        "inverse-proportional".
      init_value: the value at step 0 when W > 0, in [0, peak].
      warmup_shape: one of `schedules.WARMUP_SHAPES`.

    Returns:
      A schedule: a jittable function of the 0-based step returning a float scalar.

    Example:
      >>> import schedules
      >>> lr = schedules.wsd(1.0, total_steps=100, warmup_steps=10, decay_steps=20)
      >>> [round(float(lr(t)), 4) for t in (5, 10, 79, 80, 90, 100)]
      [0.5, 1.0, 1.0, 1.0, 0.5, 0.0]

    References:
      Hu et al. 2024, "MiniCPM" (arXiv 2404.06395), section 4.2, Eq. 1.
      Hagele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training
      Durations" (arXiv 2405.18392): the 1-sqrt cooldown.
    """
    where = "wsd"
    peak, warmup_steps, init_value, warmup_shape = check_peak_and_warmup(
        where, peak, warmup_steps, init_value, warmup_shape
    )
    total_steps = check_int(where, "total_steps", total_steps, 1)
    decay_shape, end_value = check_decay(where, decay_shape, end_value, peak)
    d = _resolve_decay_steps(where, total_steps, decay_steps, decay_fraction)
    check_le(where, "warmup_steps + decay_steps", warmup_steps + d, "total_steps", total_steps)
    decay_start = total_steps - d

    def schedule(step):
        step = _as_step(step)

        def after(s):
            p, q = _phase(s, decay_start, d)
            return _decay_value(p, q, peak, end_value, decay_shape)

        return _with_warmup(step, warmup_steps, init_value, peak, warmup_shape, after)

    return schedule


def wsd_s(
    peak: ArrayLike,
    checkpoints: Sequence[int],
    warmup_steps: int = 0,
    decay_fraction: float = 0.1,
    decay_steps: int | Sequence[int] | None = None,
    decay_of: str = "cycle",
    decay_shape: str = "linear",
    end_value: ArrayLike = 0.0,
    init_value: ArrayLike = 0.0,
    warmup_shape: str = "linear",
) -> Callable:
    """WSD-S: WSD whose decays are kept, training resumes from each decayed checkpoint.

    With checkpoints C_1 < ... < C_n (C_0 = 0) and decay lengths D_j:

    * t < W: warm-up to `peak`
    * C_{j-1} <= t < C_j - D_j: `peak` (the LR jumps straight back to `peak` at each C_j,
      with no re-warm-up)
    * C_j - D_j <= t < C_j: `decay(p)` with p = (t - C_j + D_j) / D_j, so the checkpoint
      taken at count C_j holds a decayed model
    * t >= C_n: `end_value`

    With one checkpoint this is `wsd(peak, C_1, ...)`. D_j is `decay_fraction` of the cycle
    (`decay_of="cycle"`: D_j = f (C_j - C_{j-1}), so the decays add up to f of the compute)
    or of the compute so far (`decay_of="cumulative"`: D_j = f C_j, later decays are longer,
    as in a common lingua-derived realisation). Which one the paper uses, and its exact decay
    shape and floor, are not verified; that realisation uses the "inverse-proportional"
    shape with a floor m = 0.1 peak, and linear is said to behave similarly.

    Args:
      peak: the stable value, >= 0.
      checkpoints: strictly increasing steps C_j >= 1 at which a decayed model is saved.
      warmup_steps: W >= 0, with W <= C_1 - D_1.
      decay_fraction: f in (0, 1]; D_j is rounded, at least 1 step.
      decay_steps: instead of `decay_fraction`, one int for every D_j or one int per
        checkpoint.
      decay_of: "cycle" or "cumulative", see above.
      decay_shape: one of `schedules.DECAY_SHAPES`.
      end_value: the floor of each decay, in [0, peak]; > 0 for "exponential" and
        "inverse-proportional".
      init_value: the value at step 0 when W > 0, in [0, peak].
      warmup_shape: one of `schedules.WARMUP_SHAPES`.

    Returns:
      A schedule: a jittable function of the 0-based step returning a float scalar.

    Example:
      >>> import schedules
      >>> lr = schedules.wsd_s(1.0, checkpoints=[100, 200], decay_fraction=0.1)
      >>> [round(float(lr(t)), 4) for t in (89, 90, 95, 100, 189, 195, 200)]
      [1.0, 1.0, 0.5, 1.0, 1.0, 0.5, 0.0]

    References:
      Wen, Li, Wang, Hall, Liang, Ma 2025, "Understanding Warmup-Stable-Decay Learning Rates:
      A River Valley Loss Landscape Perspective" (ICLR 2025, arXiv 2410.05192).
    """
    where = "wsd_s"
    peak, warmup_steps, init_value, warmup_shape = check_peak_and_warmup(
        where, peak, warmup_steps, init_value, warmup_shape
    )
    checkpoints = check_increasing_ints(where, "checkpoints", checkpoints, 1)
    decay_of = check_choice(where, "decay_of", decay_of, ("cycle", "cumulative"))
    decay_shape, end_value = check_decay(where, decay_shape, end_value, peak)
    n = len(checkpoints)
    previous = (0,) + checkpoints[:-1]
    if decay_steps is not None:
        if isinstance(decay_steps, Sequence):
            lengths = check_ints(where, "decay_steps", decay_steps, 1, allow_empty=True)
            if len(lengths) != n:
                raise ValueError(
                    f"{where}: `decay_steps` must be one int or one int per checkpoint "
                    f"({n}), got {len(lengths)} values"
                )
        else:
            lengths = (check_int(where, "decay_steps", decay_steps, 1),) * n
        name = "decay_steps"
    else:
        f = check_float(
            where, "decay_fraction", decay_fraction, 0.0, 1.0, open_min=True, static=True
        )
        spans = [c - c0 for c, c0 in zip(checkpoints, previous, strict=True)]
        if decay_of == "cumulative":
            spans = list(checkpoints)
        lengths = tuple(max(1, round(f * span)) for span in spans)
        name = "decay_fraction"
    for j, (c, c0, d) in enumerate(zip(checkpoints, previous, lengths, strict=True)):
        lower = warmup_steps if j == 0 else c0
        if c - d < lower:
            what = "warmup_steps" if j == 0 else f"checkpoints[{j - 1}]"
            raise ValueError(
                f"{where}: `{name}` gives a decay of {d} steps before checkpoints[{j}] = {c}, "
                f"which would start before {what} = {lower}; decays must fit in their cycle"
            )
    starts = tuple(c - d for c, d in zip(checkpoints, lengths, strict=True))

    def schedule(step):
        step = _as_step(step)
        # Index of the cycle the step is in: the number of checkpoints <= step (an integer
        # step never reaches a checkpoint its dtype cannot hold).
        reachable = checkpoints
        if _is_int(step):
            reachable = tuple(c for c in checkpoints if c <= _int_range(step)[1])
        j = jnp.zeros(step.shape, jnp.int32)
        if reachable:
            table = jnp.asarray(reachable, step.dtype)
            j = jnp.sum(step[..., None] >= table, axis=-1, dtype=jnp.int32)
        jc = jnp.minimum(j, n - 1)
        p, q = _phase(step, starts, lengths, index=jc)
        decayed = _decay_value(p, q, peak, end_value, decay_shape)
        value = jnp.where(_at_or_after(step, starts, index=jc), decayed, peak)
        value = jnp.where(j >= n, end_value, value)

        def after(_):
            return value

        return _with_warmup(step, warmup_steps, init_value, peak, warmup_shape, after)

    return schedule
