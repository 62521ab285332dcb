"""DoG and L-DoG: the parameter-free "distance over gradients" step size (Ivgi et al., 2023)."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from optlib import _masks, _numerics, _validation


class ScaleByDogState(NamedTuple):
    """State of `scale_by_dog` / `dog`.

    For DoG the three statistics are scalars; for L-DoG (``layerwise=True``) they are pytrees of
    scalars with the params' structure, one per leaf. They are float32 or wider whatever the
    params' dtype, so the sum of squared gradient norms keeps growing for bfloat16 params.
    """

    count: jax.Array  # int32 scalar: number of updates applied so far.
    x0: optax.Params  # a copy of the initial params, in the params' dtype.
    rbar: Any  # running max distance from x0, started at r_eps.
    sum_sq: Any  # eps + sum of squared gradient norms so far (G).
    eta: Any  # the step size of the last update (0 before the first one).


def _dog(
    learning_rate: optax.ScalarOrSchedule,
    reps_rel: Any,
    eps: Any,
    weight_decay: Any,
    init_eta: Any,
    layerwise: bool,
    sign: float,
    weight_decay_mask: _masks.PerLeafSpec = None,
) -> optax.GradientTransformationExtraArgs:
    """The shared transform: updates are ``sign * eta * (g + weight_decay * x)``."""
    decay = not _validation.is_zero(weight_decay)

    def decayed(params):
        """One bool per leaf (True: weight decay), as a tree like `params`."""
        flags = _masks.resolve_mask(weight_decay_mask, params, "weight_decay_mask")
        return jax.tree.structure(params).unflatten(flags)

    def init_fn(params):
        decayed(params)  # a mask that does not fit the params fails here, not mid-training
        dtype = _numerics.scalar_dtype(params)
        # A copy, not an alias: a jitted step that donates params and state must not find x0
        # deleted along with the old params.
        x0 = jax.tree.map(jnp.copy, params)
        # L-DoG's reference ignores reps_rel when init_eta is given (r_eps = 0), and so do we.
        rel = 0.0 if init_eta is not None else reps_rel
        if layerwise:
            rbar = jax.tree.map(lambda x: rel * (1 + jnp.sqrt(_numerics.sq_norm(x, dtype))), params)
            sum_sq = jax.tree.map(lambda x: jnp.asarray(eps, dtype), params)
            eta = jax.tree.map(lambda x: jnp.zeros([], dtype), params)
        else:
            norm = jnp.sqrt(_numerics.tree_sq_norm(params, dtype))
            rbar = jnp.asarray(rel * (1 + norm), dtype)
            sum_sq = jnp.asarray(eps, dtype)
            eta = jnp.zeros([], dtype)
        return ScaleByDogState(
            count=jnp.zeros([], jnp.int32),
            x0=x0,
            rbar=jax.tree.map(lambda r: jnp.asarray(r, dtype), rbar),
            sum_sq=sum_sq,
            eta=eta,
        )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args  # DoG needs nothing beyond the params; other arguments are ignored
        _numerics.require_params(params, "DoG")
        dtype = _numerics.scalar_dtype(params)
        c = _numerics.lr_at(learning_rate, state.count, dtype)
        wd = _numerics.value_at(weight_decay, state.count)
        flags = decayed(params)

        def direction(g, x, on):
            # The coupled L2 term of the reference: g <- g + wd * x, also inside G.
            g = g.astype(_numerics.complex_if(dtype, g))
            if not (decay and on):
                return g
            return g + jnp.asarray(wd, dtype) * x.astype(_numerics.complex_if(dtype, x))

        # Both reductions read only inputs (g, x, x0), so no param-sized temporary is written.
        g_sq = jax.tree.map(
            lambda g, x, on: _numerics.sq_norm(direction(g, x, on), dtype), updates, params, flags
        )
        dist_sq = jax.tree.map(
            lambda x, x0: _numerics.sq_norm(x.astype(_numerics.complex_if(dtype, x)) - x0, dtype),
            params,
            state.x0,
        )

        def step_size(rbar, sum_sq, g_sq, dist_sq):
            # r_eps stays in the running max forever (rbar starts at r_eps), and eps is in G once.
            rbar = jnp.maximum(rbar, jnp.sqrt(dist_sq))
            sum_sq = sum_sq + g_sq
            safe = jnp.where(sum_sq > 0, sum_sq, 1)
            eta = jnp.where(sum_sq > 0, c * rbar / jnp.sqrt(safe), 0)
            if init_eta is not None:
                eta = jnp.where(state.count == 0, jnp.asarray(init_eta, dtype), eta)
            return rbar, sum_sq, eta

        if layerwise:
            treedef = jax.tree.structure(params)
            stats = [
                step_size(*leaf)
                for leaf in zip(
                    treedef.flatten_up_to(state.rbar),
                    treedef.flatten_up_to(state.sum_sq),
                    treedef.flatten_up_to(g_sq),
                    treedef.flatten_up_to(dist_sq),
                    strict=True,
                )
            ]
            rbar, sum_sq, eta = _numerics.unzip(treedef, stats, 3)
            etas = eta
        else:
            rbar, sum_sq, eta = step_size(
                state.rbar,
                state.sum_sq,
                _numerics.tree_sum(g_sq, dtype),
                _numerics.tree_sum(dist_sq, dtype),
            )
            etas = jax.tree.map(lambda _: eta, params)

        new_updates = jax.tree.map(
            lambda g, x, e, on: (sign * e * direction(g, x, on)).astype(g.dtype),
            updates,
            params,
            etas,
            flags,
        )
        new_state = ScaleByDogState(
            count=optax.safe_increment(state.count),
            x0=state.x0,
            rbar=rbar,
            sum_sq=sum_sq,
            eta=eta,
        )
        return new_updates, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _check(reps_rel, eps, weight_decay, init_eta) -> None:
    _validation.check_range("reps_rel", reps_rel, 0.0, None, low_open=True)
    _validation.check_non_negative("eps", eps)
    _validation.check_non_negative("weight_decay", weight_decay, schedule_ok=True)
    if init_eta is not None:
        _validation.check_range("init_eta", init_eta, 0.0, None, low_open=True)


def scale_by_dog(
    reps_rel: ArrayLike = 1e-6,
    eps: ArrayLike = 1e-8,
    init_eta: ArrayLike | None = None,
    layerwise: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""Scales gradients by the DoG step size :math:`\eta_t` (no sign flip, no weight decay).

    Returns :math:`\eta_t g_t` with :math:`\eta_t` as in `dog` for :math:`c = 1`. Chain it with
    `optax.scale_by_learning_rate` (which negates) to build a descent step, or use `dog`.

    Args:
      reps_rel: relative initial movement, > 0: :math:`r_\epsilon = `
        ``reps_rel`` :math:`\cdot (1 + \|x_0\|)`.
      eps: added once to the sum of squared gradient norms, >= 0.
      init_eta: if set (> 0), the first step size; then :math:`r_\epsilon = 0`.
      layerwise: one step size per leaf (L-DoG) instead of one for the whole tree.

    Returns:
      A `GradientTransformationExtraArgs` whose state is a `ScaleByDogState`.

    Example:
      >>> import jax.numpy as jnp, optax, optlib
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> opt = optax.chain(optlib.scale_by_dog(), optax.scale_by_learning_rate(1.0))
      >>> state = opt.init(params)
      >>> updates, state = opt.update({"w": jnp.array([3.0, 4.0])}, state, params)
      >>> round(float(state[0].eta), 10)  # 1e-6 * (1 + sqrt(5)) / sqrt(25 + 1e-8)
      6.472e-07

    References:
      Ivgi, Hinder, Carmon, "DoG is SGD's Best Friend: A Parameter-Free Dynamic Step Size
      Schedule", ICML 2023, arXiv:2302.12022.
    """
    _check(reps_rel, eps, 0.0, init_eta)
    return _dog(1.0, reps_rel, eps, 0.0, init_eta, layerwise, sign=1.0)


def dog(
    learning_rate: optax.ScalarOrSchedule = 1.0,
    *,
    reps_rel: ArrayLike = 1e-6,
    eps: ArrayLike = 1e-8,
    weight_decay: ArrayLike = 0.0,
    init_eta: ArrayLike | None = None,
    layerwise: bool = False,
    weight_decay_mask: _masks.PerLeafSpec = None,
) -> optax.GradientTransformationExtraArgs:
    r"""DoG: SGD whose step size is the distance travelled over the root of summed gradients.

    With :math:`g_t \leftarrow g_t + \lambda x_t` (coupled weight decay), at step
    :math:`t = 0, 1, \dots`:

    .. math::
        r_\epsilon &= \mathrm{reps\_rel} \cdot (1 + \|x_0\|), \qquad
        \bar r_t = \max\big(r_\epsilon, \max_{i \le t} \|x_i - x_0\|\big) \\
        G_t &= \epsilon + \sum_{i \le t} \|g_i\|^2, \qquad
        \eta_t = c_t \, \bar r_t / \sqrt{G_t}, \qquad
        x_{t+1} = x_t - \eta_t g_t

    The current iterate and gradient enter :math:`\bar r_t` and :math:`G_t` before the step,
    :math:`r_\epsilon` stays in the running max, and :math:`\epsilon` is added once, as in the
    authors' code (optax.contrib.dog adds it at every step). :math:`c_t` is the learning rate,
    1 by default (the authors advise against changing it); a schedule multiplies
    :math:`\eta_t`. With ``layerwise=True`` (L-DoG, also `ldog`) every leaf :math:`l` gets
    its own :math:`r_\epsilon^l = \mathrm{reps\_rel}(1 + \|x_0^l\|)`, :math:`\bar r^l_t`,
    :math:`G^l_t` and :math:`\eta^l_t`. ``init_eta`` replaces :math:`\eta_0` (and sets
    :math:`r_\epsilon = 0`, as the reference does).

    `init` stores a copy of the params as :math:`x_0`, so it must get the real initial params.
    The running statistics are float32 or wider even for bfloat16 params. The authors stress
    that DoG needs iterate averaging: wrap it in `optlib.with_averaging` and evaluate
    `optlib.averaged_params`.


    Complex params are supported (pass conjugated gradients): squared norms and distances
    are of absolute values, and the statistics are real.

    Arguments after the learning rate are keyword-only: ``optax.contrib.dog`` orders them
    differently, so a positional call written for it fails instead of setting another
    argument (the README's table maps the names).
    Args:
      learning_rate: the multiplier :math:`c > 0`, or a schedule of the step count.
      reps_rel: relative initial movement, > 0 (1e-6; the authors suggest 1e-4 with batch
        norm and 1e-8 for large pretrained weights).
      eps: added once to the sum of squared gradient norms, >= 0.
      weight_decay: coupled L2 coefficient :math:`\lambda` >= 0 (or a schedule of the step
        count), added to the gradient.
      init_eta: optional first step size > 0, overriding the :math:`r_\epsilon` rule.
      layerwise: L-DoG: one step size per leaf.
      weight_decay_mask: which leaves get weight decay (True = decayed); a pytree, a prefix
        of one, or a callable of the params (`optlib.masks`). None: every leaf.

    Returns:
      A `GradientTransformationExtraArgs` whose state is a `ScaleByDogState`.

    Example:
      >>> import jax, jax.numpy as jnp, optax, optlib
      >>> loss = lambda p: jnp.sum((p["w"] - 3.0) ** 2)
      >>> params = {"w": jnp.zeros(4)}
      >>> opt = optlib.with_averaging(optlib.dog(), kind="polynomial", gamma=8.0)
      >>> state = opt.init(params)
      >>> for _ in range(200):  # eta ramps up from 1e-6 * (1 + |x0|) in ~100 steps
      ...     updates, state = opt.update(jax.grad(loss)(params), state, params)
      ...     params = optax.apply_updates(params, updates)
      >>> bool(loss(params) < 1e-6), bool(loss(optlib.averaged_params(state)) < 1e-2)
      (True, True)

    References:
      Ivgi, Hinder, Carmon, "DoG is SGD's Best Friend: A Parameter-Free Dynamic Step Size
      Schedule", ICML 2023, arXiv:2302.12022; code: github.com/formll/dog.
    """
    _validation.check_learning_rate(learning_rate)
    if not callable(learning_rate):
        _validation.check_range("learning_rate", learning_rate, 0.0, None, low_open=True)
    _check(reps_rel, eps, weight_decay, init_eta)
    return _dog(
        learning_rate, reps_rel, eps, weight_decay, init_eta, layerwise, -1.0, weight_decay_mask
    )


def ldog(
    learning_rate: optax.ScalarOrSchedule = 1.0,
    *,
    reps_rel: ArrayLike = 1e-6,
    eps: ArrayLike = 1e-8,
    weight_decay: ArrayLike = 0.0,
    init_eta: ArrayLike | None = None,
    weight_decay_mask: _masks.PerLeafSpec = None,
) -> optax.GradientTransformationExtraArgs:
    r"""L-DoG: DoG with one step size per leaf, :math:`\eta^l_t = c_t \bar r^l_t/\sqrt{G^l_t}`.

    Same as ``dog(..., layerwise=True)``; see `dog` for the math and arguments.

    Example:
      >>> import jax, jax.numpy as jnp, optax, optlib
      >>> params = {"a": jnp.ones(3), "b": jnp.ones((2, 2))}
      >>> opt = optlib.ldog(reps_rel=1e-3)
      >>> state = opt.init(params)
      >>> grads = jax.tree.map(jnp.ones_like, params)
      >>> updates, state = opt.update(grads, state, params)
      >>> sorted(state.eta)  # one step size per leaf
      ['a', 'b']

    References:
      Ivgi, Hinder, Carmon, "DoG is SGD's Best Friend: A Parameter-Free Dynamic Step Size
      Schedule", ICML 2023, arXiv:2302.12022.
    """
    return dog(
        learning_rate,
        reps_rel=reps_rel,
        eps=eps,
        weight_decay=weight_decay,
        init_eta=init_eta,
        layerwise=True,
        weight_decay_mask=weight_decay_mask,
    )
