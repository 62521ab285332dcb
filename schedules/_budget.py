"""Budget-aware schedules: REX, UBA, and the linear scaling rule with gradual warm-up.

With z the progress through the decay, in [0, 1], and `lr = end + (peak - end) s`:

* REX: `s(z) = (1 - z) / (1 - alpha z)`. The paper's profile is alpha = 1/2, which gives
  s = 2(1 - z) / (2 - z).
* UBA: `s = 2 c / (2 phi + (2 - phi) c)` with c = 1 + cos(pi z). phi = 2 is exactly cosine,
  and s(1/2) = 2 / (phi + 2).
* Linear scaling: `k base` with k = batch / base_batch, reached from `base` by a linear
  warm-up, then multiplied by a factor at each step-decay boundary.

References:
  Chen, Wolfe, Kyrillidis 2022, "REX" (MLSys 2022, arXiv 2107.04197).
  Tang, Dong, Zeng, Xun, Lin 2025, "Unified Budget-Aware Learning Rate Schedule"
  (NeurIPS 2025, arXiv 2505.24452).
  Goyal et al. 2017, "Accurate, Large Minibatch SGD" (arXiv 1706.02677).
"""

from collections.abc import Callable, Sequence

import jax.numpy as jnp
from jax.typing import ArrayLike

from schedules._common import (
    _as_step,
    _at_or_after,
    _float_dtype,
    _progress,
    _warmup_then_decay,
)
from schedules._validation import check_float, check_increasing_ints, check_int


def rex(
    peak: ArrayLike,
    total_steps: int,
    end_value: ArrayLike = 0.0,
    alpha: ArrayLike = 0.5,
    warmup_steps: int = 0,
    init_value: ArrayLike = 0.0,
    warmup_shape: str = "linear",
) -> Callable:
    """REX: the "reflected exponential" budgeted decay, per iteration.

    With z = (t - W) / (T - W) clipped to [0, 1]:
    `s(z) = (1 - z) / (1 - alpha z)` and `lr = end + (peak - end) s(z)`.
    The paper's profile `(1 - z) / (1/2 + (1 - z)/2) = 2 (1 - z) / (2 - z)` is alpha = 1/2:
    s(0.5) = 2/3, s(0.9) = 0.1818, s(1) = 0. alpha = 0 is linear decay; alpha -> 1 stays
    high longer; the variant `(1 - z) / ((1 - beta z)/2 + 1/2)` is alpha = beta / 2.

    Args:
      peak: the value after warm-up, >= 0.
      total_steps: T, the step at which `end_value` is reached, >= 1.
      end_value: the floor, in [0, peak].
      alpha: the curvature, < 1 (any negative value decays faster than linear).
      warmup_steps: W, in [0, T - 1].
      init_value: the value at step 0 when W > 0, in [0, peak].
      warmup_shape: one of `schedules.WARMUP_SHAPES`.

    Returns:
      A schedule: a jittable function of the 0-based step returning a float scalar.

    Example:
      >>> import schedules
      >>> lr = schedules.rex(1.0, total_steps=10)
      >>> [round(float(lr(t)), 4) for t in (0, 5, 9, 10)]
      [1.0, 0.6667, 0.1818, 0.0]

    References:
      Chen, Wolfe, Kyrillidis 2022, "REX: Revisiting Budgeted Training with an Improved
      Schedule" (MLSys 2022, arXiv 2107.04197).
    """
    alpha = check_float("rex", "alpha", alpha, None, 1.0, open_max=True)

    def decay_value(p, q, start, end):
        s = q / (1.0 - alpha + alpha * q)  # (1 - p) / (1 - alpha p)
        return jnp.clip(end + (start - end) * s, end, start)

    args = (peak, total_steps, end_value, warmup_steps, init_value, warmup_shape)
    return _warmup_then_decay("rex", decay_value, *args)


def uba(
    peak: ArrayLike,
    total_steps: int,
    phi: ArrayLike,
    end_value: ArrayLike = 0.0,
    warmup_steps: int = 0,
    init_value: ArrayLike = 0.0,
    warmup_shape: str = "linear",
) -> Callable:
    """UBA: the unified budget-aware schedule with one shape parameter phi.

    With theta = pi (t - W) / (T - W) (clipped to [0, pi]) and c = 1 + cos(theta):
    `s = 2 c / (2 phi + (2 - phi) c)` and `lr = end + (peak - end) s`. s runs from 1 to 0;
    s(T/2) = 2 / (phi + 2); phi = 2 is exactly cosine annealing; phi > 2 decays faster
    than cosine early, phi < 2 stays high longer (phi -> 0: constant, dropping at the end).

    Args:
      peak: the value after warm-up, >= 0.
      total_steps: T, the step at which `end_value` is reached, >= 1.
      phi: the shape parameter, > 0 (tied to the landscape's condition number).
      end_value: the floor, in [0, peak].
      warmup_steps: W, in [0, T - 1].
      init_value: the value at step 0 when W > 0, in [0, peak].
      warmup_shape: one of `schedules.WARMUP_SHAPES`.

    Returns:
      A schedule: a jittable function of the 0-based step returning a float scalar.

    Example:
      >>> import schedules
      >>> lr = schedules.uba(1.0, total_steps=100, phi=6.0)
      >>> [round(float(lr(t)), 4) for t in (0, 50, 100)]
      [1.0, 0.25, 0.0]

    References:
      Tang, Dong, Zeng, Xun, Lin 2025, "Unified Budget-Aware Learning Rate Schedule"
      (NeurIPS 2025, arXiv 2505.24452). The closed form is from a third-party
      implementation; whether the paper restarts it per phase is not verified.
    """
    phi = check_float("uba", "phi", phi, 0.0, open_min=True)

    def decay_value(p, q, start, end):
        c = 2.0 * jnp.square(jnp.sin(0.5 * jnp.pi * q))  # 1 + cos(pi p)
        s = 2.0 * c / (2.0 * phi + (2.0 - phi) * c)
        return jnp.clip(end + (start - end) * s, end, start)

    args = (peak, total_steps, end_value, warmup_steps, init_value, warmup_shape)
    return _warmup_then_decay("uba", decay_value, *args)


def linear_scaling(
    base_lr: ArrayLike,
    batch_size: int,
    base_batch_size: int = 256,
    warmup_steps: int = 0,
    decay_boundaries: Sequence[int] = (),
    decay_factor: ArrayLike = 0.1,
) -> Callable:
    """The linear scaling rule with gradual warm-up, then step decay.

    k = batch_size / base_batch_size. The rate starts at the small-batch rate `base_lr`
    and rises linearly to k `base_lr` over W steps, then is multiplied by `decay_factor` at
    each boundary: `lr(t) = (base + (k base - base) min(1, t / W)) * factor^{#b_i <= t}`.
    The ImageNet recipe: base_lr = 0.1 for 256 images, W = 5 epochs, boundaries at epochs
    30, 60, 80 of 90 (all given here in steps: epochs times steps per epoch).

    Args:
      base_lr: the rate at `base_batch_size`, >= 0.
      batch_size: the total minibatch size, >= 1.
      base_batch_size: the reference batch size, >= 1.
      warmup_steps: W >= 0 (0: start at k `base_lr`).
      decay_boundaries: strictly increasing steps >= 1 where the rate is multiplied.
      decay_factor: in (0, 1].

    Returns:
      A schedule: a jittable function of the 0-based step returning a float scalar.

    Example:
      >>> import schedules
      >>> lr = schedules.linear_scaling(0.1, batch_size=2048, warmup_steps=100,
      ...                               decay_boundaries=[300])
      >>> [round(float(lr(t)), 4) for t in (0, 50, 100, 299, 300)]
      [0.1, 0.45, 0.8, 0.8, 0.08]

    References:
      Goyal et al. 2017, "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour"
      (arXiv 1706.02677).
    """
    where = "linear_scaling"
    base_lr = check_float(where, "base_lr", base_lr, 0.0)
    batch_size = check_int(where, "batch_size", batch_size, 1)
    base_batch_size = check_int(where, "base_batch_size", base_batch_size, 1)
    warmup_steps = check_int(where, "warmup_steps", warmup_steps, 0)
    boundaries = check_increasing_ints(
        where, "decay_boundaries", decay_boundaries, 1, allow_empty=True
    )
    decay_factor = check_float(where, "decay_factor", decay_factor, 0.0, 1.0, open_min=True)
    target = base_lr * batch_size / base_batch_size

    def schedule(step):
        step = _as_step(step)
        if warmup_steps > 0:
            value = base_lr + (target - base_lr) * _progress(step, 0, warmup_steps)
        else:
            value = jnp.full(step.shape, target, _float_dtype())
        for b in boundaries:
            value = jnp.where(_at_or_after(step, b), value * decay_factor, value)
        return value

    return schedule
