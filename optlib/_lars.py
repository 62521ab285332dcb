"""LARS: layer-wise adaptive rate scaling (You, Gitman, Ginsburg, 2017)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from optlib import _layerwise, _masks, _validation

DENOMINATORS = ("paper", "combined")


class ScaleByLarsState(NamedTuple):
    """`scale_by_lars` keeps no state of its own; LARS' momentum lives in `optax.trace`."""


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
    norm_clip: float | None = None,
) -> jax.Array:
    """The trust-ratio-scaled direction of one leaf, in the leaf's compute dtype.

    Shared by LARS and TVLARS (which passes `trust_coefficient` times its time-varying factor
    and, in the reference repository's mode, clips both norms).
    """
    dtype = _layerwise.compute_dtype(g.dtype)
    g, w = g.astype(dtype), w.astype(dtype)
    wd = weight_decay if decay else 0.0
    direction = g + wd * w if decay else g
    if not adapt:
        return direction
    w_norm = _layerwise.layer_norm(w, num_layer_axes)
    if denominator == "paper":
        den = _layerwise.layer_norm(g, num_layer_axes) + wd * w_norm
    else:
        den = _layerwise.layer_norm(direction, num_layer_axes)
    if norm_clip is not None:
        w_norm = jnp.minimum(w_norm, norm_clip)
        den = jnp.minimum(den, norm_clip)
    ok = (w_norm > 0) & (den > 0)
    ratio = jnp.where(ok, trust_coefficient * w_norm / jnp.where(ok, den + eps, 1), 1.0)
    return ratio.astype(dtype) * direction


def resolve_lars_specs(weight_decay_mask, adaptation_mask, layer_axes, params):
    return (
        _masks.resolve_mask(weight_decay_mask, params, "weight_decay_mask"),
        _masks.resolve_mask(adaptation_mask, params, "adaptation_mask"),
        _masks.resolve_layer_axes(layer_axes, params, "layer_axes"),
    )


def check_lars_args(weight_decay, trust_coefficient, eps, denominator) -> None:
    _validation.check_non_negative("weight_decay", weight_decay)
    _validation.check_range("trust_coefficient", trust_coefficient, 0.0, None, low_open=True)
    _validation.check_non_negative("eps", eps)
    _validation.check_choice("denominator", denominator, DENOMINATORS)


def scale_by_lars(
    weight_decay: float = 0.0,
    trust_coefficient: float = 1e-3,
    eps: float = 0.0,
    denominator: str = "paper",
    weight_decay_mask: _masks.PerLeafSpec = None,
    adaptation_mask: _masks.PerLeafSpec = None,
    layer_axes: _masks.PerLeafSpec = None,
) -> optax.GradientTransformation:
    r"""Scales the weight-decayed gradient by LARS' layer-wise trust ratio.

    For each layer :math:`l` with weight decay :math:`\beta` and trust coefficient
    :math:`\eta`:

    .. math::
        u_l = \lambda_l \,(g_l + \beta w_l), \qquad
        \lambda_l = \frac{\eta \|w_l\|}{D_l + \epsilon}, \qquad
        D_l = \begin{cases}
            \|g_l\| + \beta \|w_l\| & \text{denominator="paper"} \\
            \|g_l + \beta w_l\| & \text{denominator="combined"} \end{cases}

    with :math:`\lambda_l = 1` when :math:`\|w_l\| = 0` or :math:`D_l = 0`. The paper's
    denominator is the default; "combined" is what `optax.lars` computes (the two agree only
    when :math:`\beta = 0`). Where `adaptation_mask` is False, :math:`\lambda_l = 1` (plain
    SGD direction); where `weight_decay_mask` is False, :math:`\beta = 0` for that leaf.

    Args:
      weight_decay: coupled weight decay :math:`\beta`, >= 0.
      trust_coefficient: :math:`\eta > 0`.
      eps: added to the denominator, >= 0.
      denominator: "paper" or "combined" (see above).
      weight_decay_mask: which leaves get weight decay (True = decayed). None: every leaf.
      adaptation_mask: which leaves get a trust ratio. None: every leaf.
      layer_axes: per leaf, how many leading axes index stacked layers (see
        `optlib.masks.stacked_layers`). None: one ratio per leaf.

    Returns:
      A stateless `GradientTransformation` (state `ScaleByLarsState()`).

    References:
      You, Gitman, Ginsburg, "Large Batch Training of Convolutional Networks",
      arXiv:1708.03888, 2017.
    """
    check_lars_args(weight_decay, trust_coefficient, eps, denominator)

    def init_fn(params):
        resolve_lars_specs(weight_decay_mask, adaptation_mask, layer_axes, params)
        return ScaleByLarsState()

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("scale_by_lars needs the current params: call update(g, s, params)")
        flags = resolve_lars_specs(weight_decay_mask, adaptation_mask, layer_axes, params)
        treedef = jax.tree.structure(params)
        out = [
            lars_direction(
                g,
                w,
                weight_decay=weight_decay,
                trust_coefficient=trust_coefficient,
                eps=eps,
                denominator=denominator,
                decay=decay,
                adapt=adapt,
                num_layer_axes=num_axes,
            ).astype(g.dtype)
            for g, w, decay, adapt, num_axes in zip(
                treedef.flatten_up_to(updates), jax.tree.leaves(params), *flags, strict=True
            )
        ]
        return treedef.unflatten(out), state

    return optax.GradientTransformation(init_fn, update_fn)


def lars(
    learning_rate: optax.ScalarOrSchedule,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    trust_coefficient: float = 1e-3,
    eps: float = 0.0,
    nesterov: bool = False,
    denominator: str = "paper",
    weight_decay_mask: _masks.PerLeafSpec = None,
    adaptation_mask: _masks.PerLeafSpec = None,
    layer_axes: _masks.PerLeafSpec = None,
) -> optax.GradientTransformation:
    r"""LARS: momentum SGD with a layer-wise trust ratio.

    With :math:`u_l` from `scale_by_lars` and learning rate :math:`\gamma_t`, the learning rate
    sits inside the momentum, as in the paper:

    .. math::
        v_l \leftarrow m\, v_l + \gamma_t u_l, \qquad w_l \leftarrow w_l - v_l

    (Nesterov: :math:`w_l \leftarrow w_l - (m\, v_l + \gamma_t u_l)`). With :math:`\beta = 0`
    and no momentum each layer moves by exactly :math:`\gamma_t \eta \|w_l\|` per step.

    Args:
      learning_rate: a float >= 0 or a schedule (a callable of the step count).
      momentum: momentum :math:`m` in [0, 1).
      nesterov: use Nesterov momentum.
      weight_decay, trust_coefficient, eps, denominator, weight_decay_mask, adaptation_mask,
        layer_axes: see `scale_by_lars`.

    Returns:
      A `GradientTransformation`:
      `optax.chain(scale_by_lars(...), scale_by_learning_rate, trace(momentum))`.

    Example:
      >>> import jax, jax.numpy as jnp, optax, optlib
      >>> params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
      >>> opt = optlib.lars(0.1, weight_decay=5e-4, weight_decay_mask=optlib.masks.exclude_1d,
      ...                   adaptation_mask=optlib.masks.exclude_1d)
      >>> state = opt.init(params)
      >>> grads = jax.tree.map(jnp.ones_like, params)
      >>> updates, state = opt.update(grads, state, params)
      >>> params = optax.apply_updates(params, updates)

    References:
      You, Gitman, Ginsburg, "Large Batch Training of Convolutional Networks",
      arXiv:1708.03888, 2017.
    """
    _validation.check_learning_rate(learning_rate)
    _validation.check_beta("momentum", momentum)
    return optax.chain(
        scale_by_lars(
            weight_decay=weight_decay,
            trust_coefficient=trust_coefficient,
            eps=eps,
            denominator=denominator,
            weight_decay_mask=weight_decay_mask,
            adaptation_mask=adaptation_mask,
            layer_axes=layer_axes,
        ),
        optax.scale_by_learning_rate(learning_rate),
        optax.trace(decay=momentum, nesterov=nesterov),
    )
