"""The refined schedule of Defazio et al., built offline from a recorded gradient-norm history.

Recipe, for a history G_1..G_T of an earlier run (any schedule):

1. Resample to N points (`resolution`, the authors use 10 000) when the history is shorter.
2. Smooth with a running median of odd width w = 2 floor(floor(tau N) / 2) + 1 (tau =
   `smoothing`, 0.1 by default), after reflect-padding the end of the series by 2w (so the
   window at the end sees a mirror image, not a flat edge), with edge-value extension
   at the boundaries; then drop the padding and resample to N points.
3. Weights: `omega_t = 1 / g_t^2` from l2 norms for SGD-like methods ("sgd"), or
   `omega_t = 1 / g_t` from l1 norms for Adam-like per-coordinate methods ("adam").
4. `eta_t = omega_t * sum_{p > t} omega_p / omega_N` (so the last step is 0), divided by
   its maximum so the peak is 1.

Constant norms give exactly linear decay to zero; norms that are large early give an
automatic warm-up; norms that rise late anneal faster at the end.

References:
  Defazio, Cutkosky, Mehta, Mishchenko 2023, "When, Why and How Much? Adaptive Learning Rate
  Scheduling by Refinement" (arXiv 2310.07831); the recipe is the authors' `find_schedule.py`
  in facebookresearch/adaptive_scheduling.
"""

import math
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from schedules._common import _as_step, _const, _float_dtype, _is_int, _known
from schedules._validation import check_array, check_choice, check_float, check_int

_KINDS = ("sgd", "adam")
_MAX_CHUNK = 1 << 22  # elements per chunk of the running median


def _resample(values: np.ndarray, n: int) -> np.ndarray:
    """Linear interpolation of `values` onto n equally spaced points of the same interval."""
    if len(values) == n:
        return values
    return np.interp(np.linspace(0.0, 1.0, n), np.linspace(0.0, 1.0, len(values)), values)


def _running_median(values: np.ndarray, width: int) -> np.ndarray:
    """Centred running median of odd `width`; the edges extend the first and last values."""
    half = width // 2
    extended = np.pad(values, half, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(extended, width)
    out = np.empty(len(values))
    chunk = max(1, _MAX_CHUNK // width)
    for lo in range(0, len(values), chunk):
        out[lo : lo + chunk] = np.median(windows[lo : lo + chunk], axis=1)
    return out


def _smooth(values: np.ndarray, width: int) -> np.ndarray:
    """Median filter with the end of the series reflect-padded by 2 * width."""
    if width <= 1:
        return values
    pad = 2 * width
    padded = np.pad(values, (0, pad), mode="reflect")
    return _running_median(padded, width)[: len(values)]


def refined_values(
    grad_norms,
    kind: str = "sgd",
    smoothing: float = 0.1,
    resolution: int | None = None,
    normalize: bool = True,
) -> np.ndarray:
    """The refined schedule as a NumPy array (the offline step behind `refined`).

    See the module docstring for the recipe: optional resampling to `resolution` points,
    a running median over a fraction `smoothing` of the run, weights `1 / g^2` ("sgd", l2
    norms) or `1 / g` ("adam", l1 norms), and `omega_t sum_{p > t} omega_p / omega_N`.

    Args:
      grad_norms: the per-step gradient norms of an earlier run: a 1-D array of at least 2
        positive finite values (l2 norms for "sgd", l1 norms for "adam").
      kind: "sgd" (isotropic methods) or "adam" (per-coordinate methods).
      smoothing: tau in [0, 1): the median window as a fraction of the N points; 0 disables.
      resolution: N, the number of points the schedule is computed on (>= 2); None keeps the
        history's length. A shorter history is linearly upsampled to N before smoothing; a
        longer one is smoothed with a window of `smoothing * N` of its points and then
        resampled to N, as in the authors' recipe.
      normalize: divide by the maximum so the peak is 1 (otherwise the authors' raw values,
        divided by the last weight only).

    Returns:
      A float64 array of N values, the last one 0.

    Example:
      >>> import schedules
      >>> schedules.refined_values([2.0] * 5).tolist()
      [1.0, 0.75, 0.5, 0.25, 0.0]

    References:
      Defazio, Cutkosky, Mehta, Mishchenko 2023, "When, Why and How Much? Adaptive Learning
      Rate Scheduling by Refinement" (arXiv 2310.07831).
    """
    where = "refined"
    norms = check_array(
        where, "`grad_norms`", grad_norms, minimum=0.0, strict=True, min_size=2,
        hint="; drop or interpolate non-finite entries first",
    )  # fmt: skip
    kind = check_choice(where, "kind", kind, _KINDS)
    smoothing = check_float(where, "smoothing", smoothing, 0.0, 1.0, open_max=True, static=True)
    n = len(norms) if resolution is None else check_int(where, "resolution", resolution, 2)
    if len(norms) < n:
        norms = _resample(norms, n)
    width = 2 * (math.floor(smoothing * n) // 2) + 1
    smoothed = _resample(_smooth(norms, width), n)
    weights = smoothed**-2.0 if kind == "sgd" else 1.0 / smoothed
    tail = np.cumsum(weights[::-1])[::-1]  # tail[t] = sum_{p >= t} omega_p
    values = np.zeros(n)
    values[:-1] = weights[:-1] * tail[1:] / weights[-1]
    if normalize:
        values = values / values.max()
    return values


def refined(
    grad_norms,
    kind: str = "sgd",
    smoothing: float = 0.1,
    peak: ArrayLike = 1.0,
    total_steps: int | None = None,
    resolution: int | None = None,
) -> Callable:
    """The refined schedule of Defazio et al. from a recorded gradient-norm history.

    `eta_t = peak * r(t)`, with r the normalised values of `refined_values` (peak 1, last
    value 0): with weights `omega_t` = `1 / g_t^2` ("sgd", smoothed l2 norms) or `1 / g_t`
    ("adam", smoothed l1 norms), `r_t` is proportional to `omega_t sum_{p > t} omega_p`.
    The N computed values are laid over `total_steps` T steps: step t reads position
    t (N - 1) / (T - 1) with linear interpolation (an exact look-up when N = T); steps
    >= T - 1 give the last value, 0.

    Args:
      grad_norms: the per-step gradient norms of an earlier run: a 1-D array of at least 2
        positive finite values.
      kind: "sgd" (weights l2^-2) or "adam" (weights l1^-1).
      smoothing: the median window as a fraction of the run, in [0, 1); 0.1 in the paper.
      peak: the maximum learning rate, >= 0.
      total_steps: T >= 2, the length of the new run; defaults to `len(grad_norms)`.
      resolution: N, see `refined_values`; defaults to `len(grad_norms)` (the authors use
        10 000).

    Returns:
      A schedule: a jittable function of the 0-based step returning a float scalar.

    Example:
      >>> import numpy as np
      >>> import schedules
      >>> lr = schedules.refined(np.full(10, 3.0), kind="sgd", peak=0.9)
      >>> [round(float(lr(t)), 4) for t in (0, 1, 8, 9)]
      [0.9, 0.8, 0.1, 0.0]

    References:
      Defazio, Cutkosky, Mehta, Mishchenko 2023, "When, Why and How Much? Adaptive Learning
      Rate Scheduling by Refinement" (arXiv 2310.07831).
    """
    where = "refined"
    values = refined_values(grad_norms, kind, smoothing, resolution, normalize=True)
    peak = check_float(where, "peak", peak, 0.0)
    n = len(values)
    if total_steps is None:
        total_steps = len(np.asarray(grad_norms))
    total_steps = check_int(where, "total_steps", total_steps, 2)
    table = values * peak if _known(peak) else None  # float64 table, or scaled when traced

    def schedule(step):
        step = _as_step(step)
        dtype = _float_dtype()
        lut = jnp.asarray(values, dtype) * peak if table is None else jnp.asarray(table, dtype)
        if _is_int(step) and n == total_steps:
            return lut[jnp.clip(step, 0, _const(step, n - 1))]
        if _is_int(step):
            t = jnp.clip(step, 0, _const(step, total_steps - 1)).astype(dtype)
        else:
            t = jnp.clip(step.astype(dtype), 0, total_steps - 1)
        x = t * ((n - 1) / (total_steps - 1))
        i0 = jnp.clip(jnp.floor(x).astype(jnp.int32), 0, n - 2)
        frac = x - i0.astype(dtype)
        return lut[i0] + (lut[i0 + 1] - lut[i0]) * frac

    return schedule
