r"""Sharpness-aware minimization: SAM, ASAM and m-sharpness (Foret et al., ICLR 2021).

SAM takes its gradient at the worst point of a small neighbourhood of the params :math:`w`,
to first order:

.. math::
    g = \nabla L(w), \qquad
    \hat\epsilon = \rho \, \frac{T^2 g}{\|T g\| + \delta}, \qquad
    g_{\mathrm{SAM}} = \nabla L(w + \hat\epsilon),

and the base optimizer steps from :math:`w` (not :math:`w + \hat\epsilon`) with
:math:`g_{\mathrm{SAM}}`. The norm is global (over the whole pytree). :math:`T = 1` for SAM;
ASAM (``adaptive=True``) uses the elementwise :math:`T = |w| + \eta` on the leaves that
``adaptive_mask`` selects (every leaf by default) and :math:`T = 1` on the others; the ASAM
authors scale only weight matrices, e.g. ``adaptive_mask=optlib.masks.exclude_1d``.
:math:`\delta = 10^{-12}` keeps a zero gradient from giving a NaN: it gives
:math:`\hat\epsilon = 0` (the Google reference divides by the bare norm; the PyTorch ports add
1e-12 or 1e-16). Norms and perturbations are computed in at least float32.

Two forms:

* `sam_value_and_grad(loss_fn, ...)` has the signature of ``jax.value_and_grad(loss_fn)`` and
  returns the loss at :math:`w` and :math:`g_{\mathrm{SAM}}`; feed the gradient to any
  optimizer. With ``group_size=m`` it computes m-sharpness: the batch is cut into groups of m
  examples, each group takes its own :math:`\hat\epsilon` from its own gradient and its own
  :math:`g_{\mathrm{SAM}}`, and the group gradients are averaged. This is what the reference
  does per device under ``pmap``; here it is a reshape and a ``vmap``, so it runs under
  ``jax.jit`` with the batch sharded over a mesh axis (``group_size`` = per-device batch
  gives the reference's per-device perturbations).
* `sam(base_optimizer, ...)` is an optax transform ("opaque" mode): ``update(grads, state,
  params, grad_fn=...)`` takes the gradient at :math:`w` as ``grads``, calls
  ``grad_fn(w + eps)`` and passes the result to the base optimizer.

Complex params are supported. `sam_value_and_grad` works in ``jax.grad``'s convention (its
gradient of a real loss in complex params is the conjugate of the ascent direction, so it
perturbs along the conjugate and returns ``jax.grad``'s kind of gradient); `sam` works in
optax's (the gradients it gets are conjugated, and ``grad_fn`` must return them conjugated
too).

References:
  Foret, Kleiner, Mobahi, Neyshabur, "Sharpness-Aware Minimization for Efficiently Improving
  Generalization", ICLR 2021, arXiv:2010.01412.
  Kwon, Kim, Park, Choi, "ASAM: Adaptive Sharpness-Aware Minimization for Scale-Invariant
  Learning of Deep Neural Networks", ICML 2021, arXiv:2102.11600.
"""

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from optlib import _masks, _numerics, _validation

# Added to the perturbation's norm so a zero gradient gives a zero perturbation, not NaN.
NORM_EPS = 1e-12


def sam_perturbation(
    grads: optax.Updates,
    params: optax.Params,
    rho: ArrayLike,
    adaptive: bool = False,
    adaptive_eps: ArrayLike = 0.01,
    adaptive_mask: _masks.PerLeafSpec = None,
    mask: _masks.PerLeafSpec = None,
) -> optax.Updates:
    r"""The SAM (or ASAM) perturbation :math:`\hat\epsilon = \rho T^2 g / (\|T g\| + \delta)`.

    Args:
      grads: the gradient :math:`g` at `params`.
      params: the params :math:`w` (used by ASAM and the masks only).
      rho: neighbourhood radius :math:`\rho` (a number or an array, e.g. a schedule's value).
      adaptive: ASAM's :math:`T = |w| + \eta` instead of :math:`T = 1`.
      adaptive_eps: :math:`\eta`.
      adaptive_mask: which leaves ASAM scales (True = scaled, else :math:`T = 1`); a pytree,
        a prefix of one, or a callable of the params (`optlib.masks`). None: every leaf.
      mask: which leaves are perturbed at all (True = perturbed); the others get
        :math:`\hat\epsilon = 0` and do not enter the norm. None: every leaf.

    Returns:
      :math:`\hat\epsilon`, shaped like `params` and in at least float32.

    Example:
      >>> import jax.numpy as jnp, optlib
      >>> optlib.sam_perturbation(jnp.array([3.0, 4.0]), jnp.zeros(2), rho=0.5)
      Array([0.3, 0.4], dtype=float32)
    """
    if callable(rho):
        raise ValueError(
            "sam_perturbation and sam_value_and_grad take rho as a number or an array; for a "
            "schedule pass its value at the step, rho=schedule(step), or use optlib.sam"
        )
    gs = jax.tree.map(lambda g: g.astype(_numerics.wide(g.dtype)), grads)
    if mask is not None:
        on = _masks.resolve_mask(mask, params, "mask")
        treedef = jax.tree.structure(params)
        gs = treedef.unflatten(
            [
                g if m else jnp.zeros_like(g)
                for g, m in zip(treedef.flatten_up_to(gs), on, strict=True)
            ]
        )
    if adaptive:
        scaled = _masks.resolve_mask(adaptive_mask, params, "adaptive_mask")
        ws, treedef = jax.tree.flatten(params)
        scales = treedef.unflatten(
            [
                jnp.abs(w.astype(g.dtype)) + adaptive_eps
                if on
                else jnp.ones(g.shape, _numerics.real_dtype(g.dtype))
                for w, g, on in zip(ws, treedef.flatten_up_to(gs), scaled, strict=True)
            ]
        )
        tg = jax.tree.map(jnp.multiply, scales, gs)
    else:
        tg = gs
    norm = jnp.sqrt(_numerics.tree_sq_norm(tg, _numerics.scalar_dtype(tg)))
    factor = rho / (norm + NORM_EPS)
    if adaptive:
        return jax.tree.map(lambda t, g: (factor * t * t * g).astype(g.dtype), scales, gs)
    return jax.tree.map(lambda g: (factor * g).astype(g.dtype), gs)


def _perturb(params, eps):
    return jax.tree.map(lambda w, e: (w.astype(e.dtype) + e).astype(w.dtype), params, eps)


def _check(rho, adaptive_eps) -> None:
    if not callable(rho):  # a schedule of the step (optlib.sam only)
        _validation.check_range("rho", rho, 0.0, None, low_open=True)
    _validation.check_non_negative("adaptive_eps", adaptive_eps)


def sam_value_and_grad(
    loss_fn: Callable[..., Any],
    rho: ArrayLike = 0.05,
    adaptive: bool = False,
    adaptive_eps: ArrayLike = 0.01,
    group_size: int | None = None,
    has_aux: bool = False,
    adaptive_mask: _masks.PerLeafSpec = None,
    mask: _masks.PerLeafSpec = None,
) -> Callable[..., tuple[Any, optax.Updates]]:
    r"""Like ``jax.value_and_grad(loss_fn)``, but the gradient is SAM's.

    The returned function takes ``(params, *args, **kwargs)``, as `loss_fn` does, and returns
    ``(loss, grads)`` (``((loss, aux), grads)`` with `has_aux`), where ``loss`` is the loss at
    `params` and ``grads`` is :math:`\nabla L(w + \hat\epsilon)` (module docstring). It costs
    two forward and backward passes.

    With ``group_size=m``, every positional argument after the params is a batch: a pytree
    whose leaves all have the batch size :math:`n` as leading axis, :math:`m` dividing
    :math:`n`. Each group of :math:`m` consecutive examples gets its own perturbation; the
    returned gradient is the mean of the groups' SAM gradients and the returned loss the mean
    of the groups' losses at `params` (the batch loss when `loss_fn` is a mean over examples).
    Keyword arguments are passed to every group unchanged (put non-batch inputs there). `aux`
    is then stacked over groups (leading axis :math:`n / m`).

    Args:
      loss_fn: scalar loss ``loss_fn(params, *args, **kwargs)``.
      rho: neighbourhood radius :math:`\rho > 0` (0.05 is common; ASAM wants ~0.5-2).
      adaptive: ASAM's elementwise scaling :math:`T = |w| + \eta`.
      adaptive_eps: ASAM's :math:`\eta \ge 0`.
      group_size: examples per perturbation (m-sharpness); None: one for the whole batch.
      has_aux: as in ``jax.value_and_grad``; `aux` comes from the pass at `params`.
      adaptive_mask: which leaves ASAM scales (see `sam_perturbation`). None: every leaf.
      mask: which leaves are perturbed (see `sam_perturbation`). None: every leaf.

    Returns:
      A function with the signature of ``jax.value_and_grad(loss_fn, has_aux=has_aux)``.

    Raises:
      ValueError: bad `rho`, `adaptive_eps` or `group_size` (at once), or a batch whose
        size `group_size` does not divide (when the returned function is traced).

    Example:
      >>> import jax, jax.numpy as jnp, optlib
      >>> a = jnp.array([1.0, 4.0])
      >>> loss = lambda w: 0.5 * jnp.sum(a * w**2)
      >>> value, g = optlib.sam_value_and_grad(loss, rho=0.1)(jnp.array([1.0, 1.0]))
      >>> # g = A (w + rho A w / |A w|)
      >>> aw = a * jnp.array([1.0, 1.0])
      >>> bool(jnp.allclose(g, a * (1.0 + 0.1 * aw / jnp.linalg.norm(aw))))
      True

    References:
      Foret et al., ICLR 2021, arXiv:2010.01412; Kwon et al., ICML 2021, arXiv:2102.11600.
    """
    if callable(rho):
        raise ValueError(
            "sam_value_and_grad takes rho as a number or an array; for a schedule pass its "
            "value at the step, rho=schedule(step), or use optlib.sam"
        )
    _check(rho, adaptive_eps)
    if group_size is not None and (
        isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1
    ):
        raise ValueError(f"group_size must be a positive int or None, got {group_size!r}")
    value_and_grad = jax.value_and_grad(loss_fn, has_aux=has_aux)
    grad = jax.grad(loss_fn, has_aux=has_aux)

    def one(params, *args, **kwargs):
        out, g = value_and_grad(params, *args, **kwargs)
        # jax.grad of a real loss in complex params is the conjugate of the ascent direction.
        ascent = jax.tree.map(lambda x: jnp.conj(x) if _numerics.is_complex(x) else x, g)
        eps = sam_perturbation(ascent, params, rho, adaptive, adaptive_eps, adaptive_mask, mask)
        g_sam = grad(_perturb(params, eps), *args, **kwargs)
        if has_aux:
            g_sam = g_sam[0]
        return out, jax.tree.map(lambda s, p: s.astype(p.dtype), g_sam, params)

    if group_size is None:
        return one

    def grouped(params, *args, **kwargs):
        sizes = {x.shape[0] if x.ndim else None for x in jax.tree.leaves(args)}
        if not args or None in sizes or len(sizes) != 1:
            raise ValueError(
                "group_size needs batch arguments after the params whose leaves share a "
                f"leading batch axis; got leading sizes {sorted(map(str, sizes))}"
            )
        (n,) = sizes
        if n % group_size:
            raise ValueError(f"group_size={group_size} must divide the batch size {n}")
        groups = jax.tree.map(lambda x: _split_groups(x, n // group_size, group_size), args)
        per_group = jax.vmap(lambda batch: one(params, *batch, **kwargs))
        out, g = per_group(groups)
        g = jax.tree.map(
            lambda x: jnp.mean(x.astype(_numerics.wide(x.dtype)), axis=0).astype(x.dtype), g
        )
        if has_aux:
            loss, aux = out
            return (jnp.mean(loss, axis=0), aux), g
        return jnp.mean(out, axis=0), g

    return grouped


def _split_groups(x: jax.Array, num_groups: int, group_size: int) -> jax.Array:
    """`x` reshaped to (num_groups, group_size, ...), also when its batch axis is explicit.

    On a mesh with Explicit axes the reshape must be told its output sharding whenever a
    group spans several devices' shards: the group axis keeps the batch's mesh axes when
    they divide the number of groups, else the two leading axes are replicated (each device
    then computes every group; correct, with an all-gather of the batch).
    """
    shape = (num_groups, group_size, *x.shape[1:])
    sharding = getattr(jax.typeof(x), "sharding", None)
    spec = getattr(sharding, "spec", None)
    mesh = getattr(sharding, "mesh", None)
    if not spec or spec[0] is None or not getattr(mesh, "explicit_axes", ()):
        return x.reshape(shape)
    batch_axes = spec[0] if isinstance(spec[0], tuple) else (spec[0],)
    shards = math.prod(mesh.shape[a] for a in batch_axes)
    lead = (spec[0], None) if num_groups % shards == 0 else (None, None)
    rest = tuple(spec[1:]) + (None,) * (x.ndim - len(spec))
    return jnp.reshape(x, shape, out_sharding=jax.sharding.PartitionSpec(*lead, *rest))


class SAMState(NamedTuple):
    """State of `sam`: the step count (for a schedule of rho) and the base optimizer's state."""

    count: jax.Array  # int32 scalar: number of updates applied so far.
    base_state: optax.OptState


def sam(
    base_optimizer: optax.GradientTransformation,
    rho: optax.ScalarOrSchedule = 0.05,
    adaptive: bool = False,
    adaptive_eps: ArrayLike = 0.01,
    adaptive_mask: _masks.PerLeafSpec = None,
    mask: _masks.PerLeafSpec = None,
) -> optax.GradientTransformationExtraArgs:
    r"""SAM as an optax transform: ``update(grads, state, params, grad_fn=...)``.

    `grads` must be the gradient at `params`; the transform computes :math:`\hat\epsilon`
    from it (module docstring), calls ``grad_fn(params + eps)`` and gives that gradient to
    `base_optimizer`, which steps from `params`. Other extra keyword arguments go to the base
    optimizer.

    Where other transforms go: `grads` only sets the direction of :math:`\hat\epsilon`
    (a scale such as ``optax.clip_by_global_norm`` does not change it), and the base steps
    with what ``grad_fn`` returns. So a transform placed before `sam` in ``optax.chain`` has
    no effect on the step; put clipping, masking and weight decay inside the base:
    ``optlib.sam(optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(lr)))``.

    `sam` needs the whole params, because ``grad_fn`` does: under ``optax.masked`` or in an
    ``optax.multi_transform`` group it would see ``MaskedNode``s in place of the masked-out
    leaves, so it raises instead. Put `sam` outside, choose the perturbed leaves with
    ``mask=`` and give the groups their optimizers inside the base, e.g.
    ``optlib.sam(optax.multi_transform({"sam": sgd, "rest": adamw}, labels), mask=m)``.
    (A group without leaves is fine: nothing is perturbed and ``grad_fn`` is not called.)

    With gradient accumulation, do not wrap `sam` in ``optax.MultiSteps``: it would call
    ``grad_fn`` on every micro-batch with the last micro-batch's closure. Take each
    micro-batch's SAM gradient with `sam_value_and_grad` and accumulate those around the base
    optimizer (`optlib.multi_steps` or ``optax.MultiSteps``): every micro-batch then gets its
    own perturbation, as every device does in the reference's data-parallel SAM.

    For m-sharpness or to avoid passing a closure, use `sam_value_and_grad` with any optimizer.

    Args:
      base_optimizer: the optimizer that takes the SAM gradient (SGD with momentum in the
        paper).
      rho: neighbourhood radius :math:`\rho > 0`, or a schedule of the step count.
      adaptive: ASAM's elementwise scaling :math:`T = |w| + \eta`.
      adaptive_eps: ASAM's :math:`\eta \ge 0`.
      adaptive_mask: which leaves ASAM scales (see `sam_perturbation`). None: every leaf.
      mask: which leaves are perturbed (see `sam_perturbation`). None: every leaf.

    Returns:
      A `GradientTransformationExtraArgs` with state `SAMState`.

    Example:
      >>> import jax, jax.numpy as jnp, optax, optlib
      >>> loss = lambda w: jnp.sum((w - 1.0) ** 2)
      >>> opt = optlib.sam(optax.sgd(0.1), rho=0.05)
      >>> params = jnp.zeros(2)
      >>> state = opt.init(params)
      >>> for _ in range(50):
      ...     grads = jax.grad(loss)(params)
      ...     updates, state = opt.update(grads, state, params, grad_fn=jax.grad(loss))
      ...     params = optax.apply_updates(params, updates)
      >>> bool(loss(params) < 1e-2)
      True

    References:
      Foret et al., ICLR 2021, arXiv:2010.01412; Kwon et al., ICML 2021, arXiv:2102.11600.
    """
    _check(rho, adaptive_eps)
    base = optax.with_extra_args_support(base_optimizer)

    def init_fn(params):
        return SAMState(count=jnp.zeros([], jnp.int32), base_state=base.init(params))

    def update_fn(updates, state, params=None, *, grad_fn=None, **extra_args):
        if grad_fn is None:
            raise ValueError(
                "sam needs grad_fn=: call update(grads, state, params, grad_fn=f) with "
                "f(params) -> gradient of the loss at params"
            )
        _numerics.require_params(params, "sam", ", grad_fn=f")
        nodes = jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, optax.MaskedNode))
        if not jax.tree.leaves(params):
            g_sam = updates  # no leaf to perturb (an empty tree or multi_transform group)
        elif any(isinstance(x, optax.MaskedNode) for x in nodes):
            raise ValueError(
                "sam got params with optax.MaskedNode in place of masked-out leaves (sam under "
                "optax.masked or in an optax.multi_transform group), and grad_fn needs the "
                "whole params. Put sam outside, choose the perturbed leaves with mask= and "
                "give the groups their optimizers inside the base, e.g. "
                "optlib.sam(optax.multi_transform(transforms, labels), mask=m)"
            )
        else:
            rho_t = _numerics.lr_at(rho, state.count, _numerics.scalar_dtype(params))
            eps = sam_perturbation(
                updates, params, rho_t, adaptive, adaptive_eps, adaptive_mask, mask
            )
            g_sam = grad_fn(_perturb(params, eps))
            g_sam = jax.tree.map(lambda s, g: s.astype(g.dtype), g_sam, updates)
        new_updates, base_state = base.update(g_sam, state.base_state, params, **extra_args)
        return new_updates, SAMState(optax.safe_increment(state.count), base_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
