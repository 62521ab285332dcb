"""Shared pieces of the layer-wise (trust-ratio) optimizers: per-layer norms, ratios, LARS' step.

A "layer" is one leaf of the parameter tree, or one slice along the leading layer axes of a
leaf that stacks several layers (see `optlib.masks.stacked_layers`). LARS and TVLARS share
`lars_direction` and the checks and mask resolution of their common arguments; LAMB shares
the norms and the safe ratio.
"""

from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from optlib import _masks, _numerics, _validation

DENOMINATORS = ("paper", "combined")


def layer_norm(x: jax.Array, num_layer_axes: int) -> jax.Array:
    """Euclidean norm over each layer of `x` (of :math:`|x|` for complex `x`), broadcastable.

    Args:
      x: one leaf, already in its compute dtype.
      num_layer_axes: how many leading axes index stacked layers (0: the leaf is one layer).
    """
    axes = tuple(range(num_layer_axes, x.ndim))
    return jnp.sqrt(jnp.sum(_numerics.abs_sq(x), axis=axes, keepdims=True))


def safe_ratio(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
    """`numerator / denominator` where both are > 0, else 1.

    Every reference implementation of LARS and LAMB falls back to a ratio of 1 when the
    weight norm or the update norm is zero (fresh zero-initialised biases, a zero gradient).
    """
    ok = (numerator > 0) & (denominator > 0)
    return jnp.where(ok, numerator / jnp.where(ok, denominator, 1), jnp.ones_like(numerator))


def lars_direction(
    g: jax.Array,
    w: jax.Array,
    *,
    weight_decay,
    trust_coefficient,
    eps,
    denominator: str,
    decay: bool,
    adapt: bool,
    num_layer_axes: int,
    norm_clip: ArrayLike | None = None,
) -> jax.Array:
    """LARS' trust-ratio-scaled direction of one leaf, in the leaf's compute dtype.

    Shared by LARS and TVLARS (which passes `trust_coefficient` times its time-varying factor
    and, in the reference repository's mode, clips both norms).
    """
    dtype = _numerics.wide(g.dtype)
    g, w = g.astype(dtype), w.astype(dtype)
    wd = weight_decay if decay else 0.0
    direction = g + wd * w if decay else g
    if not adapt:
        return direction
    w_norm = layer_norm(w, num_layer_axes)
    if denominator == "paper":
        den = layer_norm(g, num_layer_axes) + wd * w_norm
    else:
        den = layer_norm(direction, num_layer_axes)
    if norm_clip is not None:
        w_norm = jnp.minimum(w_norm, norm_clip)
        den = jnp.minimum(den, norm_clip)
    ok = (w_norm > 0) & (den > 0)
    ratio = jnp.where(ok, trust_coefficient * w_norm / jnp.where(ok, den + eps, 1), 1.0)
    return ratio.astype(dtype) * direction


def lars_updates(updates, params, specs, **direction_kwargs):
    """`lars_direction` on every leaf, cast back to the updates' dtypes.

    Args:
      updates: the gradients (a tree like `params`).
      params: the current params.
      specs: `resolve_lars_specs(...)` for `params`.
      **direction_kwargs: the hyper-parameters of `lars_direction`.
    """
    treedef = jax.tree.structure(params)
    out = [
        lars_direction(
            g, w, decay=decay, adapt=adapt, num_layer_axes=num_axes, **direction_kwargs
        ).astype(g.dtype)
        for g, w, decay, adapt, num_axes in zip(
            treedef.flatten_up_to(updates), jax.tree.leaves(params), *specs, strict=True
        )
    ]
    return treedef.unflatten(out)


def resolve_lars_specs(weight_decay_mask, adaptation_mask, layer_axes, params):
    """One decay flag, adaptation flag and layer-axis count per leaf of `params`."""
    return (
        _masks.resolve_mask(weight_decay_mask, params, "weight_decay_mask"),
        _masks.resolve_mask(adaptation_mask, params, "adaptation_mask"),
        _masks.resolve_layer_axes(layer_axes, params, "layer_axes"),
    )


def check_lars_args(weight_decay, trust_coefficient, eps, denominator) -> None:
    """The construction-time checks of the arguments LARS and TVLARS share."""
    _validation.check_non_negative("weight_decay", weight_decay, schedule_ok=True)
    _validation.check_range("trust_coefficient", trust_coefficient, 0.0, None, low_open=True)
    _validation.check_non_negative("eps", eps)
    _validation.check_choice("denominator", denominator, DENOMINATORS)


def moment_dtype_of(moment_dtype: Any, leaf: Any) -> jnp.dtype:
    """A moment's dtype for `leaf`: `moment_dtype`, or the leaf's widened to float32 (None).

    Complex leaves keep complex moments (of the given precision).
    """
    if moment_dtype is None:
        return _numerics.wide(leaf.dtype)
    return _numerics.complex_if(jnp.dtype(moment_dtype), leaf)


def momentum(decay: Any, nesterov: bool, moment_dtype: Any = None) -> optax.GradientTransformation:
    """``optax.trace`` with its buffer in `moment_dtype` (None: at least float32).

    The buffer of bfloat16 params is float32 by default, so small steps are not rounded away;
    the output has the dtype of the incoming updates. With float32 params it computes what
    ``optax.trace`` computes (and keeps an ``optax.TraceState``).
    """

    def init_fn(params):
        return optax.TraceState(
            trace=jax.tree.map(
                lambda p: jnp.zeros_like(p, moment_dtype_of(moment_dtype, p)), params
            )
        )

    def update_fn(updates, state, params=None):
        del params
        f = lambda g, t: g + decay * t  # noqa: E731
        new_trace = jax.tree.map(f, updates, state.trace)
        out = jax.tree.map(f, updates, new_trace) if nesterov else new_trace
        out = jax.tree.map(lambda u, g: u.astype(g.dtype), out, updates)
        new_trace = jax.tree.map(lambda n, t: n.astype(t.dtype), new_trace, state.trace)
        return out, optax.TraceState(trace=new_trace)

    return optax.GradientTransformation(init_fn, update_fn)
