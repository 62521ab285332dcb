"""Shared pieces of the layer-wise (trust-ratio) optimizers: per-layer norms and safe ratios.

A "layer" is one leaf of the parameter tree, or one slice along the leading layer axes of a
leaf that stacks several layers (see `optlib.masks.stacked_layers`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def compute_dtype(dtype) -> jnp.dtype:
    """The dtype updates are computed in: at least float32, so bfloat16 norms do not stall."""
    return jnp.promote_types(dtype, jnp.float32)


def layer_norm(x: jax.Array, num_layer_axes: int) -> jax.Array:
    """Euclidean norm over each layer of `x`, shaped to broadcast against `x`.

    Args:
      x: one leaf, already in its compute dtype.
      num_layer_axes: how many leading axes index stacked layers (0: the leaf is one layer).
    """
    axes = tuple(range(num_layer_axes, x.ndim))
    return jnp.sqrt(jnp.sum(jnp.square(x), axis=axes, keepdims=True))


def safe_ratio(numerator: jax.Array, denominator: jax.Array) -> jax.Array:
    """`numerator / denominator` where both are > 0, else 1.

    Every reference implementation of LARS and LAMB falls back to a ratio of 1 when the
    weight norm or the update norm is zero (fresh zero-initialised biases, a zero gradient).
    """
    ok = (numerator > 0) & (denominator > 0)
    return jnp.where(ok, numerator / jnp.where(ok, denominator, 1), jnp.ones_like(numerator))
