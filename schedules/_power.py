"""The Power scheduler: a learning rate that follows a power law in the tokens seen.

`eta(n) = min(max_lr, batch_size * a * n^b)`, where n is the number of tokens seen. Fitted
values are a = 4.6 and b = -0.51, with max_lr = 0.02. A linear warm-up comes first, and an
optional decay over the final steps comes last. The rate depends on the token count, not on
a planned horizon.

References:
  Shen et al. 2024, "Power Scheduler: A Batch Size and Token Number Agnostic Learning Rate
  Scheduler" (arXiv 2408.13359).
"""

import math
from collections.abc import Callable

import jax.numpy as jnp
from jax.typing import ArrayLike

from schedules._common import (
    _as_step,
    _at_or_after,
    _before,
    _decay_value,
    _elapsed,
    _exp,
    _float_dtype,
    _log,
    _min,
    _phase,
    _progress,
    _warmup_value,
)
from schedules._validation import (
    check_decay_end,
    check_decay_shape,
    check_float,
    check_int,
    check_le,
)


def power(
    batch_size: int,
    seq_len: int,
    a: ArrayLike = 4.6,
    b: ArrayLike = -0.51,
    max_lr: ArrayLike = 0.02,
    warmup_steps: int = 0,
    total_steps: int | None = None,
    decay_steps: int = 0,
    decay_shape: str = "linear",
    end_value: ArrayLike = 0.0,
) -> Callable:
    """The Power scheduler: `min(max_lr, batch_size * a * n^b)` in the tokens seen n.

    With n(t) = t * batch_size * seq_len the tokens seen before step t:

    * t < W: linear warm-up from 0 to `eta(n(W))`
    * after: `eta(n(t)) = min(max_lr, batch_size * a * n(t)^b)`; it needs no horizon
    * if `decay_steps` D > 0: over the last D steps of `total_steps` T, a decay from
      `eta(n(T - D))` to `end_value` (exponential in the paper, by recollection; linear in a
      third-party port; any of `schedules.DECAY_SHAPES`)

    The rate scales with the batch size (doubling it doubles the rate until the cap) and is
    non-increasing after warm-up (b <= 0). With a = 4.6, b = -0.51, a batch of 1024
    sequences of 4096 tokens and n = 1e11 it gives about 0.0116.

    Args:
      batch_size: sequences per step (the paper's beta; its unit, sequences or tokens, is not
        verified: sequences give the quoted magnitudes), >= 1.
      seq_len: tokens per sequence, >= 1 (1 for non-sequence data: n counts examples).
      a: the fitted amplitude, > 0 (PowerLM-3B reportedly used 4).
      b: the fitted exponent, <= 0.
      max_lr: the cap, > 0.
      warmup_steps: W >= 0.
      total_steps: T; needed only when `decay_steps` > 0.
      decay_steps: D >= 0, with W + D <= T.
      decay_shape: one of `schedules.DECAY_SHAPES`.
      end_value: the floor of the final decay, >= 0; > 0 for "exponential" and
        "inverse-proportional".

    Returns:
      A schedule: a jittable function of the 0-based step returning a float scalar.

    Example:
      >>> import schedules
      >>> lr = schedules.power(batch_size=1024, seq_len=4096)
      >>> [round(float(lr(t)), 4) for t in (1, 23842)]
      [0.02, 0.0116]

    References:
      Shen et al. 2024, "Power Scheduler: A Batch Size and Token Number Agnostic Learning
      Rate Scheduler" (arXiv 2408.13359).
    """
    where = "power"
    batch_size = check_int(where, "batch_size", batch_size, 1)
    seq_len = check_int(where, "seq_len", seq_len, 1)
    a = check_float(where, "a", a, 0.0, open_min=True)
    b = check_float(where, "b", b, None, 0.0)
    max_lr = check_float(where, "max_lr", max_lr, 0.0, open_min=True)
    warmup_steps = check_int(where, "warmup_steps", warmup_steps, 0)
    decay_steps = check_int(where, "decay_steps", decay_steps, 0)
    decay_shape = check_decay_shape(where, decay_shape)
    end_value = check_float(where, "end_value", end_value, 0.0)
    if decay_steps > 0:
        if total_steps is None:
            raise ValueError(f"{where}: `total_steps` must be given when `decay_steps` > 0")
        total_steps = check_int(where, "total_steps", total_steps, 1)
        check_le(
            where,
            "warmup_steps + decay_steps",
            warmup_steps + decay_steps,
            "total_steps",
            total_steps,
        )
        check_decay_end(where, decay_shape, end_value)
    elif total_steps is not None:
        total_steps = check_int(where, "total_steps", total_steps, 1)
    tokens_per_step = batch_size * seq_len
    log_scale = math.log(batch_size) + _log(a)

    def eta_static(t: int) -> float:
        if t <= 0:
            return max_lr
        return _min(max_lr, _exp(log_scale + b * math.log(t * tokens_per_step)))

    warmup_target = eta_static(warmup_steps)
    if decay_steps > 0:
        decay_start = total_steps - decay_steps
        decay_from = eta_static(decay_start)
        check_le(where, "end_value", end_value, "the rate where the decay starts", decay_from)

    def schedule(step):
        step = _as_step(step)
        dtype = _float_dtype()
        t = _elapsed(step, 0)
        log_tokens = jnp.log(jnp.maximum(t, 1.0)) + math.log(tokens_per_step)
        eta = jnp.minimum(max_lr, jnp.exp(log_scale + b * log_tokens))
        value = jnp.where(t > 0, eta, jnp.asarray(max_lr, dtype))
        if decay_steps > 0:
            p, q = _phase(step, decay_start, decay_steps)
            decayed = _decay_value(p, q, decay_from, end_value, decay_shape)
            value = jnp.where(_at_or_after(step, decay_start), decayed, value)
        if warmup_steps > 0:
            ramp = _warmup_value(_progress(step, 0, warmup_steps), 0.0, warmup_target, "linear")
            value = jnp.where(_before(step, warmup_steps), ramp, value)
        return value

    return schedule
