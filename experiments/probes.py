r"""Measurements of training dynamics: gradient noise scale, sharpness, critical batch size.

Each estimator is a pure function usable on its own, inside a jitted train step, or on a
finished run:

* **Gradient noise scale** (McCandlish et al. 2018, Appendix A). With squared norms of mean
  gradients measured at two batch sizes, :math:`|G_{B_s}|^2` and :math:`|G_{B_b}|^2`
  (:math:`B_s < B_b`), and :math:`\mathbb{E}|G_B|^2 = |G|^2 + \operatorname{tr}\Sigma / B`,

  .. math::
      |\mathcal{G}|^2 = \frac{B_b |G_{B_b}|^2 - B_s |G_{B_s}|^2}{B_b - B_s}, \qquad
      \mathcal{S} = \frac{|G_{B_s}|^2 - |G_{B_b}|^2}{1/B_s - 1/B_b}

  are unbiased for :math:`|G|^2` and :math:`\operatorname{tr}\Sigma` (`noise_scale_terms`).
  Their ratio is not, so each is averaged separately (a bias-corrected EMA,
  `noise_scale_init` / `noise_scale_update`) and :math:`B_{simple} = \text{EMA}(\mathcal{S}) /
  \text{EMA}(|\mathcal{G}|^2)` is formed from the averages (`noise_scale_estimates`).
  The small batch comes for free from a step that already splits its batch:
  `microbatch_value_and_grad` (gradient accumulation) or `data_parallel_value_and_grad`
  (each `data` shard's gradient); `noise_scale_source` says which one a config can use.
* **Sharpness**: `top_hessian_eigenvalue` runs power iteration on Hessian-vector products,
  optionally preconditioned by an Adam-type second moment (`adam_preconditioner`), for
  comparison with `stability_threshold` (2/lr for gradient descent).
* **Critical batch size**: `fit_critical_batch` fits McCandlish's
  :math:`(S/S_{min} - 1)(E/E_{min} - 1) = 1` to steps-to-target measured per batch size.
* **Per-layer update/param norm ratios** (`update_param_ratios`): what LARS and LAMB control.

References:
  McCandlish, Kaplan, Amodei, OpenAI Dota Team, "An Empirical Model of Large-Batch Training",
  arXiv:1812.06162, 2018.
  Cohen, Kaur, Li, Kolter, Talwalkar, "Gradient Descent on Neural Networks Typically Occurs at
  the Edge of Stability", ICLR 2021, arXiv:2103.00065.
  Cohen, Ghorbani, Krishnan, Agarwal, Medapati, Badura, Suo, Cardoze, Nado, Dahl, Gilmer,
  "Adaptive Gradient Methods at the Edge of Stability", arXiv:2207.14484, 2022.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

import optlib
from experiments import sharding
from optlib import _masks
from optlib._schedule_free import ScheduleFreeBaseState

Params = Any
Batch = Any
LossFn = Callable[[Params], jax.Array]


def _wide(dtype) -> jnp.dtype:
    return jnp.promote_types(dtype, jnp.float32)


def _sq_norm(tree) -> jax.Array:
    """Squared Euclidean norm of a pytree, accumulated in at least float32."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.zeros((), jnp.float32)
    return sum(jnp.sum(jnp.square(x.astype(_wide(x.dtype)))) for x in leaves)


def _vdot(a, b) -> jax.Array:
    return sum(
        jnp.sum(x.astype(_wide(x.dtype)) * y.astype(_wide(y.dtype)))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


# --- gradient noise scale ------------------------------------------------------------------


def _check_batch_pair(small_batch, big_batch) -> tuple[float, float]:
    for name, value in (("small_batch", small_batch), ("big_batch", big_batch)):
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Real)
            or not math.isfinite(value)
            or value <= 0
        ):
            raise ValueError(f"{name} must be a positive number (examples), got {value!r}")
    if not small_batch < big_batch:
        raise ValueError(
            f"small_batch must be smaller than big_batch, got small_batch={small_batch} and "
            f"big_batch={big_batch}"
        )
    return float(small_batch), float(big_batch)


def noise_scale_terms(
    small_sq_norm: jax.typing.ArrayLike,
    big_sq_norm: jax.typing.ArrayLike,
    small_batch: float,
    big_batch: float,
) -> tuple[jax.Array, jax.Array]:
    r"""Unbiased estimates of :math:`|G|^2` and :math:`\operatorname{tr}\Sigma` at two batch sizes.

    For a mean gradient over :math:`B` i.i.d. examples,
    :math:`\mathbb{E}|G_B|^2 = |G|^2 + \operatorname{tr}\Sigma / B`, where :math:`G` is the
    true gradient and :math:`\Sigma` the per-example gradient covariance. Two batch sizes
    :math:`B_s < B_b` give two equations and

    .. math::
        |\mathcal{G}|^2 = \frac{B_b |G_{B_b}|^2 - B_s |G_{B_s}|^2}{B_b - B_s}, \qquad
        \mathcal{S} = \frac{|G_{B_s}|^2 - |G_{B_b}|^2}{1/B_s - 1/B_b}.

    A single estimate is noisy and may be negative; average many (`noise_scale_update`).

    Args:
      small_sq_norm: :math:`|G_{B_s}|^2`, e.g. the mean over microbatches of each one's
        squared gradient norm (an average of several small-batch measurements is as unbiased
        as one, and less noisy).
      big_sq_norm: :math:`|G_{B_b}|^2`, the squared norm of the big batch's mean gradient.
      small_batch: :math:`B_s`, examples behind each small-batch gradient (> 0).
      big_batch: :math:`B_b > B_s`.

    Returns:
      `(g2, trace_sigma)`: the estimates of :math:`|G|^2` and :math:`\operatorname{tr}\Sigma`,
      float32 or wider.

    Example:
      >>> g2, tr = noise_scale_terms(1.2, 1.05, small_batch=8, big_batch=64)
      >>> round(float(g2), 4), round(float(tr), 4)
      (1.0286, 1.3714)

    References:
      McCandlish et al., "An Empirical Model of Large-Batch Training", arXiv:1812.06162,
      Appendix A.1.
    """
    b_s, b_b = _check_batch_pair(small_batch, big_batch)
    small = jnp.asarray(small_sq_norm)
    big = jnp.asarray(big_sq_norm)
    dtype = _wide(jnp.result_type(small, big))
    small, big = small.astype(dtype), big.astype(dtype)
    g2 = (b_b * big - b_s * small) / (b_b - b_s)
    # 1/B_s - 1/B_b = (B_b - B_s) / (B_s B_b), without the cancellation of the difference.
    trace_sigma = (small - big) * (b_s * b_b / (b_b - b_s))
    return g2, trace_sigma


class NoiseScaleState(NamedTuple):
    """Exponential moving averages of the noise-scale terms (float32 scalars).

    Attributes:
      g2: the EMA of :math:`|\\mathcal{G}|^2` estimates, before bias correction.
      trace_sigma: the EMA of :math:`\\mathcal{S}` estimates, before bias correction.
      weight: :math:`1 - \\beta^t` after t updates, the total weight of the EMAs; dividing by
        it is the bias correction (it is 0 before the first update).
    """

    g2: jax.Array
    trace_sigma: jax.Array
    weight: jax.Array


def noise_scale_init() -> NoiseScaleState:
    """A `NoiseScaleState` before any measurement (replicated scalars; fits any mesh)."""
    zero = jnp.zeros((), jnp.float32)
    return NoiseScaleState(g2=zero, trace_sigma=zero, weight=zero)


def noise_scale_update(
    state: NoiseScaleState,
    g2: jax.typing.ArrayLike,
    trace_sigma: jax.typing.ArrayLike,
    decay: float = 0.99,
) -> NoiseScaleState:
    r"""Adds one pair of estimates (from `noise_scale_terms`) to the moving averages.

    .. math::
        m_t = \beta m_{t-1} + (1 - \beta) x_t, \qquad w_t = \beta w_{t-1} + (1 - \beta),

    for :math:`x = |\mathcal{G}|^2` and :math:`x = \mathcal{S}` separately, with
    :math:`w_t = 1 - \beta^t` the bias correction used by `noise_scale_estimates`. Pure and
    jittable: the state can live in the train state.

    Args:
      state: the current `NoiseScaleState`.
      g2: this step's estimate of :math:`|G|^2`.
      trace_sigma: this step's estimate of :math:`\operatorname{tr}\Sigma`.
      decay: :math:`\beta \in [0, 1)`; 0.99 averages over about the last 100 steps.

    Returns:
      The updated `NoiseScaleState`.

    Example:
      >>> state = noise_scale_init()
      >>> for g2, tr in [(1.0, 10.0), (3.0, 30.0)]:
      ...     state = noise_scale_update(state, g2, tr, decay=0.5)
      >>> {k: round(float(v), 4) for k, v in noise_scale_estimates(state).items()}
      {'g2': 2.3333, 'trace_sigma': 23.3333, 'noise_scale': 10.0}
    """
    if isinstance(decay, numbers.Real) and not 0 <= decay < 1:
        raise ValueError(f"decay must be in [0, 1), got {decay!r}")
    decay = jnp.asarray(decay, jnp.float32)

    def ema(old, new):
        return decay * old + (1 - decay) * jnp.asarray(new, jnp.float32)

    return NoiseScaleState(
        g2=ema(state.g2, g2),
        trace_sigma=ema(state.trace_sigma, trace_sigma),
        weight=ema(state.weight, 1.0),
    )


def noise_scale_estimates(state: NoiseScaleState) -> dict[str, jax.Array]:
    r"""The bias-corrected averages and :math:`B_{simple}` = EMA(tr Σ) / EMA(|G|²).

    Returns:
      `{"g2", "trace_sigma", "noise_scale"}` as float32 scalars; NaN before the first update.
      Early estimates of `g2` can be negative (the estimator is unbiased, not positive), and
      so can the noise scale; it settles as the averages fill.
    """
    g2 = state.g2 / state.weight
    trace_sigma = state.trace_sigma / state.weight
    return {"g2": g2, "trace_sigma": trace_sigma, "noise_scale": trace_sigma / g2}


class SplitGradients(NamedTuple):
    """A batch's loss and mean gradient, plus what the noise scale needs from its pieces.

    Attributes:
      loss: the mean loss over the whole batch.
      grads: the mean gradient over the whole batch (the params' structure and dtypes).
      small_sq_norm: the mean over pieces of each piece's squared gradient norm,
        :math:`|G_{B_s}|^2` for `noise_scale_terms` (float32 or wider).
      big_sq_norm: the squared norm of `grads`, :math:`|G_{B_b}|^2` (float32 or wider).
    """

    loss: jax.Array
    grads: Params
    small_sq_norm: jax.Array
    big_sq_norm: jax.Array


def _batch_size(batch: Batch, name: str = "batch") -> int:
    sizes = {np.shape(x)[0] if np.ndim(x) else None for x in jax.tree.leaves(batch)}
    if not sizes or None in sizes or len(sizes) != 1:
        raise ValueError(
            f"{name} must be a pytree of arrays sharing one leading (example) axis, got leading "
            f"sizes {sorted(s for s in sizes if s is not None)} "
            f"{'and scalars' if None in sizes else ''}".rstrip()
        )
    return sizes.pop()


def _check_pieces(name: str, value, batch_size: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if batch_size % value:
        raise ValueError(
            f"the batch size {batch_size} does not divide into {value} {what} ({name}={value}); "
            f"choose a batch size that is a multiple of {value}"
        )
    return int(value)


def _active_mesh():
    """The mesh of `experiments.sharding` (axes `data`, `fsdp`) set while tracing with
    `jax.sharding.use_abstract_mesh`, or None (no mesh, or another one: no constraints)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or not set(sharding.AXES) <= set(mesh.axis_names):
        return None
    return mesh


def _constrain(x: jax.Array, spec: P) -> jax.Array:
    return jax.lax.with_sharding_constraint(x, spec)


def microbatch_value_and_grad(
    loss_fn: Callable[[Params, Batch], jax.Array],
    params: Params,
    batch: Batch,
    num_microbatches: int,
) -> SplitGradients:
    r"""Gradient accumulation over k microbatches, with the noise scale's small-batch norm.

    The batch of :math:`B` examples is cut into :math:`k` microbatches of :math:`B/k`
    (microbatch :math:`j` holds examples :math:`j, j + k, j + 2k, \dots`, so under a batch
    split over devices every device already holds its share of every microbatch). A
    `lax.scan` computes each microbatch's loss and gradient :math:`g_j` and keeps running
    sums, so memory holds one gradient and one accumulator, not k gradients:

    .. math::
        G_B = \frac{1}{k} \sum_j g_j, \qquad
        |G_{B/k}|^2 \approx \frac{1}{k} \sum_j |g_j|^2 .

    For a loss that is a mean over examples, `loss` and `grads` equal those of the whole
    batch (to rounding). Sums are kept in at least float32.

    Under the mesh of `experiments.sharding` (traced inside
    `jax.sharding.use_abstract_mesh(mesh.abstract_mesh)`, as `experiments.train` does), each
    microbatch is pinned to the batch split and each microbatch gradient, like the
    accumulator, to the params' FSDP split (`sharding.fsdp_spec` with its default
    `min_size`, as `tree_shardings` uses): a device holds a gradient slice, not a whole
    gradient, and each microbatch's gradient is reduced over the devices inside the scan, as
    any accumulation that keeps a sharded accumulator does. The noise-scale term then costs
    one squared norm per microbatch: local sums of squares and a few float32 scalars
    all-reduced per microbatch.

    Args:
      loss_fn: `loss_fn(params, batch) -> scalar`, the mean loss over the batch's examples.
      params: the parameters.
      batch: a pytree of arrays with a common leading example axis :math:`B`.
      num_microbatches: :math:`k \ge 1`, dividing :math:`B`.

    Returns:
      A `SplitGradients`; the noise-scale terms are
      `noise_scale_terms(out.small_sq_norm, out.big_sq_norm, B // k, B)`.

    Raises:
      ValueError: when `num_microbatches` is not an int >= 1 or does not divide the batch.

    Example:
      >>> import jax.numpy as jnp
      >>> loss = lambda w, b: jnp.mean((b["x"] @ w - b["y"]) ** 2)
      >>> batch = {"x": jnp.arange(16.0).reshape(8, 2), "y": jnp.ones(8)}
      >>> out = microbatch_value_and_grad(loss, jnp.zeros(2), batch, num_microbatches=4)
      >>> bool(jnp.allclose(out.grads, jax.grad(loss)(jnp.zeros(2), batch)))
      True
    """
    size = _batch_size(batch)
    k = _check_pieces("num_microbatches", num_microbatches, size, "microbatches")
    mesh = _active_mesh()

    def split(x):
        # [B, ...] -> [B/k, k, ...] -> [k, B/k, ...]: a device's rows stay on that device.
        return jnp.swapaxes(x.reshape(size // k, k, *x.shape[1:]), 0, 1)

    micro = jax.tree.map(split, batch)
    grad_fn = jax.value_and_grad(loss_fn)

    def like_params(tree):
        # Gradients split like the params (the FSDP rule), so the accumulator costs a
        # gradient slice per device, not a whole gradient.
        if mesh is None:
            return tree
        fsdp_size = dict(mesh.shape)["fsdp"]
        return jax.tree.map(lambda g: _constrain(g, sharding.fsdp_spec(g.shape, fsdp_size)), tree)

    def body(carry, piece):
        loss_sum, grad_sum, sq_sum = carry
        if mesh is not None:
            piece = jax.tree.map(lambda x: _constrain(x, P(sharding.BATCH_AXES)), piece)
        loss, grads = grad_fn(params, piece)
        grads = like_params(grads)
        grad_sum = jax.tree.map(lambda s, g: s + g.astype(s.dtype), grad_sum, grads)
        return (loss_sum + loss.astype(loss_sum.dtype), grad_sum, sq_sum + _sq_norm(grads)), None

    abstract_loss = jax.eval_shape(loss_fn, params, jax.tree.map(lambda x: x[0], micro))
    _check_scalar(abstract_loss, "loss_fn")
    zeros = like_params(jax.tree.map(lambda p: jnp.zeros(p.shape, _wide(p.dtype)), params))
    init = (jnp.zeros((), _wide(abstract_loss.dtype)), zeros, jnp.zeros((), jnp.float32))
    (loss_sum, grad_sum, sq_sum), _ = jax.lax.scan(body, init, micro)
    mean = jax.tree.map(lambda s: s / k, grad_sum)
    grads = jax.tree.map(lambda m, p: m.astype(p.dtype), mean, params)
    return SplitGradients(loss_sum / k, grads, sq_sum / k, _sq_norm(mean))


def data_parallel_value_and_grad(
    loss_fn: Callable[[Params, Batch], jax.Array],
    params: Params,
    batch: Batch,
    num_shards: int | None = None,
) -> SplitGradients:
    r"""The batch's gradient as the mean of each `data` shard's local gradient, plus their norms.

    The batch of :math:`B` examples is viewed as :math:`n` shards of :math:`B/n` contiguous
    examples (a reshape to `[n, B/n, ...]`), the gradient of each shard :math:`g_i` is taken
    with `vmap`, and

    .. math::
        G_B = \frac{1}{n} \sum_i g_i, \qquad
        |G_{B/n}|^2 \approx \frac{1}{n} \sum_i |g_i|^2 .

    Under the mesh of `experiments.sharding` (traced inside
    `jax.sharding.use_abstract_mesh(mesh.abstract_mesh)`, as `experiments.train` does, with
    `n = mesh.shape["data"]`), the batch split `P(("data", "fsdp"))` is exactly this
    reshape: shard :math:`i` lives on the devices of data index :math:`i`, split over `fsdp`.
    The shards are pinned as `P("data", "fsdp")` and each :math:`g_i` as
    `P("data", <the params' FSDP spec>)`, so every device computes the gradient of its own
    rows (as in a plain step), the partial gradients are reduce-scattered over `fsdp` within
    each data index (what FSDP does anyway), and the mean over :math:`i` is the all-reduce
    over `data` that data parallelism does anyway: the same bytes as a plain step's gradient
    reduction over all devices (checked in the compiled HLO on a 4x2 CPU mesh). The only
    extra communication is the squared norms: each device sums the squares of its slice and
    a few float32 scalars are all-reduced. Memory per device: one gradient, as in a plain
    step.

    Without a mesh (one device) the same arithmetic runs unsharded: the result is the same,
    which makes this path testable anywhere.

    Args:
      loss_fn: `loss_fn(params, batch) -> scalar`, the mean loss over the batch's examples.
      params: the parameters.
      batch: a pytree of arrays with a common leading example axis :math:`B`.
      num_shards: :math:`n`; default: the size of the active mesh's `data` axis.

    Returns:
      A `SplitGradients`; the noise-scale terms are
      `noise_scale_terms(out.small_sq_norm, out.big_sq_norm, B // n, B)`.

    Raises:
      ValueError: no `num_shards` and no mesh, `num_shards` unlike the mesh's `data` size,
        or a batch that `num_shards` does not divide.

    Example:
      >>> import jax.numpy as jnp
      >>> loss = lambda w, b: jnp.mean((b["x"] @ w - b["y"]) ** 2)
      >>> batch = {"x": jnp.arange(16.0).reshape(8, 2), "y": jnp.ones(8)}
      >>> out = data_parallel_value_and_grad(loss, jnp.zeros(2), batch, num_shards=4)
      >>> bool(jnp.allclose(out.grads, jax.grad(loss)(jnp.zeros(2), batch)))
      True
    """
    mesh = _active_mesh()
    data_size = None if mesh is None else dict(mesh.shape).get("data")
    if num_shards is None:
        if data_size is None:
            raise ValueError(
                "num_shards is needed when no mesh with a 'data' axis is active "
                "(trace under jax.sharding.use_abstract_mesh(mesh.abstract_mesh))"
            )
        num_shards = data_size
    size = _batch_size(batch)
    n = _check_pieces("num_shards", num_shards, size, "data shards")
    if data_size is not None and n != data_size:
        raise ValueError(
            f"num_shards={n} differs from the active mesh's 'data' axis ({data_size}); the "
            "shards must be the mesh's data shards"
        )
    inner = tuple(a for a in sharding.BATCH_AXES if a != "data")  # ("fsdp",)
    shard_spec = P("data", inner)

    def split(x):
        x = x.reshape(n, size // n, *x.shape[1:])
        return x if data_size is None else _constrain(x, shard_spec)

    shards = jax.tree.map(split, batch)
    abstract_loss = jax.eval_shape(loss_fn, params, jax.tree.map(lambda x: x[0], shards))
    _check_scalar(abstract_loss, "loss_fn")
    losses, grads = jax.vmap(jax.value_and_grad(loss_fn), in_axes=(None, 0))(params, shards)
    if data_size is not None:
        fsdp_size = dict(mesh.shape).get("fsdp", 1)
        grads = jax.tree.map(
            lambda g: _constrain(g, P("data", *sharding.fsdp_spec(g.shape[1:], fsdp_size))),
            grads,
        )

    def per_shard_sq(g):
        g = g.astype(_wide(g.dtype))
        return jnp.sum(jnp.square(g), axis=tuple(range(1, g.ndim)))

    sq = sum(per_shard_sq(g) for g in jax.tree.leaves(grads))
    mean = jax.tree.map(lambda g: jnp.mean(g.astype(_wide(g.dtype)), axis=0), grads)
    out_grads = jax.tree.map(lambda m, p: m.astype(p.dtype), mean, params)
    loss = jnp.mean(losses.astype(_wide(losses.dtype)))
    return SplitGradients(loss, out_grads, jnp.mean(sq), _sq_norm(mean))


def noise_scale_source(
    batch_size: int, num_microbatches: int = 1, num_data_shards: int = 1
) -> tuple[str, int]:
    """Where a step gets its small batch for the noise scale, and that small batch's size.

    Microbatches win when both are available (k small batches per step); otherwise the
    `data` shards of the mesh.

    Args:
      batch_size: examples per step (the big batch).
      num_microbatches: `config.microbatches`.
      num_data_shards: the size of the mesh's `data` axis.

    Returns:
      `("microbatches", batch_size // num_microbatches)` or
      `("data", batch_size // num_data_shards)`.

    Raises:
      ValueError: neither source has more than one piece (and how to get one), or the batch
        size does not divide into the pieces (naming both numbers).
    """
    _check_pieces("batch_size", batch_size, batch_size, "examples")
    k = _check_pieces("num_microbatches", num_microbatches, batch_size, "microbatches")
    n = _check_pieces("num_data_shards", num_data_shards, batch_size, "data shards")
    if k > 1:
        return "microbatches", batch_size // k
    if n > 1:
        return "data", batch_size // n
    raise ValueError(
        "the gradient noise scale needs gradients at two batch sizes, and this step has one: "
        "set config.microbatches > 1 (gradient accumulation), or run on a mesh with more than "
        f"one data shard (config.mesh.data > 1); got microbatches={num_microbatches}, "
        f"data shards={num_data_shards}"
    )


# --- sharpness -----------------------------------------------------------------------------


def _check_scalar(abstract, name: str) -> None:
    shape = getattr(abstract, "shape", None)
    if shape != ():
        got = f"shape {shape}" if shape is not None else f"a {type(abstract).__name__}"
        raise ValueError(
            f"{name} must return a scalar loss (the mean over the batch), got {got}; "
            "Hessian-vector products need a scalar function"
        )


def hessian_vector_product(loss_fn: LossFn, params: Params, vector: Params) -> Params:
    r""":math:`H v` by forward-over-reverse differentiation (a JVP of the gradient).

    Costs about two gradient evaluations and no Hessian. `vector` must have the params'
    structure, shapes and dtypes.
    """
    return jax.jvp(jax.grad(loss_fn), (params,), (vector,))[1]


def top_hessian_eigenvalue(
    loss_fn: LossFn,
    params: Params,
    num_iterations: int = 20,
    key: jax.Array | None = None,
    preconditioner: Params | None = None,
) -> jax.Array:
    r"""The largest eigenvalue of the Hessian (or of :math:`P^{-1} H`) by power iteration.

    Power iteration on the Hessian-vector product (`hessian_vector_product`),

    .. math::
        v_{i+1} = \frac{A v_i}{\|A v_i\|}, \qquad \lambda_i = v_i^\top A v_i,

    with :math:`A = H` or, with a diagonal preconditioner :math:`P`,
    :math:`A = P^{-1/2} H P^{-1/2}`, which is symmetric and has the eigenvalues of
    :math:`P^{-1} H` (the preconditioned sharpness of Cohen et al. 2022). Power iteration finds
    the eigenvalue of largest magnitude; when that one is negative (a saddle), a second run on
    :math:`A - \lambda I` finds the largest eigenvalue, so the result is always the top
    (algebraically largest) eigenvalue, which is what the stability threshold bounds. The
    error of :math:`\lambda` shrinks like :math:`(\lambda_2/\lambda_1)^{2i}`: a small gap
    needs more iterations. Jittable (a `fori_loop`); run it on a fixed batch (close the batch
    into `loss_fn`). Each iteration costs one HVP, about two gradients.

    Args:
      loss_fn: `loss_fn(params) -> scalar`, e.g. `lambda p: workload.loss(p, batch)`.
      params: where the Hessian is taken.
      num_iterations: power iterations (>= 1); twice as many HVPs when the top-magnitude
        eigenvalue is negative.
      key: PRNG key of the random start vector; default `jax.random.PRNGKey(0)`.
      preconditioner: optional diagonal :math:`P > 0` with the params' structure, e.g.
        `adam_preconditioner(opt_state)`.

    Returns:
      The top eigenvalue, a float32 (or wider) scalar.

    Raises:
      ValueError: `loss_fn` does not return a scalar, a bad `num_iterations`, or a
        `preconditioner` whose structure or shapes differ from the params'.

    Example:
      >>> import jax.numpy as jnp
      >>> loss = lambda w: 0.5 * jnp.sum(jnp.array([4.0, 1.0, -2.0]) * w**2)
      >>> round(float(top_hessian_eigenvalue(loss, jnp.ones(3))), 4)
      4.0

    References:
      Cohen et al., "Gradient Descent on Neural Networks Typically Occurs at the Edge of
      Stability", ICLR 2021; Cohen et al., "Adaptive Gradient Methods at the Edge of
      Stability", arXiv:2207.14484.
    """
    if (
        isinstance(num_iterations, bool)
        or not isinstance(num_iterations, numbers.Integral)
        or num_iterations < 1
    ):
        raise ValueError(f"num_iterations must be an int >= 1, got {num_iterations!r}")
    _check_scalar(jax.eval_shape(loss_fn, params), "loss_fn")
    if key is None:
        key = jax.random.PRNGKey(0)
    if preconditioner is not None:
        if jax.tree.structure(preconditioner) != jax.tree.structure(params):
            raise ValueError(
                "preconditioner must have the params' tree structure, got "
                f"{jax.tree.structure(preconditioner)} for params {jax.tree.structure(params)}"
            )
        for p, w in zip(jax.tree.leaves(preconditioner), jax.tree.leaves(params), strict=True):
            if np.shape(p) != np.shape(w):
                raise ValueError(
                    f"preconditioner leaf of shape {np.shape(p)} for a param of shape "
                    f"{np.shape(w)}; it must be the diagonal, shaped like the params"
                )
        inv_root = jax.tree.map(
            lambda p, w: jax.lax.rsqrt(p.astype(_wide(p.dtype))).astype(w.dtype),
            preconditioner,
            params,
        )

        def matvec(u):
            hv = hessian_vector_product(loss_fn, params, jax.tree.map(jnp.multiply, inv_root, u))
            return jax.tree.map(jnp.multiply, inv_root, hv)
    else:

        def matvec(u):
            return hessian_vector_product(loss_fn, params, u)

    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    start = treedef.unflatten(
        [jax.random.normal(k, w.shape, _wide(w.dtype)) for k, w in zip(keys, leaves, strict=True)]
    )

    def normalize(v):
        norm = jnp.sqrt(_sq_norm(v))
        scale = 1 / jnp.maximum(norm, jnp.finfo(norm.dtype).tiny)
        return jax.tree.map(lambda x, w: (x * scale).astype(w.dtype), v, params)

    v0 = normalize(start)
    n = num_iterations

    # One loop holds both runs, so the HVP is compiled once: n iterations on A; if the
    # estimate is then negative (the largest-magnitude eigenvalue of A is a negative one), n
    # more on A - shift I with shift = that estimate, from the start vector again. The
    # largest eigenvalue of A - shift I is >= 0 and dominant, and top = shift + it.
    def keep_going(carry):
        i, _, _, shift = carry
        return (i < n) | ((i < 2 * n) & (shift < 0))

    def body(carry):
        i, v, _, shift = carry
        av = jax.tree.map(lambda a, x: a - shift.astype(a.dtype) * x, matvec(v), v)
        eigenvalue = _vdot(v, av)
        v = normalize(av)
        i = i + 1
        restart = (i == n) & (eigenvalue < 0)
        v = jax.tree.map(lambda new, first: jnp.where(restart, first, new), v, v0)
        shift = jnp.where(restart, eigenvalue, shift)
        return i, v, eigenvalue, shift

    zero = jnp.zeros((), jnp.float32)
    _, _, eigenvalue, shift = jax.lax.while_loop(
        keep_going, body, (jnp.zeros((), jnp.int32), v0, zero, zero)
    )
    return shift + eigenvalue


def stability_threshold(
    learning_rate: jax.typing.ArrayLike, momentum: float = 0.0, *, ema: bool = False
) -> jax.Array:
    r"""The sharpness above which a quadratic makes the (momentum) gradient step diverge.

    * gradient descent: :math:`2/\eta`;
    * heavy-ball momentum :math:`v \leftarrow \beta v + g` (optax.sgd's `momentum`):
      :math:`(2 + 2\beta)/\eta`;
    * EMA momentum :math:`m \leftarrow \beta m + (1-\beta) g` (Adam's :math:`\beta_1`, to be
      compared with the preconditioned sharpness): :math:`(2 + 2\beta)/((1 - \beta)\eta)`,
      38/η for β = 0.9.

    Args:
      learning_rate: :math:`\eta > 0` (the value applied at the step, e.g. `schedule(step)`).
      momentum: :math:`\beta \in [0, 1)`.
      ema: whether `momentum` is an EMA coefficient (Adam) rather than heavy ball.

    Returns:
      The threshold as a float32 (or wider) scalar.

    Example:
      >>> float(stability_threshold(0.1)), round(float(stability_threshold(0.1, 0.9, ema=True)))
      (20.0, 380)
    """
    if isinstance(learning_rate, numbers.Real) and not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    lr = jnp.asarray(learning_rate, jnp.float32)
    factor = (2 + 2 * momentum) / ((1 - momentum) if ema else 1.0)
    return factor / lr


class SecondMoment(NamedTuple):
    """An Adam-type second moment found in an optimizer state by `find_second_moment`.

    Attributes:
      kind: "adam" (optax's ScaleByAdamState: adam, adamw, nadamw), "lamb", "schedule_free"
        (schedule_free_adamw) or "momo_adam".
      count: updates applied so far.
      nu: the EMA of squared gradients, or for "momo_adam" the preconditioner
        :math:`\\epsilon + \\sqrt{\\hat v}` that MoMo-Adam keeps instead.
      hyperparams: hyperparameters read from an enclosing `optax.inject_hyperparams` state.
    """

    kind: str
    count: jax.Array
    nu: Params
    hyperparams: dict


# Defaults of the factories whose states hold a second moment: (b1 for the first-moment
# bias correction or None where there is none, b2, eps).
_DEFAULTS = {
    "adam": (0.9, 0.999, 1e-8),  # optax.adam / adamw / nadamw
    "lamb": (0.9, 0.999, 1e-6),  # optlib.lamb
    "schedule_free": (None, 0.999, 1e-8),  # optlib.schedule_free_adamw
    "momo_adam": (None, None, None),
}


def _second_moments(state, hyper: dict, found: list, seen_types: set) -> None:
    if isinstance(state, optax.ScaleByAdamState):
        found.append(SecondMoment("adam", state.count, state.nu, hyper))
    elif isinstance(state, optlib.ScaleByLambState):
        found.append(SecondMoment("lamb", state.count, state.nu, hyper))
    elif isinstance(state, ScheduleFreeBaseState):
        if state.nu is not None:
            found.append(SecondMoment("schedule_free", state.count, state.nu, hyper))
        else:
            seen_types.add("ScheduleFreeBaseState (SGD base, no second moment)")
    elif isinstance(state, optlib.MomoAdamState):
        found.append(SecondMoment("momo_adam", state.count, state.precond, hyper))
    elif hasattr(state, "hyperparams") and hasattr(state, "inner_state"):
        # optax.inject_hyperparams's states (InjectHyperparamsState and its stateful twin)
        _second_moments(state.inner_state, {**hyper, **state.hyperparams}, found, seen_types)
    elif isinstance(state, tuple | list):
        if type(state) not in (tuple, list):
            seen_types.add(type(state).__name__)
        for child in state:
            _second_moments(child, hyper, found, seen_types)
    elif isinstance(state, dict):
        for child in state.values():
            _second_moments(child, hyper, found, seen_types)


def find_second_moment(opt_state) -> SecondMoment:
    """The one Adam-type second moment in an optimizer state (any nesting of chains, SAM,
    averaging, masking, `inject_hyperparams`).

    Recognised: optax's `ScaleByAdamState` (adam, adamw, nadamw), `optlib.ScaleByLambState`,
    the AdamW base of `optlib.schedule_free_adamw`, `optlib.MomoAdamState`.

    Raises:
      ValueError: no second moment (SGD, LARS, TVLARS, DoG, MoMo, ...), naming the state
        types found, or more than one (pick the sub-state yourself).
    """
    found: list[SecondMoment] = []
    seen: set[str] = set()
    _second_moments(opt_state, {}, found, seen)
    if not found:
        raise ValueError(
            "the optimizer state holds no Adam-type second moment, so there is no "
            "preconditioner for the preconditioned sharpness (it is defined for adam, adamw, "
            "nadamw, lamb, schedule_free_adamw, momo_adam); state types found: "
            f"{', '.join(sorted(seen)) or type(opt_state).__name__}. Use the plain sharpness "
            "(preconditioner=None) for this optimizer"
        )
    if len(found) > 1:
        raise ValueError(
            f"the optimizer state holds {len(found)} second moments "
            f"({', '.join(f.kind for f in found)}); pass the sub-state that preconditions "
            "the params"
        )
    return found[0]


def adam_preconditioner(
    opt_state,
    *,
    b1: float | None = None,
    b2: float | None = None,
    eps: float | None = None,
    bias_correction: bool = True,
) -> Params:
    r"""The diagonal preconditioner :math:`P` of an Adam-type optimizer, from its state.

    Adam's step is :math:`w_{t+1} = w_t - \eta\, \hat m_t / (\sqrt{\hat v_t} + \epsilon)` with
    :math:`\hat m_t = m_t / (1 - \beta_1^t)`, :math:`\hat v_t = v_t / (1 - \beta_2^t)`. Written
    as preconditioned EMA momentum, :math:`w_{t+1} = w_t - \eta P_t^{-1} m_t`, as Cohen et al.
    (2022) do, the preconditioner holds both bias corrections and :math:`\epsilon`:

    .. math::
        P_t = (1 - \beta_1^t) \left( \sqrt{v_t / (1 - \beta_2^t)} + \epsilon \right).

    The top eigenvalue of :math:`P^{-1} H` (`top_hessian_eigenvalue(..., preconditioner=P)`)
    is then compared with :math:`(2 + 2\beta_1) / ((1 - \beta_1)\eta)`
    (`stability_threshold(lr, b1, ema=True)`, 38/η for β₁ = 0.9). The factor
    :math:`1 - \beta_1^t` differs from 1 only in the first tens of steps; the diagonal
    preconditioners of the authors' codebase (init2winit) leave it out.

    Per kind (`find_second_moment`): LAMB uses the same :math:`P` (its layer-wise trust ratio,
    a scalar per layer, is not part of it); schedule-free AdamW has no first moment EMA, so
    :math:`P = \sqrt{\hat v} + \epsilon`; MoMo-Adam keeps :math:`P = \epsilon + \sqrt{\hat v}`
    in its state and it is returned as is.

    Args:
      opt_state: the optimizer's state (the train state's `opt_state`).
      b1, b2, eps: the optimizer's hyperparameters. None: the value from an enclosing
        `inject_hyperparams` state, else the factory's default (adam/adamw/nadamw: 0.9,
        0.999, 1e-8; lamb: 0.9, 0.999, 1e-6; schedule_free_adamw: b2 0.999, eps 1e-8). Pass
        the config's values when they are not the defaults.
      bias_correction: False for a second moment used without bias correction (e.g.
        schedule_free_adamw's "paper" variant): :math:`P = \sqrt{v} + \epsilon`.

    Returns:
      :math:`P`, shaped like the params, float32 or wider. Call it after at least one update.

    Raises:
      ValueError: the state has no (or more than one) second moment, or no update was
        applied yet (when the count is known outside jit).

    Example:
      >>> import jax.numpy as jnp, optax
      >>> opt = optax.adam(0.1)
      >>> params = jnp.zeros(2)
      >>> _, state = opt.update(jnp.array([3.0, -4.0]), opt.init(params), params)
      >>> P = adam_preconditioner(state)  # (1 - 0.9) * (|g| + 1e-8) after one step
      >>> [round(float(x), 4) for x in P]
      [0.3, 0.4]
    """
    found = find_second_moment(opt_state)
    count = found.count
    if not isinstance(count, jax.core.Tracer) and int(np.asarray(count)) == 0:
        raise ValueError(
            "the optimizer has applied no update yet (count 0): its second moment is zero and "
            "the preconditioner undefined; measure after the first step"
        )
    if found.kind == "momo_adam":
        return jax.tree.map(lambda p: p.astype(_wide(p.dtype)), found.nu)
    default_b1, default_b2, default_eps = _DEFAULTS[found.kind]
    hyper = found.hyperparams
    b1 = hyper.get("b1", default_b1) if b1 is None else b1
    b2 = hyper.get("b2", default_b2) if b2 is None else b2
    eps = hyper.get("eps", default_eps) if eps is None else eps
    if found.kind == "schedule_free":
        b1 = None  # its b1 interpolates iterates; there is no gradient EMA to correct
    t = jnp.asarray(count, jnp.float32)
    first = 1.0 if (b1 is None or not bias_correction) else 1 - jnp.asarray(b1, jnp.float32) ** t
    second = 1.0 if not bias_correction else 1 - jnp.asarray(b2, jnp.float32) ** t

    def leaf(v):
        v = v.astype(_wide(v.dtype))
        return first * (jnp.sqrt(v / second) + eps)

    return jax.tree.map(leaf, found.nu)


# --- critical batch size -------------------------------------------------------------------


class CriticalBatchFit(NamedTuple):
    """The fit of :math:`S(B) = S_{min} + E_{min}/B` (equivalently McCandlish's relation).

    Attributes:
      s_min: :math:`S_{min}`, the steps to target at infinite batch size.
      e_min: :math:`E_{min}`, the examples to target at batch size 1 (the limit B -> 0).
      b_crit: :math:`B_{crit} = E_{min} / S_{min}`.
      batch_sizes: the batch sizes that reached the target and were fitted.
      relative_rms_residual: root mean square of (fitted S / measured S - 1) over them.
    """

    s_min: float
    e_min: float
    b_crit: float
    batch_sizes: tuple[float, ...]
    relative_rms_residual: float


def fit_critical_batch(
    batch_sizes: Sequence[float], steps: Sequence[float | None]
) -> CriticalBatchFit:
    r"""Fits :math:`(S/S_{min} - 1)(E/E_{min} - 1) = 1`, :math:`E = B S`, to steps to target.

    The relation is the same as :math:`S(B) = S_{min} (1 + B_{crit}/B)`, i.e.
    :math:`S = S_{min} + E_{min} / B` with :math:`B_{crit} = E_{min}/S_{min}` (and
    :math:`E = E_{min}(1 + B/B_{crit})`): linear in :math:`1/B`. It is fitted by least
    squares on the relative error, :math:`\sum_i ((S_{min} + E_{min}/B_i)/S_i - 1)^2`, so a
    batch size needing 10,000 steps counts as much as one needing 100. Data that follow the
    relation exactly are recovered to rounding.

    Args:
      batch_sizes: the batch sizes tried (> 0, distinct).
      steps: steps to target for each; None, NaN or inf where the target was not reached
        (those batch sizes are left out).

    Returns:
      A `CriticalBatchFit`.

    Raises:
      ValueError: lengths differ, bad batch sizes or steps, fewer than three batch sizes
        reached the target, or the fit gives :math:`S_{min} \le 0` or :math:`E_{min} \le 0`
        (steps that do not fall with the batch size as the model says).

    Example:
      >>> sizes = [16, 64, 256, 1024]
      >>> fit = fit_critical_batch(sizes, [100 * (1 + 128 / b) for b in sizes])
      >>> round(fit.s_min, 6), round(fit.e_min, 6), round(fit.b_crit, 6)
      (100.0, 12800.0, 128.0)

    References:
      McCandlish et al., "An Empirical Model of Large-Batch Training", arXiv:1812.06162,
      Section 2.2 and Appendix D.
    """
    batch_sizes, steps = list(batch_sizes), list(steps)
    if len(batch_sizes) != len(steps):
        raise ValueError(
            f"batch_sizes and steps must have the same length, got {len(batch_sizes)} and "
            f"{len(steps)}"
        )
    sizes, reached = [], []
    for b, s in zip(batch_sizes, steps, strict=True):
        if isinstance(b, bool) or not isinstance(b, numbers.Real) or not math.isfinite(b):
            raise ValueError(f"batch_sizes must be positive numbers, got {b!r}")
        if b <= 0:
            raise ValueError(f"batch_sizes must be positive numbers, got {b!r}")
        if s is None or (isinstance(s, numbers.Real) and not math.isfinite(s)):
            continue  # target not reached
        if isinstance(s, bool) or not isinstance(s, numbers.Real) or s <= 0:
            raise ValueError(
                f"steps must be positive numbers (or None/inf/NaN for not reached), got {s!r} "
                f"for batch size {b}"
            )
        sizes.append(float(b))
        reached.append(float(s))
    if len(set(float(b) for b in batch_sizes)) != len(batch_sizes):
        raise ValueError(f"batch_sizes must be distinct, got {batch_sizes}")
    if len(sizes) < 3:
        raise ValueError(
            f"only {len(sizes)} of {len(batch_sizes)} batch sizes reached the target "
            f"(batch sizes {sizes}); the fit of S_min and E_min needs at least three. Train "
            "longer or lower the target"
        )
    b = np.asarray(sizes, np.float64)
    s = np.asarray(reached, np.float64)
    design = np.stack([1 / s, 1 / (b * s)], axis=1)  # (S_min + E_min / B) / S
    (s_min, e_min), *_ = np.linalg.lstsq(design, np.ones_like(s), rcond=None)
    if not (s_min > 0 and e_min > 0):
        raise ValueError(
            f"the steps do not follow S = S_min + E_min / B: the fit gives S_min={s_min:.4g}, "
            f"E_min={e_min:.4g} (both must be > 0) for batch sizes {sizes} and steps {reached}"
        )
    residual = float(np.sqrt(np.mean((design @ np.array([s_min, e_min]) - 1) ** 2)))
    return CriticalBatchFit(
        s_min=float(s_min),
        e_min=float(e_min),
        b_crit=float(e_min / s_min),
        batch_sizes=tuple(sizes),
        relative_rms_residual=residual,
    )


# --- per-layer update/param norm ratios ----------------------------------------------------


def update_param_ratios(
    updates: optax.Updates, params: Params, layer_axes: _masks.PerLeafSpec = None
) -> dict[str, jax.Array]:
    r"""Per-layer :math:`\|u_l\| / \|w_l\|`: the relative step size LARS and LAMB control.

    Args:
      updates: the updates applied (what `optax.apply_updates` adds to the params).
      params: the params the updates were computed at (before the update).
      layer_axes: per leaf, how many leading axes index stacked layers (as optlib's
        `layer_axes`, e.g. `optlib.masks.stacked_layers()`); each slice gets its own ratio.
        None: one ratio per leaf.

    Returns:
      A flat dict of float32 scalars keyed by the leaf's path ("Dense_0/kernel"), with the
      layer index appended for stacked leaves ("layers/kernel[3]"). Where
      :math:`\|w_l\| = 0` the ratio is 0 if the update is 0 too and inf otherwise.

    Example:
      >>> import jax.numpy as jnp
      >>> params = {"dense": {"kernel": jnp.ones((2, 2))}, "stack": jnp.ones((3, 4))}
      >>> updates = {"dense": {"kernel": 0.1 * jnp.ones((2, 2))}, "stack": jnp.ones((3, 4))}
      >>> ratios = update_param_ratios(updates, params, layer_axes={"dense": 0, "stack": 1})
      >>> {k: round(float(v), 3) for k, v in ratios.items()}
      {'dense/kernel': 0.1, 'stack[0]': 1.0, 'stack[1]': 1.0, 'stack[2]': 1.0}
    """
    axes = _masks.resolve_layer_axes(layer_axes, params, "layer_axes")
    path_leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    try:
        update_leaves = treedef.flatten_up_to(updates)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"updates must have the params' structure {treedef}, got {jax.tree.structure(updates)}"
        ) from error
    ratios = {}
    for (path, w), u, num_axes in zip(path_leaves, update_leaves, axes, strict=True):
        if np.shape(u) != np.shape(w):
            raise ValueError(
                f"update of shape {np.shape(u)} for the param {_masks._path_string(path)} of "
                f"shape {np.shape(w)}"
            )
        reduce = tuple(range(num_axes, np.ndim(w)))
        w_norm = jnp.sqrt(jnp.sum(jnp.square(w.astype(jnp.float32)), axis=reduce))
        u_norm = jnp.sqrt(jnp.sum(jnp.square(u.astype(jnp.float32)), axis=reduce))
        ratio = jnp.where(
            w_norm > 0,
            u_norm / jnp.where(w_norm > 0, w_norm, 1),
            jnp.where(u_norm > 0, jnp.inf, 0.0),
        )
        name = _masks._path_string(path)
        if num_axes == 0:
            ratios[name] = ratio
        else:
            for index in np.ndindex(*ratio.shape):
                ratios[f"{name}[{','.join(map(str, index))}]"] = ratio[index]
    return ratios
