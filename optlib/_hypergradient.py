"""Hypergradient descent: one global learning rate learned online (Baydin et al., 2018).

Around any direction transform (SGD's gradient, Nesterov momentum, Adam's preconditioned
step), with the optional safeguard of FedHyper (Wang, Wang, Li, 2024) against negative or
exploding learning rates.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from optlib import _numerics, _validation

# FedHyper's client-side scheduler (FedHyper-CL) multiplies the local learning rate by at most
# 1.1 per step and keeps it within [0.1, 10] times its starting value; FedHyper-SL clips the
# local learning rate to [1e-3, 1e-1] around its default 1e-2, the same [0.1, 10] band.
_SAFEGUARD_MAX_GROWTH = 1.1
_SAFEGUARD_LOW = 0.1
_SAFEGUARD_HIGH = 10.0


class HypergradientState(NamedTuple):
    """State of `hypergradient` (and of `sgd_hd`, `adam_hd`).

    ``alpha`` is the learning rate the last update applied (its initial value before the first
    update), so a training loop can log it: ``optax.tree.get(opt_state, "alpha")``.
    """

    count: jax.Array  # int32 scalar: number of updates applied so far.
    alpha: jax.Array  # the learning rate applied by the last update (float32 or wider).
    last_lr: jax.Array  # the learning rate (schedule value) at the last update.
    hypergradient: jax.Array  # h_t = <g_t, u_{t-1}> of the last update (0 before any).
    prev_direction: optax.Updates  # u_{t-1}: the last direction, zeros before the first.
    inner_state: optax.OptState  # the direction transform's state.


def hypergradient(
    direction: optax.GradientTransformation,
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    beta: ArrayLike = 1e-3,
    weight_decay: ArrayLike = 0.0,
    safeguard: bool = False,
    alpha_min: ArrayLike | None = None,
    alpha_max: ArrayLike | None = None,
    max_growth: ArrayLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Learns one global learning rate :math:`\alpha` by hypergradient descent.

    With :math:`g_t` the gradient (plus :math:`\lambda \theta_{t-1}`, coupled weight decay, as
    in the reference code), :math:`u_t` the output of ``direction`` on :math:`g_t`
    (:math:`u_0 = 0`) and :math:`s_t` the learning rate (the schedule at count :math:`t - 1`,
    or the constant :math:`\alpha_0`), at each update :math:`t = 1, 2, \dots`:

    .. math::
        h_t &= \langle g_t, u_{t-1} \rangle, \qquad
        \alpha_t = \alpha_{t-1} \frac{s_t}{s_{t-1}} + \beta h_t, \qquad
        \theta_t = \theta_{t-1} - \alpha_t u_t

    with :math:`\alpha_0 = s_0 = s_1`. Since :math:`\theta_{t-1} = \theta_{t-2} - \alpha_{t-1}
    u_{t-1}`, :math:`-h_t` is the derivative of the loss at :math:`\theta_{t-1}` with respect
    to :math:`\alpha_{t-1}`, so :math:`\alpha` takes one gradient step of size :math:`\beta`
    on it per update. For a constant learning rate :math:`s_t/s_{t-1} = 1` and this is the
    paper's update: ``direction=optax.identity()`` is SGD-HD,
    ``optax.trace(mu, nesterov=True)`` SGDN-HD (the previous direction is the Nesterov step
    :math:`g + \mu b` the reference stores) and an Adam direction is Adam-HD (see `adam_hd`).
    A schedule shapes the learned rate multiplicatively: :math:`\alpha` follows the
    schedule's relative change and hypergradient descent adds its steps on top. Where
    :math:`s_t = 0` the update is zero and :math:`\alpha_t = 0`; at the next positive
    :math:`s_t` it restarts: :math:`\alpha_t = s_t + \beta h_t`.

    Plain hypergradient descent can drive :math:`\alpha` negative or make it explode (the
    reference repository's issues 1 and 4; a negative :math:`\alpha` is gradient ascent).
    ``safeguard=True`` applies FedHyper's clipped update: each step may grow :math:`\alpha`
    by at most a factor ``max_growth`` (a decrease is not limited per step), and the result
    is clipped to ``[alpha_min, alpha_max]``:

    .. math::
        \alpha_t = \mathrm{clip}\big(\min(\tilde\alpha_t, \gamma\, \bar\alpha_{t-1}),
        \alpha_{\min}, \alpha_{\max}\big), \qquad
        \bar\alpha_{t-1} = \alpha_{t-1} s_t / s_{t-1}

    The defaults are FedHyper's constants for a learning rate adapted step by step by its
    own hypergradient, the client-side schedulers (FedHyper-CL, FedHyper-SL):
    :math:`\gamma = 1.1` (CL caps its per-step multiplier at 1.1) and the band
    :math:`[0.1\, s_t, 10\, s_t]` (CL clips its cumulative multiplier to [0.1, 10]; SL clips
    the local rate to [1e-3, 1e-1] around its default 1e-2). The server-side bands of
    FedHyper-G ([0.2, 5]) and FedHyper-GM ([0.8, 5]) bound a multiplier of a whole round's
    aggregated update, not of one step, so they were not taken. Where ``alpha_max`` is below
    the (default) ``alpha_min`` at some step, the upper bound wins.

    The transform keeps the previous direction :math:`u_{t-1}` (one param-sized buffer) and
    computes :math:`h_t` over the whole tree in float32 or wider, so sharded params give the
    same :math:`\alpha` as unsharded ones.


    Complex params are supported (pass conjugated gradients): :math:`h_t` is the real inner
    product :math:`\mathrm{Re}\langle g_t, u_{t-1}\rangle`.
    Args:
      direction: the transform whose output :math:`u_t` is the (unscaled) descent direction,
        e.g. ``optax.identity()``, ``optax.trace(0.9, nesterov=True)``,
        ``optax.scale_by_adam()``. It gets the params and any extra arguments.
      learning_rate: the initial learning rate :math:`\alpha_0 \ge 0`, or a schedule of the
        update count whose relative change scales :math:`\alpha` (see above).
      beta: hypergradient step size :math:`\beta \ge 0` (0: a fixed learning rate).
      weight_decay: coupled L2 coefficient :math:`\lambda \ge 0` (or a schedule of the
        update count), added to the gradient
        before the direction and the hypergradient, as in the reference.
      safeguard: apply FedHyper's clipped update.
      alpha_min: lower bound on :math:`\alpha_t`, >= 0 (default :math:`0.1\, s_t`); only with
        ``safeguard=True``.
      alpha_max: upper bound on :math:`\alpha_t`, >= ``alpha_min`` (default
        :math:`10\, s_t`); only with ``safeguard=True``.
      max_growth: the most :math:`\gamma \ge 1` one step may multiply :math:`\alpha` by
        (default 1.1); only with ``safeguard=True``.

    Returns:
      A `GradientTransformationExtraArgs` (descent updates, learning rate applied) whose state
      is a `HypergradientState`.

    Example:
      >>> import jax, jax.numpy as jnp, optax, optlib
      >>> loss = lambda p: 0.5 * jnp.sum(jnp.array([1.0, 4.0]) * p["w"] ** 2)
      >>> params = {"w": jnp.array([1.0, 1.0])}
      >>> opt = optlib.hypergradient(optax.identity(), learning_rate=0.01, beta=0.01)
      >>> state = opt.init(params)
      >>> for _ in range(2):
      ...     updates, state = opt.update(jax.grad(loss)(params), state, params)
      ...     params = optax.apply_updates(params, updates)
      >>> round(float(state.alpha), 6)  # 0.01 + 0.01 * <(0.99, 3.84), (1, 4)>
      0.1735

    References:
      Baydin, Cornish, Martinez Rubio, Schmidt, Wood, "Online Learning Rate Adaptation with
      Hypergradient Descent", ICLR 2018, arXiv:1703.04782; code:
      github.com/gbaydin/hypergradient-descent.
      Wang, Wang, Li, "FedHyper: A Universal and Robust Learning Rate Scheduler for Federated
      Learning with Hypergradient Descent", ICLR 2024, arXiv:2310.03156; code:
      github.com/ATP-1010/FedHyper.
    """
    if not isinstance(direction, optax.GradientTransformation):
        raise ValueError(
            "direction must be an optax GradientTransformation (e.g. optax.identity()), "
            f"got {direction!r}"
        )
    # 0 is allowed (zero updates): inject_hyperparams passes a schedule's values, which may
    # reach 0, to the factory at each step.
    _validation.check_learning_rate(learning_rate)
    _validation.check_non_negative("beta", beta)
    _validation.check_non_negative("weight_decay", weight_decay, schedule_ok=True)
    if not isinstance(safeguard, bool):
        raise ValueError(f"safeguard must be True or False, got {safeguard!r}")
    if not safeguard:
        given = [
            name
            for name, value in (
                ("alpha_min", alpha_min),
                ("alpha_max", alpha_max),
                ("max_growth", max_growth),
            )
            if value is not None
        ]
        if given:
            raise ValueError(f"{', '.join(given)} only apply with safeguard=True")
    if alpha_min is not None:
        _validation.check_non_negative("alpha_min", alpha_min)
    if alpha_max is not None:
        _validation.check_range("alpha_max", alpha_max, 0.0, None, low_open=True)
    if max_growth is not None:
        _validation.check_range("max_growth", max_growth, 1.0, None)
    lr0 = None if callable(learning_rate) else _validation.concrete_scalar(learning_rate)
    low = _validation.concrete_scalar(alpha_min) if alpha_min is not None else None
    high = _validation.concrete_scalar(alpha_max) if alpha_max is not None else None
    if safeguard and lr0 is not None:
        low = _SAFEGUARD_LOW * lr0 if alpha_min is None else low
        high = _SAFEGUARD_HIGH * lr0 if alpha_max is None else high
    if low is not None and high is not None and low > high:
        raise ValueError(
            f"alpha_min must be <= alpha_max, got alpha_min={low} > alpha_max={high} "
            "(the defaults are 0.1 and 10 times the learning rate)"
        )
    growth = _SAFEGUARD_MAX_GROWTH if max_growth is None else max_growth
    decay = not _validation.is_zero(weight_decay)
    direction = optax.with_extra_args_support(direction)

    def init_fn(params):
        dtype = _numerics.scalar_dtype(params)
        lr = _numerics.lr_at(learning_rate, jnp.zeros([], jnp.int32), dtype)
        return HypergradientState(
            count=jnp.zeros([], jnp.int32),
            alpha=lr,
            # A copy: a jitted step that donates the state must not get one buffer twice.
            last_lr=jnp.copy(lr),
            hypergradient=jnp.zeros([], dtype),
            prev_direction=optax.tree.zeros_like(params),
            inner_state=direction.init(params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        if decay:
            _numerics.require_params(params, "hypergradient with weight_decay")
            wd = _numerics.value_at(weight_decay, state.count)
            updates = jax.tree.map(
                lambda g, x: g + jnp.asarray(wd, g.dtype) * x.astype(g.dtype),
                updates,
                params,
            )
        dtype = state.alpha.dtype
        lr = _numerics.lr_at(learning_rate, state.count, dtype)
        h = _numerics.tree_real_dot(updates, state.prev_direction, dtype)
        u, inner_state = direction.update(updates, state.inner_state, params, **extra_args)

        # alpha_{t-1} s_t / s_{t-1}; the ratio is exactly 1 for a constant learning rate.
        had_lr = state.last_lr > 0
        ratio = lr / jnp.where(had_lr, state.last_lr, 1)
        base = jnp.where(had_lr, state.alpha * ratio, lr)
        alpha = base + jnp.asarray(beta, dtype) * h
        if safeguard:
            lo = _SAFEGUARD_LOW * lr if alpha_min is None else jnp.asarray(alpha_min, dtype)
            hi = _SAFEGUARD_HIGH * lr if alpha_max is None else jnp.asarray(alpha_max, dtype)
            alpha = jnp.minimum(alpha, jnp.asarray(growth, dtype) * base)
            alpha = jnp.minimum(jnp.maximum(alpha, lo), hi)
        alpha = jnp.where(lr > 0, alpha, 0)

        new_updates = jax.tree.map(
            lambda d: (-alpha * d.astype(_numerics.complex_if(dtype, d))).astype(d.dtype), u
        )
        new_state = HypergradientState(
            count=optax.safe_increment(state.count),
            alpha=alpha,
            last_lr=lr,
            hypergradient=h,
            prev_direction=u,
            inner_state=inner_state,
        )
        return new_updates, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def sgd_hd(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    beta: ArrayLike = 1e-3,
    momentum: ArrayLike | None = None,
    nesterov: bool = False,
    weight_decay: ArrayLike = 0.0,
    safeguard: bool = False,
    alpha_min: ArrayLike | None = None,
    alpha_max: ArrayLike | None = None,
    max_growth: ArrayLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""SGD-HD and SGDN-HD: SGD (with momentum) whose learning rate is learned by its hypergradient.

    `hypergradient` around ``optax.identity()`` (SGD-HD: :math:`h_t = \langle g_t, g_{t-1}
    \rangle`) or ``optax.trace(momentum, nesterov)`` (:math:`h_t = \langle g_t, u_{t-1}
    \rangle` with :math:`u` the momentum or Nesterov direction, the one the reference stores;
    SGDN-HD is ``momentum=0.9, nesterov=True``). The momentum buffer starts at the first
    gradient and has no dampening, as in the reference.

    Args:
      learning_rate: the initial learning rate :math:`\alpha_0 \ge 0` (paper: 1e-3), or a
        schedule (see `hypergradient`).
      beta: hypergradient step size >= 0 (paper: 1e-3 for SGD and SGDN; the reference
        class's default of 1e-6 is not the one its experiments ran with).
      momentum: momentum coefficient in [0, 1); None (default) or 0 is plain SGD-HD, with no
        momentum buffer. As in ``optax.sgd``, None stays static under
        ``optax.inject_hyperparams``, so the injected state equals the plain one; an injected
        number (0.0 included) keeps a buffer.
      nesterov: Nesterov momentum (needs ``momentum > 0``, as in the reference).
      weight_decay, safeguard, alpha_min, alpha_max, max_growth: see `hypergradient`.

    Returns:
      A `GradientTransformationExtraArgs` whose state is a `HypergradientState`.

    Example:
      >>> import jax, jax.numpy as jnp, optax, optlib
      >>> loss = lambda p: jnp.sum((p - 3.0) ** 2)
      >>> params = jnp.zeros(3)
      >>> opt = optlib.sgd_hd(1e-3, beta=1e-3, momentum=0.9, nesterov=True)
      >>> state = opt.init(params)
      >>> for _ in range(100):
      ...     updates, state = opt.update(jax.grad(loss)(params), state, params)
      ...     params = optax.apply_updates(params, updates)
      >>> bool(loss(params) < 1e-3), bool(state.alpha > 1e-3)
      (True, True)

    References:
      Baydin et al., "Online Learning Rate Adaptation with Hypergradient Descent", ICLR 2018,
      arXiv:1703.04782.
    """
    if not isinstance(nesterov, bool):
        raise ValueError(f"nesterov must be True or False, got {nesterov!r}")
    if momentum is not None:
        _validation.check_beta("momentum", momentum)
    # An injected (array) momentum keeps its buffer, so init and update agree on the state.
    plain = momentum is None or (
        not isinstance(momentum, jax.Array) and _validation.is_zero(momentum)
    )
    if nesterov and plain:
        raise ValueError("nesterov=True needs a momentum in (0, 1), got momentum=0")
    direction = optax.identity() if plain else optax.trace(momentum, nesterov=nesterov)
    return hypergradient(
        direction,
        learning_rate,
        beta,
        weight_decay=weight_decay,
        safeguard=safeguard,
        alpha_min=alpha_min,
        alpha_max=alpha_max,
        max_growth=max_growth,
    )


def _scale_by_adam_reference(b1: float, b2: float, eps: float) -> optax.GradientTransformation:
    r"""Adam's direction with eps added to the root of the uncorrected second moment.

    :math:`u_t = \frac{m_t}{\sqrt{v_t} + \epsilon} \cdot \frac{\sqrt{1 - \beta_2^t}}{1 -
    \beta_1^t}`, as in the reference AdamHD (and PyTorch's Adam): the same as
    :math:`\hat m_t / (\sqrt{\hat v_t} + \epsilon / \sqrt{1 - \beta_2^t})`.
    """

    def init_fn(params):
        return optax.ScaleByAdamState(
            count=jnp.zeros([], jnp.int32),
            mu=optax.tree.zeros_like(params),
            # |g|^2 is real: complex params get a real second moment.
            nu=jax.tree.map(lambda p: jnp.zeros_like(p, _numerics.real_dtype(p.dtype)), params),
        )

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)

        def leaf(g, m, v):
            dtype = _numerics.wide(g.dtype)
            g = g.astype(dtype)
            m_new = b1 * m.astype(dtype) + (1 - b1) * g
            real = _numerics.real_dtype(dtype)
            v_new = b2 * v.astype(real) + (1 - b2) * _numerics.abs_sq(g)
            t = count.astype(real)
            correction = jnp.sqrt(1 - b2**t) / (1 - b1**t)
            u = m_new / (jnp.sqrt(v_new) + eps) * correction
            return u.astype(m.dtype), m_new.astype(m.dtype), v_new.astype(v.dtype)

        treedef = jax.tree.structure(updates)
        out = [
            leaf(g, m, v)
            for g, m, v in zip(
                treedef.flatten_up_to(updates),
                treedef.flatten_up_to(state.mu),
                treedef.flatten_up_to(state.nu),
                strict=True,
            )
        ]
        u, mu, nu = _numerics.unzip(treedef, out, 3)
        return u, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


def adam_hd(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    beta: ArrayLike = 1e-7,
    b1: ArrayLike = 0.9,
    b2: ArrayLike = 0.999,
    eps: ArrayLike = 1e-8,
    weight_decay: ArrayLike = 0.0,
    eps_placement: str = "reference",
    safeguard: bool = False,
    alpha_min: ArrayLike | None = None,
    alpha_max: ArrayLike | None = None,
    max_growth: ArrayLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Adam-HD: Adam whose global learning rate is learned by its hypergradient.

    `hypergradient` around Adam's direction, so from the second update on

    .. math::
        \alpha_t = \alpha_{t-1} + \beta \Big\langle g_t,
        \frac{m_{t-1}}{\sqrt{v_{t-1}} + \epsilon}\Big\rangle
        \frac{\sqrt{1 - \beta_2^{t-1}}}{1 - \beta_1^{t-1}}

    (zero at the first update, where the reference skips it). With
    ``eps_placement="reference"`` (the default) :math:`\epsilon` is added to the root of the
    *uncorrected* second moment and the bias corrections multiply the quotient, exactly as the
    reference AdamHD computes both its step and its hypergradient (its step is the previous
    direction the hypergradient uses). ``"optax"`` uses ``optax.scale_by_adam``'s direction
    :math:`\hat m_t / (\sqrt{\hat v_t} + \epsilon)` (Kingma and Ba's placement) instead; the
    two differ only while :math:`\sqrt{\hat v}` is comparable to :math:`\epsilon`.

    One departure: the reference adds each parameter tensor's share of :math:`h_t` to the
    learning rate before stepping that tensor, so within one update later tensors already see
    part of the new rate. Here :math:`h_t` is summed over the whole tree first (the paper's
    algorithm; identical for a single tensor, and the next update's rate is the same).

    Args:
      learning_rate: the initial learning rate :math:`\alpha_0 \ge 0` (paper: 1e-3), or a
        schedule (see `hypergradient`).
      beta: hypergradient step size >= 0 (paper: 1e-7 for Adam; 1e-8 for its VGG runs).
      b1: decay rate of the first moment, in [0, 1).
      b2: decay rate of the second moment, in [0, 1).
      eps: added to the root of the second moment, >= 0.
      weight_decay: coupled L2 coefficient >= 0, added to the gradient (reference).
      eps_placement: ``"reference"`` or ``"optax"`` (see above).
      safeguard, alpha_min, alpha_max, max_growth: see `hypergradient`.

    Returns:
      A `GradientTransformationExtraArgs` whose state is a `HypergradientState` (its
      ``inner_state`` an ``optax.ScaleByAdamState``).

    Example:
      >>> import jax, jax.numpy as jnp, optax, optlib
      >>> loss = lambda p: jnp.sum((p - 3.0) ** 2)
      >>> params = jnp.zeros(3)
      >>> opt = optlib.adam_hd(0.1, beta=1e-3)
      >>> state = opt.init(params)
      >>> for _ in range(200):
      ...     updates, state = opt.update(jax.grad(loss)(params), state, params)
      ...     params = optax.apply_updates(params, updates)
      >>> bool(loss(params) < 1e-3)
      True

    References:
      Baydin et al., "Online Learning Rate Adaptation with Hypergradient Descent", ICLR 2018,
      arXiv:1703.04782; code: github.com/gbaydin/hypergradient-descent (hypergrad/adam_hd.py).
    """
    _validation.check_beta("b1", b1)
    _validation.check_beta("b2", b2)
    _validation.check_non_negative("eps", eps)
    _validation.check_choice("eps_placement", eps_placement, ("reference", "optax"))
    if eps_placement == "reference":
        direction = _scale_by_adam_reference(b1, b2, eps)
    else:
        direction = optax.scale_by_adam(b1, b2, eps)
    return hypergradient(
        direction,
        learning_rate,
        beta,
        weight_decay=weight_decay,
        safeguard=safeguard,
        alpha_min=alpha_min,
        alpha_max=alpha_max,
        max_growth=max_growth,
    )
