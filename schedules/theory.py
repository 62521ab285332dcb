"""The convex last-iterate bound of SGD for any schedule, its optimal base rate, horizon transfer.

For rates eta_1..eta_T (here `lrs[0..T-1]`), gradient-norm bounds G_t and a distance D to the
solution, Defazio et al.'s Theorem 10 bounds the suboptimality of the last iterate of SGD on a
convex Lipschitz problem by

    Omega_T = D^2 / (2 S) + sum_t eta_t^2 G_t^2 / (2 S)
              + 1/2 sum_{k=1}^{T-1} [eta_k / sum_{t=k+1}^T eta_t]
                                    * [sum_{t=k}^T eta_t^2 G_t^2 / sum_{t=k}^T eta_t],

with `S = sum_t eta_t`. Schaipp et al. show that this bound, at each schedule's best base rate,
ranks schedules and predicts cooldown benefits much as LLM training does. Everything here is
O(T) (suffix sums, no subtraction of running totals) and in float64 for NumPy inputs; JAX
inputs (also traced ones) are computed with jax.numpy in their own dtype, so `jax.grad` works.

References:
  Defazio, Cutkosky, Mehta, Mishchenko 2023, "When, Why and How Much? Adaptive Learning Rate
  Scheduling by Refinement" (arXiv 2310.07831), Theorem 10.
  Schaipp, Hagele, Taylor, Simsekli, Bach 2025, "The Surprising Agreement Between Convex
  Optimization Theory and Learning-Rate Scheduling for Large Model Training" (arXiv 2501.18965);
  their package fabian-sp/lr-scheduling fixes the schedule and horizon-transfer conventions.
"""

import math
import numbers
from collections.abc import Callable
from typing import NamedTuple

import jax
import numpy as np

import schedules


def _is_jax(x) -> bool:
    return isinstance(x, (jax.Array, jax.core.Tracer))


def _terms(lrs, D, G, where: str):
    """(t1, t2, t3) of the bound; t1 = D^2/(2S), t2 + t3 carry the G terms."""
    use_jax = _is_jax(lrs) or _is_jax(G) or _is_jax(D)
    if use_jax:
        import jax.numpy as xp

        lrs = xp.asarray(lrs)
        G = xp.asarray(G, dtype=lrs.dtype)
    else:
        xp = np
        lrs = _check_rates(where, lrs)
        G = _check_g(where, G, lrs.size)
        D = _check_nonneg(where, "D", D)
    sq = lrs * lrs * G * G
    total = xp.sum(lrs)
    suffix = xp.cumsum(lrs[::-1])[::-1]  # sum_{t >= k} eta_t
    suffix_sq = xp.cumsum(sq[::-1])[::-1]
    t1 = D * D / (2.0 * total)
    t2 = xp.sum(sq) / (2.0 * total)
    # k = 1..T-1 (0-based 0..T-2): eta_k / suffix[k+1] * suffix_sq[k] / suffix[k]
    t3 = 0.5 * xp.sum(lrs[:-1] / suffix[1:] * suffix_sq[:-1] / suffix[:-1])
    return t1, t2, t3


def bound(lrs, D: float = 1.0, G=1.0):
    """Defazio et al.'s last-iterate bound Omega_T of SGD with the rates `lrs`.

    See the module docstring for the formula. It is O(T) with suffix sums.

    Args:
      lrs: eta_1..eta_T, a 1-D array of T >= 1 rates >= 0 whose last value is > 0 (the bound is
        infinite when the run ends with zero rates: evaluate a schedule on steps 0..T-1).
      D: the distance bound, >= 0.
      G: the gradient-norm bound, a number >= 0 or one value >= 0 per step.

    Returns:
      Omega_T: a Python float for NumPy / list input (computed in float64), a JAX scalar for JAX
      input (differentiable).

    Example:
      >>> from schedules import theory
      >>> round(theory.bound([1.0, 1.0, 1.0, 1.0], D=2.0), 4)  # D^2/(2T) + 1/2 + H_3/2
      1.9167

    References:
      Defazio et al. 2023 (arXiv 2310.07831), Theorem 10; Schaipp et al. 2025
      (arXiv 2501.18965), Theorem 1.
    """
    t1, t2, t3 = _terms(lrs, D, G, "bound")
    out = t1 + t2 + t3
    return out if _is_jax(out) else float(out)


def optimal_base_lr(shape, D: float = 1.0, G=1.0) -> tuple[float, float]:
    """The base rate gamma minimising the bound of `lrs = gamma * shape`, and that bound.

    The bound of `gamma * shape` is `t1 / gamma + gamma (t2 + t3)`, where t1, t2, t3 are the
    three terms of the bound of `shape` itself, so `gamma* = sqrt(t1 / (t2 + t3))` and the bound
    there is `2 sqrt(t1 (t2 + t3))`.

    Args:
      shape: the schedule's shape, as for `bound` (usually peak 1).
      D: the distance bound, > 0.
      G: the gradient-norm bound, a number or one value per step, not all 0.

    Returns:
      `(gamma_star, bound_at_gamma_star)`, floats (JAX scalars for JAX input).

    Example:
      >>> import numpy as np
      >>> from schedules import theory
      >>> gamma, omega = theory.optimal_base_lr(np.ones(100))
      >>> round(gamma, 4), round(omega, 4)
      (0.0402, 0.2485)

    References:
      Schaipp et al. 2025 (arXiv 2501.18965), section 3 (optimal base learning rate).
    """
    where = "optimal_base_lr"
    if not _is_jax(D):
        D = _check_nonneg(where, "D", D)
        if D == 0:
            raise ValueError(f"{where}: `D` must be > 0 (with D = 0 the best rate is 0)")
    t1, t2, t3 = _terms(shape, D, G, where)
    if not _is_jax(t2) and t2 + t3 <= 0:
        raise ValueError(f"{where}: `G` must not be 0 on every step with a positive rate")
    if _is_jax(t1):
        import jax.numpy as jnp

        return jnp.sqrt(t1 / (t2 + t3)), 2.0 * jnp.sqrt(t1 * (t2 + t3))
    return float(math.sqrt(t1 / (t2 + t3))), float(2.0 * math.sqrt(t1 * (t2 + t3)))


class HorizonTransfer(NamedTuple):
    """A WSD run of `T0` steps extended to `T1`, at the rate factor that keeps gamma* fixed.

    Attributes:
      rho: the factor: the extended run continues at `rho * peak` from `resume_step`.
      resume_step: the checkpoint step of the original run it resumes from.
      decay_start: the step at which the extended run starts its linear cooldown to 0.
      decay_steps: the cooldown length.
      total_steps: T1.
    """

    rho: float
    resume_step: int
    decay_start: int
    decay_steps: int
    total_steps: int

    def schedule(self, peak: float, warmup_steps: int = 0) -> Callable:
        """The extended run as a trainable schedule (absolute steps, so it resumes as is).

        `peak` until `resume_step` (after an optional linear warm-up of `warmup_steps`),
        `rho * peak` until `decay_start`, then `schedules.branch`'s linear decay to 0 over
        `decay_steps`.

        Example:
          >>> from schedules import theory
          >>> lr = theory.horizon_transfer(4000, 8000).schedule(peak=1.0)
          >>> [round(float(lr(t)), 3) for t in (0, 3199, 3200, 6400, 7200, 8000)]
          [1.0, 1.0, 0.533, 0.533, 0.266, 0.0]
        """
        where = "HorizonTransfer.schedule"
        if (
            isinstance(peak, bool)
            or not isinstance(peak, numbers.Real)
            or not (math.isfinite(peak) and peak >= 0)
        ):
            raise ValueError(f"{where}: `peak` must be a finite number >= 0, got {peak!r}")
        if (
            isinstance(warmup_steps, bool)
            or not isinstance(warmup_steps, numbers.Integral)
            or not (0 <= warmup_steps <= self.resume_step)
        ):
            raise ValueError(
                f"{where}: `warmup_steps` must be an integer in [0, resume_step = "
                f"{self.resume_step}], got {warmup_steps!r}"
            )
        first = schedules.warmup(float(peak), int(warmup_steps))
        base = schedules.join(
            [first, schedules.constant(self.rho * float(peak))], [self.resume_step]
        )
        return schedules.branch(base, at_step=self.decay_start, decay_steps=self.decay_steps)


def horizon_transfer(
    T0: int, T1: int, cooldown_fraction: float = 0.2, resume_fraction: float = 0.8
) -> HorizonTransfer:
    """The rate factor rho for extending a WSD run from T0 to T1 steps at the same base rate.

    The original run is WSD of length T0: constant, then a linear cooldown to 0 over
    `round(cooldown_fraction * T0)` steps. The extended run resumes from the original's
    checkpoint at `R = round(resume_fraction * T0)`, continues at `rho` times the peak rate, then
    cools down linearly to 0 over the last `D1 = round(cooldown_fraction * T1)` steps. rho is
    chosen so that the optimal base rate (`optimal_base_lr`) of the extended schedule equals the
    original's: then the peak tuned for T0 stays optimal for T1. Both bounds use constant D and
    G (rho does not depend on their values). Step counts are rounded as `schedules.wsd` rounds
    a decay fraction; the layout is Schaipp et al.'s (their T + 1-point schedules without the
    final 0 are these schedules on steps 0..T-1).

    Args:
      T0: the original run's length, >= 2.
      T1: the extended length, > T0.
      cooldown_fraction: in (0, 1), the cooldown fraction of both runs.
      resume_fraction: in (0, 1]: the checkpoint to resume from; R must be <= T1 - D1.

    Returns:
      A `HorizonTransfer` with `rho` and the step layout; `.schedule(peak)` trains it.

    Example:
      >>> from schedules import theory
      >>> round(theory.horizon_transfer(4000, 8000).rho, 3)
      0.533

    References:
      Schaipp et al. 2025 (arXiv 2501.18965), section 5.1 (horizon transfer); their
      `scripts/horizon_transfer.py` (piecewise-constant "wssd" extension).
    """
    where = "horizon_transfer"
    T0 = _check_int(where, "T0", T0, 2)
    T1 = _check_int(where, "T1", T1, T0 + 1)
    cooldown_fraction = _check_fraction(
        where, "cooldown_fraction", cooldown_fraction, open_max=True
    )
    resume_fraction = _check_fraction(where, "resume_fraction", resume_fraction, open_max=False)
    d0 = max(1, round(cooldown_fraction * T0))
    d1 = max(1, round(cooldown_fraction * T1))
    resume = round(resume_fraction * T0)
    start = T1 - d1
    if resume < 1 or resume > start:
        raise ValueError(
            f"{where}: the resume step round(resume_fraction * T0) = {resume} must be in "
            f"[1, T1 - cooldown = {start}]; lower `resume_fraction` or `cooldown_fraction`"
        )
    original = np.ones(T0)
    original[T0 - d0 :] = 1.0 - np.arange(d0) / d0
    target, _ = optimal_base_lr(original)
    head = np.ones(resume)
    middle = np.ones(start - resume)
    tail = 1.0 - np.arange(d1) / d1

    def log_ratio(log_rho):
        rho = math.exp(log_rho)
        gamma, _ = optimal_base_lr(np.concatenate([head, rho * middle, rho * tail]))
        return math.log(gamma / target)

    # gamma*(rho) rises from 0 at tiny rho (a near-zero tail makes the last terms blow up),
    # peaks, then falls like 1 / rho. The transfer is the root on the falling branch: the
    # largest one, bracketed on a log grid.
    grid = np.linspace(math.log(1e-4), math.log(1e4), 33)
    values = np.array([log_ratio(x) for x in grid])
    crossings = np.nonzero((values[:-1] > 0) & (values[1:] <= 0))[0]
    if crossings.size == 0:
        raise ValueError(
            f"{where}: no factor in [1e-4, 1e4] keeps the optimal base rate of T0 = {T0} at "
            f"T1 = {T1} (resume {resume}, cooldown {d1})"
        )
    i = int(crossings[-1])
    lo, hi = float(grid[i]), float(grid[i + 1])
    for _ in range(60):  # bisection in log rho, to ~1e-18 of the bracket
        mid = 0.5 * (lo + hi)
        if log_ratio(mid) > 0:
            lo = mid
        else:
            hi = mid
    rho = math.exp(0.5 * (lo + hi))
    return HorizonTransfer(float(rho), int(resume), int(start), int(d1), int(T1))


# ----------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------


def _check_rates(where: str, lrs) -> np.ndarray:
    try:
        arr = np.asarray(lrs, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: `lrs` must be a 1-D array of rates") from None
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{where}: `lrs` must be a non-empty 1-D array, got shape {arr.shape}")
    bad = ~np.isfinite(arr) | (arr < 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{where}: `lrs` must be finite and >= 0; entry {i} is {float(arr[i])!r}")
    if arr[-1] <= 0:
        raise ValueError(
            f"{where}: the last rate must be > 0 (the bound is infinite when the run ends with "
            "zero rates); evaluate the schedule on steps 0..T-1, before it reaches 0"
        )
    return arr


def _check_g(where: str, G, n: int) -> np.ndarray:
    try:
        arr = np.asarray(G, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: `G` must be a number or an array of {n} numbers") from None
    if arr.ndim not in (0, 1) or (arr.ndim == 1 and arr.size != n):
        raise ValueError(
            f"{where}: `G` must be a number or one value per step ({n}), got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{where}: `G` must be finite and >= 0")
    return arr


def _check_nonneg(where: str, name: str, value) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not (math.isfinite(value) and value >= 0)
    ):
        raise ValueError(f"{where}: `{name}` must be a finite number >= 0, got {value!r}")
    return float(value)


def _check_int(where: str, name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{where}: `{name}` must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_fraction(where: str, name: str, value, open_max: bool) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and 0.0 < value and (value < 1.0 if open_max else value <= 1.0)
    if not ok:
        right = ")" if open_max else "]"
        raise ValueError(f"{where}: `{name}` must be a number in (0, 1{right}, got {value!r}")
    return float(value)
