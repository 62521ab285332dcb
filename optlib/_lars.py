"""LARS: layer-wise adaptive rate scaling (You, Gitman, Ginsburg, 2017)."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from optlib import _layerwise, _masks, _numerics, _validation


class ScaleByLarsState(NamedTuple):
    """State of `scale_by_lars`: the step count (for a weight-decay schedule).

    LARS' momentum lives in the chain's momentum transform (an ``optax.TraceState``).
    """

    count: jax.Array  # int32 scalar: number of updates applied so far.


def scale_by_lars(
    weight_decay: ArrayLike = 0.0,
    trust_coefficient: ArrayLike = 1e-3,
    eps: ArrayLike = 0.0,
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


    Complex params are supported (pass conjugated gradients): the norms are of :math:`|w|`
    and :math:`|g|`.
    Args:
      weight_decay: coupled weight decay :math:`\beta`, >= 0, or a schedule of the step
        count (0-based).
      trust_coefficient: :math:`\eta > 0`.
      eps: added to the denominator, >= 0.
      denominator: "paper" or "combined" (see above).
      weight_decay_mask: which leaves get weight decay (True = decayed). None: every leaf.
      adaptation_mask: which leaves get a trust ratio. None: every leaf.
      layer_axes: per leaf, how many leading axes index stacked layers (see
        `optlib.masks.stacked_layers`). None: one ratio per leaf.

    Returns:
      A `GradientTransformation` whose state is a `ScaleByLarsState`.

    References:
      You, Gitman, Ginsburg, "Large Batch Training of Convolutional Networks",
      arXiv:1708.03888, 2017.
    """
    _layerwise.check_lars_args(weight_decay, trust_coefficient, eps, denominator)

    def init_fn(params):
        _layerwise.resolve_lars_specs(weight_decay_mask, adaptation_mask, layer_axes, params)
        return ScaleByLarsState(count=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        _numerics.require_params(params, "scale_by_lars")
        flags = _layerwise.resolve_lars_specs(
            weight_decay_mask, adaptation_mask, layer_axes, params
        )
        out = _layerwise.lars_updates(
            updates,
            params,
            flags,
            weight_decay=_numerics.value_at(weight_decay, state.count),
            trust_coefficient=trust_coefficient,
            eps=eps,
            denominator=denominator,
        )
        return out, ScaleByLarsState(count=optax.safe_increment(state.count))

    return optax.GradientTransformation(init_fn, update_fn)


def lars(
    learning_rate: optax.ScalarOrSchedule,
    *,
    momentum: ArrayLike = 0.9,
    weight_decay: ArrayLike = 0.0,
    trust_coefficient: ArrayLike = 1e-3,
    eps: ArrayLike = 0.0,
    nesterov: bool = False,
    denominator: str = "paper",
    weight_decay_mask: _masks.PerLeafSpec = None,
    adaptation_mask: _masks.PerLeafSpec = None,
    layer_axes: _masks.PerLeafSpec = None,
    moment_dtype: Any = None,
) -> optax.GradientTransformation:
    r"""LARS: momentum SGD with a layer-wise trust ratio.

    With :math:`u_l` from `scale_by_lars` and learning rate :math:`\gamma_t`, the learning rate
    sits inside the momentum, as in the paper:

    .. math::
        v_l \leftarrow m\, v_l + \gamma_t u_l, \qquad w_l \leftarrow w_l - v_l

    (Nesterov: :math:`w_l \leftarrow w_l - (m\, v_l + \gamma_t u_l)`). With :math:`\beta = 0`
    and no momentum each layer moves by exactly :math:`\gamma_t \eta \|w_l\|` per step.

    Because the learning rate sits inside the momentum, :math:`\gamma_t = 0` does not freeze
    LARS: the params keep moving by :math:`m\, v_l` (decaying geometrically) after the rate
    reaches 0, for example at the end of a schedule that decays to 0. To stop at once, stop
    applying the updates; a chain with the rate after the momentum,
    ``optax.chain(optlib.scale_by_lars(...), optax.trace(m), optax.scale_by_learning_rate(lr))``,
    stops with the rate but is not the paper's update.


    Arguments after the learning rate are keyword-only: ``optax.lars`` orders them
    differently, so a positional call written for it fails instead of setting another
    argument (the README's table maps the names).
    Args:
      learning_rate: a float >= 0 or a schedule (a callable of the step count).
      momentum: momentum :math:`m` in [0, 1).
      nesterov: use Nesterov momentum.
      weight_decay, trust_coefficient, eps, denominator, weight_decay_mask, adaptation_mask,
        layer_axes: see `scale_by_lars` (`weight_decay` may be a schedule of the step).
      moment_dtype: dtype of the momentum buffer; None (default): the params' dtype widened
        to at least float32, so bfloat16 params keep a float32 buffer.

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
    _validation.check_float_dtype("moment_dtype", moment_dtype)
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
        _layerwise.momentum(momentum, nesterov, moment_dtype),
    )
