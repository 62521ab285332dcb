"""LAMB: layer-wise adaptive moments for large-batch training (You et al., 2020)."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from optlib import _layerwise, _masks, _numerics, _validation


class ScaleByLambState(NamedTuple):
    """State of `scale_by_lamb`: the step count and Adam's two moments."""

    count: jax.Array  # int32 scalar: number of updates applied so far.
    mu: optax.Updates  # first moment, shaped like the params (float32 for 16-bit params).
    nu: optax.Updates  # second moment, shaped like the params (real, float32 for 16-bit).


def scale_by_lamb(
    b1: ArrayLike = 0.9,
    b2: ArrayLike = 0.999,
    eps: ArrayLike = 1e-6,
    weight_decay: ArrayLike = 0.0,
    weight_decay_mask: _masks.PerLeafSpec = None,
    adaptation_mask: _masks.PerLeafSpec = None,
    trust_clip: ArrayLike | None = None,
    layer_axes: _masks.PerLeafSpec = None,
    moment_dtype: Any = None,
) -> optax.GradientTransformation:
    r"""Rescales updates by LAMB's layer-wise trust ratio (learning rate not applied).

    For each layer :math:`l` (a leaf, or a slice of a stacked leaf), at step
    :math:`t = 1, 2, \dots`:

    .. math::
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
        r_t &= \frac{m_t / (1 - \beta_1^t)}{\sqrt{v_t / (1 - \beta_2^t)} + \epsilon}
              + \lambda w_{t-1} \\
        \tau_t &= \min\!\left(\frac{\|w_{t-1}\|}{\|r_t\|}, c\right)
        \quad (\tau_t = 1 \text{ if either norm is } 0), \qquad
        u_t = \tau_t r_t

    This is the TF-Addons reference (the implementation the paper names): decoupled weight
    decay is added to the Adam direction before the trust ratio, and the ratio uses the
    identity scaling function with no clipping (:math:`c = \infty`) unless `trust_clip` is set.
    Where `adaptation_mask` is False the ratio is 1 (plain AdamW direction for that leaf).


    Complex params are supported as in optax (pass conjugated gradients): the second moment
    is of :math:`|g|^2` and kept real, and the trust ratio uses the norms of :math:`|w|` and
    :math:`|r|`.
    Args:
      b1: decay rate of the first moment, in [0, 1).
      b2: decay rate of the second moment, in [0, 1).
      eps: added to the root of the second moment, >= 0.
      weight_decay: decoupled weight decay :math:`\lambda`, >= 0, or a schedule of the step
        count (evaluated at the 0-based count, as `optax.adamw` does).
      weight_decay_mask: which leaves get weight decay (True = decayed); a pytree, a prefix of
        one, or a callable of the params, e.g. `optlib.masks.exclude_1d`. None: every leaf.
      adaptation_mask: which leaves get a trust ratio. None: the same as `weight_decay_mask`,
        as in TF-Addons, where `exclude_from_layer_adaptation` defaults to the decay list.
      trust_clip: optional upper bound :math:`c > 0` on the trust ratio.
      layer_axes: per leaf, how many leading axes index stacked layers, each slice getting
        its own ratio (see `optlib.masks.stacked_layers`). None: one ratio per leaf.
      moment_dtype: dtype of both moments (the second is kept real); None (default): the
        params' dtype widened to at least float32, so the second moment of bfloat16 params
        keeps decaying (in bfloat16, :math:`\beta_2 v` rounds back to :math:`v`).

    Returns:
      A `GradientTransformation` whose state is a `ScaleByLambState`.

    References:
      You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76 minutes",
      ICLR 2020, arXiv:1904.00962.
    """
    _validation.check_beta("b1", b1)
    _validation.check_beta("b2", b2)
    _validation.check_non_negative("eps", eps)
    _validation.check_non_negative("weight_decay", weight_decay, schedule_ok=True)
    if trust_clip is not None:
        _validation.check_range("trust_clip", trust_clip, 0.0, None, low_open=True)
    _validation.check_float_dtype("moment_dtype", moment_dtype)
    if adaptation_mask is None:
        adaptation_mask = weight_decay_mask

    def resolve(params):
        return _layerwise.resolve_lars_specs(weight_decay_mask, adaptation_mask, layer_axes, params)

    def dtype_of(p):
        return _layerwise.moment_dtype_of(moment_dtype, p)

    def init_fn(params):
        resolve(params)  # a mask that does not fit the params fails here, not mid-training
        return ScaleByLambState(
            count=jnp.zeros([], jnp.int32),
            mu=jax.tree.map(lambda p: jnp.zeros_like(p, dtype_of(p)), params),
            # |g|^2 is real: complex params get a real second moment.
            nu=jax.tree.map(lambda p: jnp.zeros_like(p, _numerics.real_dtype(dtype_of(p))), params),
        )

    def update_fn(updates, state, params=None):
        _numerics.require_params(params, "scale_by_lamb")
        decay_flags, adapt_flags, axes = resolve(params)
        wd = _numerics.value_at(weight_decay, state.count)
        count = optax.safe_increment(state.count)
        treedef = jax.tree.structure(params)
        out_u, out_m, out_v = [], [], []
        leaves = zip(
            treedef.flatten_up_to(updates),
            treedef.flatten_up_to(state.mu),
            treedef.flatten_up_to(state.nu),
            jax.tree.leaves(params),
            decay_flags,
            adapt_flags,
            axes,
            strict=True,
        )
        for g, m, v, w, decay, adapt, num_axes in leaves:
            dtype = _numerics.wide(g.dtype)
            g32, w32 = g.astype(dtype), w.astype(dtype)
            real = _numerics.real_dtype(dtype)
            t = count.astype(real)
            m_new = b1 * m.astype(dtype) + (1 - b1) * g32
            v_new = b2 * v.astype(real) + (1 - b2) * _numerics.abs_sq(g32)
            m_hat = m_new / (1 - b1**t)
            v_hat = v_new / (1 - b2**t)
            r = m_hat / (jnp.sqrt(v_hat) + eps)
            if decay:
                r = r + wd * w32
            if adapt:
                ratio = _layerwise.safe_ratio(
                    _layerwise.layer_norm(w32, num_axes), _layerwise.layer_norm(r, num_axes)
                )
                if trust_clip is not None:
                    ratio = jnp.minimum(ratio, trust_clip)
                r = ratio * r
            out_u.append(r.astype(g.dtype))
            out_m.append(m_new.astype(m.dtype))
            out_v.append(v_new.astype(v.dtype))
        new_state = ScaleByLambState(count, treedef.unflatten(out_m), treedef.unflatten(out_v))
        return treedef.unflatten(out_u), new_state

    return optax.GradientTransformation(init_fn, update_fn)


def lamb(
    learning_rate: optax.ScalarOrSchedule,
    *,
    b1: ArrayLike = 0.9,
    b2: ArrayLike = 0.999,
    eps: ArrayLike = 1e-6,
    weight_decay: ArrayLike = 0.0,
    weight_decay_mask: _masks.PerLeafSpec = None,
    adaptation_mask: _masks.PerLeafSpec = None,
    trust_clip: ArrayLike | None = None,
    layer_axes: _masks.PerLeafSpec = None,
    moment_dtype: Any = None,
) -> optax.GradientTransformation:
    r"""LAMB: Adam with decoupled weight decay and a layer-wise trust ratio.

    The update is :math:`w_t = w_{t-1} - \eta_t \tau_t r_t` with :math:`r_t, \tau_t` as in
    `scale_by_lamb`, so each layer moves by :math:`\eta_t \|w_{t-1}\|` per step (before any
    `trust_clip`), whatever the scale of its gradient.

    A consequence that surprises: with weight decay, LAMB moves even where the gradient is
    zero. Then :math:`r_t = \lambda w` (once the moments have decayed), the trust ratio is
    :math:`\|w\| / \|\lambda w\| = 1/\lambda`, and the step is :math:`-\eta_t w`: the layer
    shrinks by the factor :math:`1 - \eta_t` per step, whatever :math:`\lambda > 0` is (the
    TF-Addons reference does the same). Exclude such leaves with `weight_decay_mask`.


    Arguments after the learning rate are keyword-only: ``optax.lamb`` orders them
    differently, so a positional call written for it fails instead of setting another
    argument (the README's table maps the names).
    Args:
      learning_rate: a float >= 0 or a schedule (a callable of the step count).
      b1, b2, eps, weight_decay, weight_decay_mask, adaptation_mask, trust_clip, layer_axes,
        moment_dtype: see `scale_by_lamb`.

    Returns:
      A `GradientTransformation`: `optax.chain(scale_by_lamb(...), scale_by_learning_rate)`.

    Example:
      >>> import jax, jax.numpy as jnp, optax, optlib
      >>> params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
      >>> opt = optlib.lamb(1e-2, weight_decay=0.01, weight_decay_mask=optlib.masks.exclude_1d)
      >>> state = opt.init(params)
      >>> grads = jax.tree.map(jnp.ones_like, params)
      >>> updates, state = opt.update(grads, state, params)
      >>> params = optax.apply_updates(params, updates)

    References:
      You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76 minutes",
      ICLR 2020, arXiv:1904.00962.
    """
    _validation.check_learning_rate(learning_rate)
    return optax.chain(
        scale_by_lamb(
            b1=b1,
            b2=b2,
            eps=eps,
            weight_decay=weight_decay,
            weight_decay_mask=weight_decay_mask,
            adaptation_mask=adaptation_mask,
            trust_clip=trust_clip,
            layer_axes=layer_axes,
            moment_dtype=moment_dtype,
        ),
        optax.scale_by_learning_rate(learning_rate),
    )
