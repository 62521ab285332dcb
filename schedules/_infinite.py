"""Schedules for continual pre-training: the infinite schedule, and re-warm / re-decay.

* Infinite: a warm-up to the peak, a cool-down to a constant c (cosine
  `c + (peak - c)(1 + cos(pi p)) / 2`, or inverse-sqrt `peak + (c - peak) h(p) / h(1)` with
  `h(x) = 1 / sqrt(1 + alpha x) - 1`), the constant c for as long as training runs, and an
  optional exponential anneal `c (end / c)^p`.
* Re-warm: for each new dataset, a linear re-warm from the floor to the original peak over
  about 1% of its steps, then a cosine re-decay to the floor (0.1 peak).

References:
  Ibrahim, Therien, Gupta et al. 2024, "Simple and Scalable Strategies to Continually
  Pre-train Large Language Models" (TMLR 2024, arXiv 2403.08763).
  Singh et al. 2025, "Beyond Cosine Decay" (CoLLAs 2025, arXiv 2503.02844).
"""

from collections.abc import Callable, Sequence

import jax.numpy as jnp
from jax.typing import ArrayLike

from schedules._basic import cosine
from schedules._common import (
    _as_step,
    _at_or_after,
    _before,
    _decay_value,
    _float_dtype,
    _known,
    _phase,
    _sqrt,
    _with_warmup,
)
from schedules._compose import join
from schedules._validation import (
    check_choice,
    check_decay,
    check_decay_shape,
    check_float,
    check_increasing_ints,
    check_int,
    check_ints,
    check_le,
    check_peak_and_warmup,
)


def infinite(
    peak: ArrayLike,
    warmup_steps: int,
    cooldown_steps: int,
    constant_value: ArrayLike,
    anneal_start: int | None = None,
    anneal_steps: int = 0,
    end_value: ArrayLike | None = None,
    cooldown_shape: str = "cosine",
    alpha: ArrayLike = 10.0,
    anneal_shape: str = "exponential",
    init_value: ArrayLike = 0.0,
    warmup_shape: str = "linear",
) -> Callable:
    """The infinite schedule: warm-up, cool-down, a constant plateau, and an optional anneal.

    With W warm-up steps, C cool-down steps and c = `constant_value`:

    * t < W: warm-up from `init_value` to `peak`
    * W <= t < W + C: cool-down to c, p = (t - W) / C. "cosine":
      `c + (peak - c)(1 + cos(pi p)) / 2`; "rsqrt": `peak + (c - peak) h(p) / h(1)` with
      `h(x) = 1 / sqrt(1 + alpha x) - 1`
    * then c for as long as needed (the "infinite" part)
    * from `anneal_start` A, if `anneal_steps` N > 0: `c (end / c)^p`, p = (t - A) / N
      (exponential), reaching `end_value` at A + N and staying there

    Annealing on demand from any step k of the plateau, off the main run, is
    `schedules.branch(s, at_step=k, decay_steps=N, shape="exponential", end_value=...)`.
    The MAE-1 defaults for a task of T steps: W = 0.05 T, W + C = 0.3 T, c = 0.25 peak,
    A = 0.8 T, N = 0.2 T, end = 0.01 peak. Later tasks skip the warm-up and cool-down and
    continue at c.

    Args:
      peak: the value after warm-up, >= 0.
      warmup_steps: W >= 0.
      cooldown_steps: C >= 1 (0 only when `constant_value` equals `peak`).
      constant_value: c, in [0, peak].
      anneal_start: A >= W + C, or None for no anneal.
      anneal_steps: N >= 1 when `anneal_start` is given.
      end_value: the anneal floor, in [0, c] (> 0 for the exponential anneal); defaults to
        0.01 peak.
      cooldown_shape: "cosine" or "rsqrt".
      alpha: the timescale of the "rsqrt" cool-down, > 0.
      anneal_shape: one of `schedules.DECAY_SHAPES` (the paper's is "exponential").
      init_value: the value at step 0 when W > 0, in [0, peak].
      warmup_shape: one of `schedules.WARMUP_SHAPES`.

    Returns:
      A schedule: a jittable function of the 0-based step returning a float scalar.

    Example:
      >>> import schedules
      >>> lr = schedules.infinite(1.0, warmup_steps=5, cooldown_steps=25,
      ...                         constant_value=0.25, anneal_start=80, anneal_steps=20)
      >>> [round(float(lr(t)), 4) for t in (5, 30, 79, 90, 100)]
      [1.0, 0.25, 0.25, 0.05, 0.01]

    References:
      Ibrahim et al. 2024, "Simple and Scalable Strategies to Continually Pre-train Large
      Language Models" (TMLR 2024, arXiv 2403.08763); Singh et al. 2025, "Beyond Cosine
      Decay: On the effectiveness of Infinite Learning Rate Schedule for Continual
      Pre-training" (arXiv 2503.02844).
    """
    where = "infinite"
    peak, warmup_steps, init_value, warmup_shape = check_peak_and_warmup(
        where, peak, warmup_steps, init_value, warmup_shape
    )
    cooldown_steps = check_int(where, "cooldown_steps", cooldown_steps, 0)
    constant_value = check_float(where, "constant_value", constant_value, 0.0, peak)
    if cooldown_steps == 0 and _known(constant_value, peak) and constant_value != peak:
        raise ValueError(
            f"{where}: `cooldown_steps` must be >= 1 when constant_value < peak (the cool-down "
            f"goes from peak to constant_value), got 0"
        )
    cooldown_shape = check_choice(where, "cooldown_shape", cooldown_shape, ("cosine", "rsqrt"))
    alpha = check_float(where, "alpha", alpha, 0.0, open_min=True)
    plateau = warmup_steps + cooldown_steps
    if anneal_start is not None:
        anneal_start = check_int(where, "anneal_start", anneal_start, 0)
        check_le(where, "warmup_steps + cooldown_steps", plateau, "anneal_start", anneal_start)
        anneal_steps = check_int(where, "anneal_steps", anneal_steps, 1)
        if end_value is None:
            end_value = 0.01 * peak
        anneal_shape, end_value = check_decay(
            where, anneal_shape, end_value, constant_value, shape_name="anneal_shape"
        )
    else:
        anneal_shape = check_decay_shape(where, anneal_shape, "anneal_shape")
    h1 = 1.0 / _sqrt(1.0 + alpha) - 1.0

    def schedule(step):
        step = _as_step(step)

        def after(s):
            value = jnp.full(s.shape, constant_value, _float_dtype())
            if cooldown_steps > 0:
                p, q = _phase(s, warmup_steps, cooldown_steps)
                if cooldown_shape == "cosine":
                    cool = _decay_value(p, q, peak, constant_value, "cosine")
                else:
                    h = 1.0 / jnp.sqrt(1.0 + alpha * p) - 1.0
                    cool = peak + (constant_value - peak) * (h / h1)
                    cool = jnp.where(q <= 0.0, constant_value, cool)
                value = jnp.where(_before(s, plateau), cool, value)
            if anneal_start is not None:
                p, q = _phase(s, anneal_start, anneal_steps)
                annealed = _decay_value(p, q, constant_value, end_value, anneal_shape)
                value = jnp.where(_at_or_after(s, anneal_start), annealed, value)
            return value

        return _with_warmup(step, warmup_steps, init_value, peak, warmup_shape, after)

    return schedule


def rewarm(
    peak: ArrayLike,
    task_steps: Sequence[int],
    end_value: ArrayLike | None = None,
    warmup_fraction: float = 0.01,
    warmup_steps: int | None = None,
    init_value: ArrayLike | None = None,
) -> Callable:
    """Re-warm and re-decay for continual pre-training: a warm-up-cosine cycle per dataset.

    Task j runs for L_j = `task_steps[j]` steps from `sum(task_steps[:j])`. Each task
    re-warms linearly from `end_value` (the floor the previous task decayed to) back to
    the original pre-training `peak` over w_j = round(`warmup_fraction` L_j) steps (at
    least 1), then decays with cosine to `end_value` at the end of the task. The first task
    starts from `init_value`. The schedule is continuous at every task boundary when
    `init_value` is `end_value`. (Replay of old data, the other half of the recipe, is a
    data-pipeline matter.)

    Args:
      peak: the re-warm peak (the paper re-warms to the original peak, e.g. 3e-4), >= 0.
      task_steps: the steps of each task, each >= 2.
      end_value: the floor, in [0, peak]; defaults to 0.1 peak as in the paper.
      warmup_fraction: the re-warm length as a fraction of each task, in (0, 1); the paper
        uses about 1%.
      warmup_steps: instead of `warmup_fraction`, the same number of re-warm steps for every
        task, each < L_j.
      init_value: the first task's starting value, in [0, peak]; defaults to `end_value`.

    Returns:
      A schedule: a jittable function of the 0-based step returning a float scalar.

    Example:
      >>> import schedules
      >>> lr = schedules.rewarm(1.0, task_steps=[100, 100], warmup_steps=10)
      >>> [round(float(lr(t)), 4) for t in (0, 10, 100, 105, 110, 200)]
      [0.1, 1.0, 0.1, 0.55, 1.0, 0.1]

    References:
      Ibrahim, Therien, Gupta et al. 2024, "Simple and Scalable Strategies to Continually
      Pre-train Large Language Models" (TMLR 2024, arXiv 2403.08763), sections 6.1.2, 6.3.
    """
    where = "rewarm"
    peak = check_float(where, "peak", peak, 0.0)
    tasks = check_ints(where, "task_steps", task_steps, 2)
    if end_value is None:
        end_value = 0.1 * peak
    end_value = check_float(where, "end_value", end_value, 0.0, peak)
    init_value = end_value if init_value is None else init_value
    init_value = check_float(where, "init_value", init_value, 0.0, peak)
    if warmup_steps is not None:
        warmup_steps = check_int(where, "warmup_steps", warmup_steps, 1)
        for j, length in enumerate(tasks):
            check_le(where, "warmup_steps", warmup_steps, f"task_steps[{j}] - 1", length - 1)
        warmups = (warmup_steps,) * len(tasks)
    else:
        f = check_float(
            where,
            "warmup_fraction",
            warmup_fraction,
            0.0,
            1.0,
            open_min=True,
            open_max=True,
            static=True,
        )
        warmups = tuple(min(max(1, round(f * length)), length - 1) for length in tasks)
    pieces = [
        cosine(peak, length, end_value, w, init_value if j == 0 else end_value)
        for j, (length, w) in enumerate(zip(tasks, warmups, strict=True))
    ]
    boundaries = [sum(tasks[: j + 1]) for j in range(len(tasks) - 1)]
    check_increasing_ints(where, "task boundaries", boundaries, 1, allow_empty=True)
    return join(pieces, boundaries)
