"""Iterate averaging as a wrapper: polynomial-decay (Shamir and Zhang, 2013) and EMA."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from optlib import _numerics, _validation

_KINDS = ("polynomial", "ema")


class AveragingState(NamedTuple):
    """State of `with_averaging`: the inner optimizer's state and the running average."""

    count: jax.Array  # int32 scalar: number of averaged iterates so far.
    average: optax.Params  # the average, in the params' dtype (float32 for 16-bit params).
    inner_state: optax.OptState


def with_averaging(
    inner: optax.GradientTransformation,
    kind: str = "polynomial",
    gamma: ArrayLike = 8.0,
    decay: ArrayLike = 0.999,
) -> optax.GradientTransformationExtraArgs:
    r"""Keeps a running average of the iterates that ``inner`` produces.

    After the inner update, with the post-update params :math:`x_t` (:math:`t = 1, 2, \dots`):

    .. math::
        \text{polynomial:}\quad \bar x_t &= \Big(1 - \frac{1+\gamma}{t+\gamma}\Big)\bar x_{t-1}
            + \frac{1+\gamma}{t+\gamma} x_t \quad (\bar x_1 = x_1) \\
        \text{ema:}\quad \bar x_t &= \delta\, \bar x_{t-1} + (1 - \delta)\, x_t
            \quad (\bar x_0 = x_0)

    Polynomial-decay averaging with :math:`\gamma = 8` is what the DoG authors pair with DoG and
    L-DoG; :math:`\gamma = 0` is the uniform average. The updates are passed through
    unchanged, so training follows the inner optimizer exactly; read the average with
    `averaged_params`. Extra keyword arguments of ``update`` (e.g. ``value=``) are forwarded.

    The wrapper computes :math:`x_t` as ``params + updates``, so it must be the last
    transformation that changes the updates (wrap the whole chain, not a part of it).


    Complex params are averaged like real ones.
    Args:
      inner: the optimizer whose iterates are averaged.
      kind: ``"polynomial"`` or ``"ema"``.
      gamma: polynomial-decay parameter :math:`\gamma \ge 0`.
      decay: EMA decay :math:`\delta \in [0, 1]`.

    Returns:
      A `GradientTransformationExtraArgs` whose state is an `AveragingState`.

    Example:
      >>> import jax.numpy as jnp, optax, optlib
      >>> opt = optlib.with_averaging(optax.sgd(1.0), kind="polynomial", gamma=0.0)
      >>> params = jnp.array([0.0])
      >>> state = opt.init(params)
      >>> for _ in range(3):  # the iterates are 1, 2, 3
      ...     updates, state = opt.update(-jnp.ones(1), state, params)
      ...     params = optax.apply_updates(params, updates)
      >>> optlib.averaged_params(state)  # their uniform average
      Array([2.], dtype=float32)

    References:
      Shamir and Zhang, "Stochastic Gradient Descent for Non-smooth Optimization: Convergence
      Results and Optimal Averaging Schemes", ICML 2013; Ivgi, Hinder, Carmon, "DoG is SGD's
      Best Friend", ICML 2023, arXiv:2302.12022.
    """
    _validation.check_choice("kind", kind, _KINDS)
    _validation.check_non_negative("gamma", gamma)
    _validation.check_range("decay", decay, 0.0, 1.0)
    inner = optax.with_extra_args_support(inner)

    def init_fn(params):
        # A copy in the average's dtype: never an alias of params that a jitted step donates.
        average = jax.tree.map(lambda x: jnp.array(x, _numerics.wide(x.dtype), copy=True), params)
        return AveragingState(
            count=jnp.zeros([], jnp.int32), average=average, inner_state=inner.init(params)
        )

    def update_fn(updates, state, params=None, **extra_args):
        _numerics.require_params(params, "with_averaging")
        updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
        new_params = optax.apply_updates(params, updates)  # rounded as the caller's will be
        count = optax.safe_increment(state.count)

        def average(avg, x):
            if kind == "polynomial":
                t = count.astype(avg.dtype)
                g = jnp.asarray(gamma, avg.dtype)  # may be a (16-bit) injected hyper-parameter
                weight = (1 + g) / (t + g)
            else:
                weight = 1 - jnp.asarray(decay, avg.dtype)
            weight = jnp.asarray(weight, avg.dtype)
            return avg + weight * (x.astype(avg.dtype) - avg)

        new_average = jax.tree.map(average, state.average, new_params)
        return updates, AveragingState(count=count, average=new_average, inner_state=inner_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def averaged_params(opt_state: Any, params: Any = None) -> optax.Params:
    """The iterate average kept by `with_averaging`, wherever it sits in ``opt_state``.

    Searches the whole state pytree, so the wrapper may be nested in `optax.chain`,
    `optax.masked`, `optax.multi_transform`, `optax.inject_hyperparams`, `optax.MultiSteps`,
    an ``nnx.Optimizer`` and the like.

    Args:
      opt_state: an optimizer state that contains a `with_averaging` state (or several,
        acting on disjoint parts of the params).
      params: the current params. Needed where the average covers only part of them (under
        `optax.masked` or `optax.multi_transform`): the leaves it does not cover are taken
        from `params`, so the result is shaped like the params. Without `params`, the
        average is returned as it is stored.

    Returns:
      The averaged params.

    Raises:
      ValueError: no `AveragingState`, two acting on one leaf, or a partial average and no
        `params`.

    Example:
      >>> import jax.numpy as jnp, optax, optlib
      >>> opt = optax.chain(optax.clip(1.0), optlib.with_averaging(optax.sgd(0.1), "ema"))
      >>> state = opt.init({"w": jnp.ones(2)})
      >>> optlib.averaged_params(state)["w"]
      Array([1., 1.], dtype=float32)
    """
    caller, made_by = "averaged_params", "optlib.with_averaging"
    if params is not None:
        return _numerics.merge_states_into_params(
            opt_state,
            params,
            AveragingState,
            lambda state: state.average,
            lambda state, x, average: average,
            caller,
            made_by,
        )
    state = _numerics.find_state(opt_state, AveragingState, caller, made_by)
    masked = jax.tree.leaves(state.average, is_leaf=lambda x: isinstance(x, optax.MaskedNode))
    if any(isinstance(x, optax.MaskedNode) for x in masked):
        raise ValueError(
            "averaged_params: the average covers only part of the params (optax.masked or "
            "optax.multi_transform); pass the params, averaged_params(opt_state, params), to "
            "get a tree shaped like them"
        )
    return state.average
