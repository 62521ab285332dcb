"""A schedule given step by step: a table of per-update rates, scaled by a peak.

For schedules computed ahead of training (a law-optimal schedule from `schedules.laws`, a rate
sequence recorded elsewhere) that no closed form describes; registered as "table" so a config
can train one and record its exact rates.
"""

from collections.abc import Callable, Sequence

import jax.numpy as jnp
from jax.typing import ArrayLike

from schedules._common import _as_step, _const, _float_dtype, _is_int, _known
from schedules._validation import check_array, check_float


def table(peak: ArrayLike, values: Sequence[float]) -> Callable:
    """The rate of update t is `peak * values[t]`; the last value holds after the table ends.

    `s(t) = peak * values[min(t, N - 1)]` for integer steps t >= 0 (N = `len(values)`); a
    float step interpolates linearly between its neighbours.

    Args:
      peak: the scale, >= 0 (may be traced, for a vmapped sweep).
      values: N >= 1 finite values >= 0, one per update, e.g. `laws.optimal_lrs(...) / peak`.

    Returns:
      A schedule: a jittable function of the 0-based step returning a float scalar.

    Example:
      >>> import schedules
      >>> lr = schedules.table(0.1, [0.0, 0.5, 1.0, 0.25])
      >>> [round(float(lr(t)), 4) for t in (0, 1, 2, 3, 10)]
      [0.0, 0.05, 0.1, 0.025, 0.025]

    References:
      Standard (a look-up table); used for Luo et al. 2025's law-optimal schedules
      (arXiv 2503.12811).
    """
    where = "table"
    peak = check_float(where, "peak", peak, 0.0)
    rates = check_array(where, "`values`", values, minimum=0.0)
    n = rates.size
    scaled = rates * peak if _known(peak) else None  # float64 products, or scaled when traced

    def schedule(step):
        step = _as_step(step)
        dtype = _float_dtype()
        lut = jnp.asarray(rates, dtype) * peak if scaled is None else jnp.asarray(scaled, dtype)
        if _is_int(step):
            return lut[jnp.clip(step, 0, _const(step, n - 1))]
        t = jnp.clip(step.astype(dtype), 0, n - 1)
        i0 = jnp.clip(jnp.floor(t).astype(jnp.int32), 0, max(n - 2, 0))
        i1 = jnp.minimum(i0 + 1, n - 1)
        return lut[i0] + (lut[i1] - lut[i0]) * (t - i0.astype(dtype))

    return schedule
