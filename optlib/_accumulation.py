"""Gradient accumulation that also accumulates the loss: `multi_steps`."""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from optlib import _numerics


class MultiStepsState(NamedTuple):
    """State of `multi_steps`."""

    mini_step: jax.Array  # int32: micro-batches accumulated since the last update.
    gradient_step: jax.Array  # int32: updates of the inner optimizer so far.
    acc_grads: optax.Updates  # running mean of the micro-batch gradients (float32 or wider).
    acc_value: jax.Array  # running mean of the micro-batch losses (0 when none are given).
    inner_state: optax.OptState


def multi_steps(
    inner: optax.GradientTransformation,
    every_k_schedule: int | Callable[[jax.Array], jax.Array],
) -> optax.GradientTransformationExtraArgs:
    r"""Accumulates k micro-batches into one update, losses included.

    Like ``optax.MultiSteps`` (mean of the micro-batch gradients, zero updates in between),
    with two differences that matter for optimizers whose update takes more than the
    gradient:

    * a ``value=`` (the micro-batch loss, as MoMo takes it) is averaged too, and the inner
      update gets the mean: with micro-batches :math:`B_1, \dots, B_k` of equal size it sees
      :math:`\bar g = \frac1k \sum_i \nabla f_{B_i}` and :math:`\bar f = \frac1k \sum_i
      f_{B_i}`, the full batch's gradient and loss. ``optax.MultiSteps`` passes the last
      micro-batch's loss with the mean gradient, so MoMo's step size is set by one
      micro-batch.
    * the inner update runs only on the k-th micro-batch (under ``lax.cond``);
      ``optax.MultiSteps`` runs it on every micro-batch and discards the result.

    A ``grad_fn=`` (SAM's opaque mode) cannot be accumulated: it is a function of one
    micro-batch, and the k-th one's would be applied to all. `multi_steps` raises on it. For
    SAM with accumulation, take each micro-batch's SAM gradient with
    `optlib.sam_value_and_grad` and accumulate those around the base optimizer: each
    micro-batch then gets its own perturbation (m-sharpness with m the micro-batch size,
    which is what the reference does per device).

    Other extra keyword arguments are passed to the inner update at the k-th micro-batch.

    Args:
      inner: the optimizer to accumulate for.
      every_k_schedule: k, an int >= 1 or a function of the inner update count (as in
        ``optax.MultiSteps``).

    Returns:
      A `GradientTransformationExtraArgs` whose state is a `MultiStepsState`.

    Example:
      >>> import jax, jax.numpy as jnp, optax, optlib
      >>> opt = optlib.multi_steps(optlib.momo(10.0), every_k_schedule=2)
      >>> params = jnp.array([1.0, 2.0])
      >>> state = opt.init(params)
      >>> for target in (0.0, 2.0):  # two micro-batches, losses 2.5 and 0.5
      ...     loss = lambda p: jnp.sum((p - target) ** 2) / 2
      ...     value, grads = jax.value_and_grad(loss)(params)
      ...     updates, state = opt.update(grads, state, params, value=value)
      ...     params = optax.apply_updates(params, updates)
      >>> params  # the Polyak step on the mean: tau = 1.5 / |(0, 1)|^2
      Array([1. , 0.5], dtype=float32)
    """
    if not callable(every_k_schedule):
        if (
            isinstance(every_k_schedule, bool)
            or not isinstance(every_k_schedule, int)
            or every_k_schedule < 1
        ):
            raise ValueError(
                f"every_k_schedule must be an int >= 1 or a schedule, got {every_k_schedule!r}"
            )
    inner = optax.with_extra_args_support(inner)

    def k_at(count):
        k = every_k_schedule(count) if callable(every_k_schedule) else every_k_schedule
        return jnp.asarray(k, jnp.int32)

    def init_fn(params):
        wide = lambda x: jnp.zeros_like(x, _numerics.wide(x.dtype))  # noqa: E731
        return MultiStepsState(
            mini_step=jnp.zeros([], jnp.int32),
            gradient_step=jnp.zeros([], jnp.int32),
            acc_grads=jax.tree.map(wide, params),
            acc_value=jnp.zeros([], _numerics.scalar_dtype(params)),
            inner_state=inner.init(params),
        )

    def update_fn(updates, state, params=None, *, value=None, grad_fn=None, **extra_args):
        if grad_fn is not None:
            raise ValueError(
                "multi_steps cannot accumulate grad_fn (SAM's opaque mode): it belongs to one "
                "micro-batch. Take each micro-batch's SAM gradient with "
                "optlib.sam_value_and_grad and accumulate around the base optimizer instead"
            )
        k = k_at(state.gradient_step)
        n = state.mini_step + 1
        # Running means: acc += (x - acc) / n, in float32 or wider.
        acc_grads = jax.tree.map(
            lambda g, acc: acc + (g.astype(acc.dtype) - acc) / n.astype(acc.dtype),
            updates,
            state.acc_grads,
        )
        acc_value = state.acc_value
        if value is not None:
            v = jnp.asarray(value).astype(acc_value.dtype)
            acc_value = acc_value + (v - acc_value) / n.astype(acc_value.dtype)
        emit = state.mini_step == k - 1

        def apply(inner_state):
            grads = jax.tree.map(lambda a, g: a.astype(g.dtype), acc_grads, updates)
            kwargs = dict(extra_args) if value is None else {**extra_args, "value": acc_value}
            return inner.update(grads, inner_state, params, **kwargs)

        def wait(inner_state):
            return jax.tree.map(jnp.zeros_like, updates), inner_state

        new_updates, inner_state = jax.lax.cond(emit, apply, wait, state.inner_state)
        keep = lambda x: jnp.where(emit, jnp.zeros_like(x), x)  # noqa: E731
        new_state = MultiStepsState(
            mini_step=jnp.where(emit, 0, n).astype(jnp.int32),
            gradient_step=state.gradient_step + emit.astype(jnp.int32),
            acc_grads=jax.tree.map(keep, acc_grads),
            acc_value=keep(acc_value),
            inner_state=inner_state,
        )
        return new_updates, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
