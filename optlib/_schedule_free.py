r"""Schedule-free SGD and AdamW (Defazio et al., NeurIPS 2024).

Schedule-free learning keeps three sequences: the base iterates :math:`z`, their weighted
average :math:`x` (the point to evaluate) and the interpolation :math:`y` (where gradients are
taken). With :math:`z_0 = x_0 = y_0` the initial params and :math:`k = 0, 1, \dots`:

.. math::
    z_{k+1} = z_k + u_k, \qquad
    x_{k+1} = (1 - c_{k+1})\, x_k + c_{k+1}\, z_{k+1}, \qquad
    y_{k+1} = \beta\, x_{k+1} + (1 - \beta)\, z_{k+1},

where :math:`u_k` is the base optimizer's step at :math:`y_k` (for SGD
:math:`u_k = -\gamma_k (\nabla f(y_k) + \lambda y_k)`). The averaging weight is

.. math::
    c_{k+1} = \frac{w_k}{\sum_{i \le k} w_i}, \qquad
    w_k = (k + 1)^r \, \gamma_{\max,k}^{p}, \qquad
    \gamma_{\max,k} = \max_{i \le k} \gamma_i,

with :math:`p` = ``weight_lr_power`` (2 by default) and :math:`r` = ``r`` (0 by default).

Like the reference's memory-efficient classes, the params the user holds (and the gradients are
taken at) are :math:`y`; the state stores :math:`z` only, and :math:`y` moves by

.. math::
    y_{k+1} - y_k = c_{k+1} (z_k - y_k) + (1 - \beta (1 - c_{k+1}))\, u_k .

Evaluate at :math:`x = (y - (1 - \beta) z) / \beta` with `schedule_free_eval_params`.

**One step convention.** The learning rate (a float or a schedule) is evaluated at the 0-based
step :math:`k`, both for the base step and for the weights, so a warm-up of :math:`W` steps is
:math:`\gamma_k = \gamma \min(1, (k + 1) / W)`, as in the reference. (``optax.contrib`` evaluates
the weights' schedule at :math:`k + 1` and the base optimizer's at :math:`k`, which makes its
first AdamW step with warm-up a zero step; ALGORITHMS.md §11a.) When wrapping an optax
optimizer with `schedule_free`, pass it the same schedule as ``learning_rate``: optax optimizers
also count from 0.

**Precision.** :math:`z`, the Adam second moment and the scalars (weight sum, running max
learning rate) are kept in at least float32, also for bfloat16 params, and in float64 when the
params are float64.

**BatchNorm and other batch statistics at the eval point.** Running statistics collected during
training belong to :math:`y`, not to :math:`x`. Recompute them at :math:`x` before evaluating,
with `recompute_batch_stats` (a flax ``nn.Module`` with ``batch_stats``)::

    x = optlib.schedule_free_eval_params(opt_state, params)
    stats = optlib.recompute_batch_stats(model.apply, x, batch_stats, batches)
    logits = model.apply({"params": x, "batch_stats": stats}, images, train=False)

References:
  Defazio, Yang, Mehta, Mishchenko, Khaled, Cutkosky, "The Road Less Scheduled", NeurIPS 2024,
  arXiv:2405.15682; reference code facebookresearch/schedule_free (PyPI ``schedulefree``).
"""

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from optlib import _numerics, _validation

VARIANTS = ("reference", "paper")


class ScheduleFreeState(NamedTuple):
    """State of `schedule_free`.

    Attributes:
      b1: the interpolation coefficient :math:`\\beta` (kept so `schedule_free_eval_params`
        needs only the state).
      count: the 0-based step :math:`k` of the next update (int32).
      weight_sum: :math:`\\sum_{i < k} w_i`.
      lr_max: running maximum of the learning rate.
      z: the base iterates, shaped like the params.
      base_state: the base optimizer's state.
    """

    b1: jax.Array
    count: jax.Array
    weight_sum: jax.Array
    lr_max: jax.Array
    z: optax.Params
    base_state: optax.OptState


class ScheduleFreeBaseState(NamedTuple):
    """State of the built-in SGD/AdamW base step: the step `count`, AdamW's second moment `nu`."""

    count: jax.Array
    nu: optax.Updates


def _check_common(b1, weight_lr_power, r) -> None:
    _validation.check_beta("b1", b1)
    _validation.check_non_negative("weight_lr_power", weight_lr_power)
    _validation.check_non_negative("r", r)


def schedule_free(
    base_optimizer: optax.GradientTransformation,
    learning_rate: optax.ScalarOrSchedule,
    b1: ArrayLike = 0.9,
    weight_lr_power: ArrayLike = 2.0,
    r: ArrayLike = 0.0,
) -> optax.GradientTransformationExtraArgs:
    r"""Makes any base optimizer schedule-free.

    The base optimizer's output is the step :math:`u_k` of the base iterates :math:`z`; it
    receives the gradient at :math:`y` and :math:`y` as its params (so weight decay inside it
    decays at :math:`y`, as in the paper). Its own momentum should be off (for example
    ``optax.adam(lr, b1=0.0)``): :math:`\beta` plays that role. See the module docstring for
    the update and the step convention.


    Complex params are supported (pass conjugated gradients); the scalars stay real.
    Args:
      base_optimizer: the transform whose updates step :math:`z` (learning rate included).
        Extra keyword arguments of `update` are forwarded to it.
      learning_rate: the learning rate (float or schedule of the 0-based step) that sets the
        averaging weights; pass the schedule the base optimizer uses.
      b1: interpolation :math:`\beta \in [0, 1)` between :math:`x` and :math:`z`.
        `schedule_free_eval_params` needs :math:`\beta > 0`.
      weight_lr_power: exponent :math:`p \ge 0` of the running max learning rate in the
        weights.
      r: exponent :math:`r \ge 0` of :math:`(k + 1)` in the weights.

    Returns:
      A `GradientTransformationExtraArgs` with state `ScheduleFreeState`.

    Example:
      >>> import jax, jax.numpy as jnp, optax, optlib
      >>> opt = optlib.schedule_free(optax.sgd(0.5), learning_rate=0.5)
      >>> params = jnp.array([1.0, 2.0, 3.0])
      >>> state = opt.init(params)
      >>> for _ in range(20):
      ...     grads = jax.grad(lambda p: jnp.sum(p**2))(params)
      ...     updates, state = opt.update(grads, state, params)
      ...     params = optax.apply_updates(params, updates)
      >>> x = optlib.schedule_free_eval_params(state, params)
      >>> bool(jnp.sum(x**2) < 1e-3)
      True

    References:
      Defazio et al., "The Road Less Scheduled", NeurIPS 2024, arXiv:2405.15682.
    """
    _validation.check_learning_rate(learning_rate)
    _check_common(b1, weight_lr_power, r)
    return _schedule_free(base_optimizer, learning_rate, b1, weight_lr_power, r)


def _schedule_free(base_optimizer, learning_rate, b1, weight_lr_power, r, y_steps=None):
    """`schedule_free`; `y_steps(grads, new_base_state, params)`, when given, recomputes the
    base step for the y update (see `_scale_by_sf_base`)."""
    base = optax.with_extra_args_support(base_optimizer)

    def init_fn(params):
        dtype = _numerics.scalar_dtype(params)
        return ScheduleFreeState(
            b1=jnp.asarray(b1, dtype),
            count=jnp.zeros([], jnp.int32),
            weight_sum=jnp.zeros([], dtype),
            lr_max=jnp.zeros([], dtype),
            # A copy even when the dtype is kept: a donated step must not see the params'
            # buffer twice.
            z=jax.tree.map(lambda p: jnp.astype(p, _numerics.wide(p.dtype), copy=True), params),
            base_state=base.init(params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        _numerics.require_params(params, "schedule_free")
        dtype = state.weight_sum.dtype
        k = state.count
        lr = _numerics.lr_at(learning_rate, k, dtype)
        lr_max = jnp.maximum(state.lr_max, lr)
        weight = jnp.power((k + 1).astype(dtype), r) * jnp.power(lr_max, weight_lr_power)
        weight_sum = state.weight_sum + weight
        positive = weight_sum > 0
        c = jnp.where(positive, weight / jnp.where(positive, weight_sum, 1), 0)
        beta = state.b1
        steps, base_state = base.update(updates, state.base_state, params, **extra_args)
        # y_{k+1} - y_k = c (z_k - y_k) + (1 - beta (1 - c)) u
        #               = c (z_{k+1} - y_k) + (1 - beta) (1 - c) u.
        # The second form reads z_{k+1}, not z_k, so XLA can update y and z in place (donated
        # buffers) without first copying z_k; with the first form it copied y and z every step.
        u_coef = (1 - beta) * (1 - c)

        y_u = y_steps(updates, base_state, params) if y_steps is not None else None
        y_u = steps if y_u is None else y_u

        def move(y, z, u, u_again):
            z = z + u.astype(z.dtype)
            u_again = u_again.astype(z.dtype)
            dy = c.astype(z.dtype) * (z - y.astype(z.dtype)) + u_coef.astype(z.dtype) * u_again
            return dy.astype(y.dtype), z

        moved = jax.tree.map(move, params, state.z, steps, y_u)
        treedef = jax.tree.structure(params)
        dys, zs = _numerics.unzip(treedef, treedef.flatten_up_to(moved), 2)
        new_state = ScheduleFreeState(
            b1=state.b1,
            count=optax.safe_increment(k),
            weight_sum=weight_sum,
            lr_max=lr_max,
            z=zs,
            base_state=base_state,
        )
        return dys, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _warmup(learning_rate: optax.ScalarOrSchedule, warmup_steps) -> Callable[[jax.Array], Any]:
    """gamma_k * min(1, (k + 1) / W), k 0-based; no warm-up for W = 0 (W may be traced)."""

    def schedule(count):
        base = learning_rate(count) if callable(learning_rate) else learning_rate
        # The widest enabled float: int32 / int32 would give float32 even under x64.
        dtype = jax.dtypes.canonicalize_dtype(jnp.float64)
        w = jnp.asarray(warmup_steps, dtype)
        frac = jnp.minimum(1.0, (jnp.asarray(count, dtype) + 1) / jnp.maximum(w, 1))
        return base * jnp.where(w > 0, frac, 1.0)

    return schedule


def _scale_by_sf_base(
    schedule: Callable[[jax.Array], Any],
    weight_decay,
    adam: bool,
    b2=0.999,
    eps=1e-8,
    bias_correction: str = "reference",
):
    """The base step u_k of schedule-free SGD/AdamW, computed in at least float32.

    SGD: u = -lr (g + wd y). AdamW: u = -lr (g / (sqrt(v_hat) + eps) + wd y) with
    v_hat = v / (1 - b2^(k+1)) ("reference") or v_hat = v ("paper", where the bias correction
    is folded into `schedule` instead).

    Returns the transform and `y_steps(grads, new_state, params)`, which recomputes u for the
    y update. u feeds two outputs (z and y); XLA will not duplicate a divide and a square
    root into two loops, so it would keep u in a temporary buffer the size of the params,
    which on CPU is freshly mapped, page-faulted and freed at every step (3x slower than AdamW
    at 10M params). The recomputation writes the square root as sqrt(4 v) / 2, bitwise equal
    to sqrt(v) for finite v < 8e37 (float32), so that common-subexpression elimination does
    not merge the two back into one.
    """

    def init_fn(params):
        # |g|^2 is real: complex params get a real second moment.
        real = lambda p: _numerics.real_dtype(_numerics.wide(p.dtype))  # noqa: E731
        nu = jax.tree.map(lambda p: jnp.zeros_like(p, real(p)), params) if adam else None
        return ScheduleFreeBaseState(count=jnp.zeros([], jnp.int32), nu=nu)

    def steps(updates, k, nu, params, again: bool):
        dtype = _numerics.scalar_dtype(params)
        lr = _numerics.lr_at(schedule, k, dtype)
        treedef = jax.tree.structure(params)
        gs = treedef.flatten_up_to(updates)
        ys = treedef.flatten_up_to(params)
        if adam:
            if bias_correction == "reference":
                bc = 1 - jnp.power(jnp.asarray(b2, dtype), (k + 1).astype(dtype))
                inv_bc = 1 / bc
            else:
                inv_bc = jnp.ones([], dtype)

            def root(v):
                v = v * inv_bc.astype(v.dtype)
                return jnp.sqrt(4 * v) * 0.5 if again else jnp.sqrt(v)

            nus = treedef.flatten_up_to(nu)
            dirs = [
                g.astype(_numerics.complex_if(v.dtype, g)) / (root(v) + eps)
                for g, v in zip(gs, nus, strict=True)
            ]
        else:
            dirs = [g.astype(_numerics.wide(g.dtype)) for g in gs]
        out = []
        wd = _numerics.value_at(weight_decay, k)
        for d, y in zip(dirs, ys, strict=True):
            d = d + wd * y.astype(d.dtype)
            out.append(-lr.astype(d.dtype) * d)
        return treedef.unflatten(out)

    def update_fn(updates, state, params=None):
        _numerics.require_params(params, "schedule-free")
        nu = None
        if adam:
            nu = jax.tree.map(
                lambda g, v: (
                    b2 * v + (1 - b2) * _numerics.abs_sq(g.astype(_numerics.complex_if(v.dtype, g)))
                ),
                updates,
                state.nu,
            )
        new_state = ScheduleFreeBaseState(optax.safe_increment(state.count), nu)
        return steps(updates, state.count, nu, params, again=False), new_state

    def y_steps(updates, new_state, params):
        if not adam:
            return None  # u = -lr (g + wd y) is cheap: XLA recomputes it where needed
        return steps(updates, new_state.count - 1, new_state.nu, params, again=True)

    return optax.GradientTransformation(init_fn, update_fn), y_steps


def schedule_free_sgd(
    learning_rate: optax.ScalarOrSchedule = 1.0,
    *,
    b1: ArrayLike = 0.9,
    warmup_steps: ArrayLike = 0,
    weight_decay: ArrayLike = 0.0,
    r: ArrayLike = 0.0,
    weight_lr_power: ArrayLike = 2.0,
) -> optax.GradientTransformationExtraArgs:
    r"""Schedule-free SGD (the reference's ``SGDScheduleFree``).

    The base step is :math:`u_k = -\gamma_k (g_k + \lambda y_k)` with
    :math:`\gamma_k = \gamma \min(1, (k+1)/W)` (0-based :math:`k`; no warm-up for
    :math:`W = 0`), and the averaging of `schedule_free` (module docstring).


    Complex params are supported (pass conjugated gradients).

    Arguments after the learning rate are keyword-only: ``optax.contrib.schedule_free_sgd``
    orders them differently, so a positional call written for it fails instead of setting
    another argument (the README's table maps the names).
    Args:
      learning_rate: :math:`\gamma` (float or schedule of the 0-based step), >= 0. The
        reference's default is 1.0; schedule-free SGD wants 10-50x the usual SGD rate.
      b1: :math:`\beta \in [0, 1)`.
      warmup_steps: linear warm-up length :math:`W \ge 0`.
      weight_decay: :math:`\lambda \ge 0` (or a schedule of the 0-based step), applied at
        :math:`y`.
      r: exponent of :math:`(k+1)` in the averaging weights, >= 0.
      weight_lr_power: exponent of the running max learning rate in the weights, >= 0.

    Returns:
      A `GradientTransformationExtraArgs`; evaluate with `schedule_free_eval_params`.

    Example:
      >>> import jax, jax.numpy as jnp, optax, optlib
      >>> opt = optlib.schedule_free_sgd(1.0)
      >>> params = jnp.array([1.0, 2.0, 3.0])
      >>> f = lambda p: jnp.sum(p**2)
      >>> state = opt.init(params)
      >>> for _ in range(3):
      ...     updates, state = opt.update(jax.grad(f)(params), state, params)
      ...     params = optax.apply_updates(params, updates)
      ...     print(f"{f(optlib.schedule_free_eval_params(state, params)):.2e}")
      1.40e+01
      1.75e-14
      9.96e-01

    References:
      Defazio et al., "The Road Less Scheduled", NeurIPS 2024, arXiv:2405.15682.
    """
    _validation.check_learning_rate(learning_rate)
    _check_common(b1, weight_lr_power, r)
    _validation.check_non_negative("warmup_steps", warmup_steps)
    _validation.check_non_negative("weight_decay", weight_decay, schedule_ok=True)
    schedule = _warmup(learning_rate, warmup_steps)
    base, y_steps = _scale_by_sf_base(schedule, weight_decay, adam=False)
    return _schedule_free(base, schedule, b1, weight_lr_power, r, y_steps)


def schedule_free_adamw(
    learning_rate: optax.ScalarOrSchedule = 2.5e-3,
    *,
    b1: ArrayLike = 0.9,
    b2: ArrayLike = 0.999,
    eps: ArrayLike = 1e-8,
    warmup_steps: ArrayLike = 0,
    weight_decay: ArrayLike = 0.0,
    r: ArrayLike = 0.0,
    weight_lr_power: ArrayLike = 2.0,
    variant: str = "reference",
) -> optax.GradientTransformationExtraArgs:
    r"""Schedule-free AdamW.

    With :math:`v_{k} = \beta_2 v_{k-1} + (1 - \beta_2) g_k^2` and
    :math:`\gamma_k = \gamma \min(1, (k+1)/W)` (0-based :math:`k`), the base step is

    * ``variant="reference"`` (default; the reference package's ``AdamWScheduleFree`` since
      v1.3): :math:`u_k = -\gamma_k \big(g_k / (\sqrt{v_k / (1 - \beta_2^{k+1})} + \epsilon)
      + \lambda y_k\big)`, and the weights use :math:`\gamma_k`;
    * ``variant="paper"`` (the paper's Algorithm 1, the package's ``AdamWScheduleFreePaper``,
      v1.2 behaviour): the bias correction is folded into the learning rate,
      :math:`\tilde\gamma_k = \gamma_k \sqrt{1 - \beta_2^{k+1}}`, and
      :math:`u_k = -\tilde\gamma_k (g_k / (\sqrt{v_k} + \epsilon) + \lambda y_k)`. The
      averaging weights then use :math:`\tilde\gamma_k` too, which changes the early averaging
      and the effective weight decay during warm-up.

    The reference variant is the default because it is what the authors' package ships now.


    Complex params are supported (pass conjugated gradients): the second moment is of
    :math:`|g|^2` and kept real.

    Arguments after the learning rate are keyword-only: ``optax.contrib.schedule_free_adamw``
    orders them differently, so a positional call written for it fails instead of setting
    another argument (the README's table maps the names).
    Args:
      learning_rate: :math:`\gamma` (float or schedule of the 0-based step), >= 0.
      b1: :math:`\beta \in [0, 1)`, the interpolation (there is no first moment).
      b2: second-moment decay in [0, 1).
      eps: added to the denominator, >= 0.
      warmup_steps: linear warm-up length :math:`W \ge 0`.
      weight_decay: decoupled decay :math:`\lambda \ge 0` (or a schedule of the 0-based
        step), applied at :math:`y`.
      r: exponent of :math:`(k+1)` in the averaging weights, >= 0.
      weight_lr_power: exponent of the running max learning rate in the weights, >= 0.
      variant: "reference" or "paper" (above).

    Returns:
      A `GradientTransformationExtraArgs`; evaluate with `schedule_free_eval_params`.

    Example:
      >>> import jax, jax.numpy as jnp, optax, optlib
      >>> opt = optlib.schedule_free_adamw(0.1, warmup_steps=10, weight_decay=1e-4)
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> state = opt.init(params)
      >>> f = lambda p: jnp.sum((p["w"] - 0.5) ** 2)
      >>> for _ in range(200):
      ...     updates, state = opt.update(jax.grad(f)(params), state, params)
      ...     params = optax.apply_updates(params, updates)
      >>> bool(f(optlib.schedule_free_eval_params(state, params)) < 1e-3)
      True

    References:
      Defazio et al., "The Road Less Scheduled", NeurIPS 2024, arXiv:2405.15682.
    """
    _validation.check_learning_rate(learning_rate)
    _check_common(b1, weight_lr_power, r)
    _validation.check_beta("b2", b2)
    _validation.check_non_negative("eps", eps)
    _validation.check_non_negative("warmup_steps", warmup_steps)
    _validation.check_non_negative("weight_decay", weight_decay, schedule_ok=True)
    _validation.check_choice("variant", variant, VARIANTS)
    schedule = _warmup(learning_rate, warmup_steps)
    if variant == "paper":
        warm = schedule

        def schedule(count):
            bc = 1 - jnp.power(jnp.asarray(b2), count + 1)
            return warm(count) * jnp.sqrt(bc)

    base, y_steps = _scale_by_sf_base(schedule, weight_decay, True, b2, eps, variant)
    return _schedule_free(base, schedule, b1, weight_lr_power, r, y_steps)


def schedule_free_eval_params(opt_state: optax.OptState, params: optax.Params) -> optax.Params:
    r"""The evaluation point :math:`x = (y - (1 - \beta) z) / \beta` of a schedule-free run.

    Finds the `ScheduleFreeState` anywhere inside `opt_state` (``optax.chain``,
    ``optax.masked``, ``optax.multi_transform``, ``optax.inject_hyperparams``,
    ``optax.MultiSteps``, ``nnx.Optimizer``, ...). Leaves that no schedule-free transform acts
    on (masked out, also by a prefix mask or prefix labels) are returned as they are. Several
    schedule-free states may act on disjoint parts (one per ``multi_transform`` group).
    `params` may be any tree with the keys of the params the optimizer was built on, e.g.
    ``nnx.state(model, nnx.Param)`` for an ``nnx.Optimizer``'s ``opt_state``.

    Args:
      opt_state: the optimizer state holding the `ScheduleFreeState` (or states).
      params: the params :math:`y` the training loop holds.

    Returns:
      :math:`x`, shaped and typed like `params` (with its node types, e.g. NNX variables).

    Raises:
      ValueError: no schedule-free state, two acting on one leaf, params that do not match
        the state, or :math:`\beta = 0` (then :math:`y = z` and the average :math:`x`
        cannot be recovered).

    Example:
      >>> import jax.numpy as jnp, optax, optlib
      >>> opt = optax.chain(optax.clip_by_global_norm(1.0), optlib.schedule_free_sgd(0.1))
      >>> params = {"w": jnp.ones(3)}
      >>> state = opt.init(params)
      >>> updates, state = opt.update({"w": jnp.ones(3)}, state, params)
      >>> params = optax.apply_updates(params, updates)
      >>> optlib.schedule_free_eval_params(state, params)["w"].shape
      (3,)
    """

    def x_of(state, y, z):
        beta = _numerics.unwrap(state.b1)
        b1 = _validation.concrete_scalar(beta)
        if b1 is not None and b1 == 0:
            raise ValueError(
                "schedule_free_eval_params needs b1 > 0: with b1 = 0 the params are z and the "
                "average x is not stored"
            )
        beta = beta.astype(z.dtype)
        return ((y.astype(z.dtype) - (1 - beta) * z) / beta).astype(y.dtype)

    return _numerics.merge_states_into_params(
        opt_state,
        params,
        ScheduleFreeState,
        lambda state: state.z,
        x_of,
        "schedule_free_eval_params",
        "optlib.schedule_free*",
    )


def recompute_batch_stats(
    apply_fn: Callable[..., Any],
    params: optax.Params,
    batch_stats: Any,
    batches: Iterable[Any],
    *,
    train_kwarg: str = "train",
) -> Any:
    """Recomputes a flax model's BatchNorm statistics at `params` (for example at x).

    Runs the model in training mode (``apply_fn({"params": params, "batch_stats": ...},
    batch, train=True, mutable=["batch_stats"])``) on each of `batches` and returns the
    equal-weight average over batches of each BatchNorm's batch statistics (mean and
    variance), that is, the cumulative average that ``torch.optim.swa_utils.update_bn``
    computes. Any layer's momentum works: each batch is run twice, from statistics 0 and 1,
    which determines both the momentum and the batch statistic (every entry of
    ``batch_stats`` must be updated as ``m * old + (1 - m) * new``, as flax's BatchNorm does).
    Use a few training batches; no gradients are taken.

    Args:
      apply_fn: the model's ``apply`` (``model.apply``).
      params: the params to collect statistics at.
      batch_stats: the current ``batch_stats`` collection (gives the tree structure).
      batches: an iterable of model inputs (each passed as the single positional argument).
      train_kwarg: name of the model's training-mode flag.

    Returns:
      A ``batch_stats`` collection of the same structure.

    Example:
      >>> import jax, jax.numpy as jnp, flax.linen as nn, optlib
      >>> class Net(nn.Module):
      ...     @nn.compact
      ...     def __call__(self, x, train):
      ...         return nn.BatchNorm(use_running_average=not train)(nn.Dense(2)(x))
      >>> net = Net()
      >>> variables = net.init(jax.random.PRNGKey(0), jnp.ones((4, 3)), train=False)
      >>> batches = [jnp.full((4, 3), 2.0) + jnp.arange(4.0)[:, None]]
      >>> stats = optlib.recompute_batch_stats(
      ...     net.apply, variables["params"], variables["batch_stats"], batches)
      >>> jax.tree.structure(stats) == jax.tree.structure(variables["batch_stats"])
      True
    """

    def run(params, start, batch):
        _, updated = apply_fn(
            {"params": params, "batch_stats": start},
            batch,
            mutable=["batch_stats"],
            **{train_kwarg: True},
        )
        return updated["batch_stats"]

    return _average_batch_statistics(run, params, batch_stats, batches, "recompute_batch_stats")


def _average_batch_statistics(run, params, batch_stats, batches, name):
    """The equal-weight average over `batches` of each running statistic's batch value.

    `run(params, start, batch)` returns the running statistics after one training-mode pass
    from `start`. A running statistic s is updated as m * s + (1 - m) * b with the batch
    statistic b and the layer's momentum m. Two runs, from s = 0 and s = 1, give (1 - m) b
    and m + (1 - m) b, hence m and b, without having to know each layer's momentum.
    """

    def batch_statistics(params, batch):
        from_zero = run(params, jax.tree.map(jnp.zeros_like, batch_stats), batch)
        from_one = run(params, jax.tree.map(jnp.ones_like, batch_stats), batch)

        def solve(r0, r1):
            keep = 1 - (r1 - r0)
            return jnp.where(keep > 0, r0 / jnp.where(keep > 0, keep, 1), r0)

        return jax.tree.map(solve, from_zero, from_one)

    statistics = jax.jit(batch_statistics)
    total = None
    count = 0
    for batch in batches:
        stats = statistics(params, batch)
        total = stats if total is None else jax.tree.map(jnp.add, total, stats)
        count += 1
    if count == 0:
        raise ValueError(f"{name} needs at least one batch in batches")
    return jax.tree.map(lambda s: s / count, total)


def recompute_batch_stats_nnx(model: Any, batches: Iterable[Any], params: Any = None) -> Any:
    """`recompute_batch_stats` for a flax NNX model: its BatchNorm statistics at `params`.

    Runs the model's ``nnx.BatchNorm`` layers in training mode (the rest of the model as it
    is, e.g. dropout in eval mode) on each of `batches`, and sets every ``nnx.BatchStat`` of
    `model` to the equal-weight average over batches of its batch statistic, as
    `recompute_batch_stats` does for linen. With `params` (for example
    ``optlib.schedule_free_eval_params(optimizer.opt_state, nnx.state(model, nnx.Param))``)
    the statistics are those of a model with these params; the model's own params are not
    changed. No gradients are taken.

    Args:
      model: an ``nnx.Module``; its ``BatchStat`` variables are updated in place.
      batches: an iterable of model inputs (each passed as the single positional argument).
      params: an ``nnx.State`` of the model's ``nnx.Param`` variables to collect the
        statistics at; None: the model's own.

    Returns:
      The new ``nnx.State`` of the model's ``nnx.BatchStat`` variables.

    Example:
      >>> import jax.numpy as jnp, optlib
      >>> from flax import nnx
      >>> model = nnx.Sequential(nnx.Linear(3, 2, rngs=nnx.Rngs(0)),
      ...                        nnx.BatchNorm(2, rngs=nnx.Rngs(0)))
      >>> batches = [jnp.arange(12.0).reshape(4, 3), jnp.ones((4, 3))]
      >>> stats = optlib.recompute_batch_stats_nnx(model, batches)
      >>> bool(jnp.allclose(model.layers[1].mean[...], stats["layers"][1]["mean"][...]))
      True
    """
    from flax import nnx  # noqa: PLC0415 - flax's NNX is only needed on this path

    working = nnx.view(model, only=nnx.BatchNorm, use_running_average=False)
    graphdef, own_params, batch_stats, rest = nnx.split(working, nnx.Param, nnx.BatchStat, ...)

    def run(params, start, batch):
        layer = nnx.merge(graphdef, params, start, rest)
        layer(batch)
        return nnx.state(layer, nnx.BatchStat)

    stats = _average_batch_statistics(
        run,
        own_params if params is None else params,
        batch_stats,
        batches,
        "recompute_batch_stats_nnx",
    )
    nnx.update(model, stats)
    return stats
