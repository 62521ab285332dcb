"""TVLARS: LARS with a time-varying trust-ratio factor instead of warm-up (Do et al., 2023)."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from optlib import _layerwise, _masks, _numerics, _validation

# The public repository (KhoiDOO/tvlars, opt/tvlars.py) hard-codes these.
REPO_ALPHA = 0.1
REPO_NORM_CLIP = 10.0


class ScaleByTvlarsState(NamedTuple):
    """State of `scale_by_tvlars`: the number of updates applied so far."""

    count: jax.Array  # int32 scalar


def tvlars_factor(
    step: ArrayLike,
    alpha: ArrayLike,
    decay_rate: ArrayLike,
    delay_steps: ArrayLike,
    min_factor: ArrayLike,
) -> jax.Array:
    r"""The time-varying factor :math:`\phi(t) = 1/(\alpha + e^{\lambda (t - d_e)}) + \gamma_{min}`.

    `step` is the 1-based step number :math:`t` (the first update has t = 1), as in the
    reference repository, which evaluates the factor at `step_cnt + 1`.
    """
    step = jnp.asarray(step)
    if not jnp.issubdtype(step.dtype, jnp.floating):
        step = step.astype(jnp.result_type(float))
    return 1.0 / (alpha + jnp.exp(decay_rate * (step - delay_steps))) + min_factor


def _repo_scaled_coefficient(count, decay_rate, trust_coefficient):
    """`eta / (0.1 + exp(lmbda * t))` rounded as the repository computes it, in float32.

    The repository builds the step as `torch.FloatTensor([step])`, so every operation of the
    factor runs in float32. Its exp is correctly rounded (glibc `expf`); XLA's float32 exp can
    be one ulp off, so the exponential is taken in the widest enabled float and then rounded.
    """
    f32 = jnp.float32
    wide = jnp.result_type(float)
    exponent = f32(decay_rate) * count.astype(f32)
    exp = jnp.exp(exponent.astype(wide)).astype(f32)
    factor = f32(1.0) / (f32(REPO_ALPHA) + exp)
    return f32(trust_coefficient) * factor


def scale_by_tvlars(
    weight_decay: ArrayLike = 5e-4,
    trust_coefficient: ArrayLike = 1e-3,
    eps: ArrayLike = 0.0,
    alpha: ArrayLike = REPO_ALPHA,
    decay_rate: ArrayLike = 1e-3,
    delay_steps: ArrayLike = 0.0,
    min_factor: ArrayLike = 0.0,
    denominator: str = "paper",
    norm_clip: ArrayLike | None = None,
    repo_compat: bool = False,
    weight_decay_mask: _masks.PerLeafSpec = None,
    adaptation_mask: _masks.PerLeafSpec = None,
    layer_axes: _masks.PerLeafSpec = None,
) -> optax.GradientTransformation:
    r"""Scales the weight-decayed gradient by TVLARS' time-varying layer-wise trust ratio.

    At the 1-based step :math:`t`, for each layer :math:`l`:

    .. math::
        \phi(t) = \frac{1}{\alpha + e^{\lambda (t - d_e)}} + \gamma_{min}, \qquad
        u_l = \phi(t)\,\frac{\eta \|w_l\|}{D_l + \epsilon}\,(g_l + \beta w_l)

    with :math:`D_l` as in `optlib.scale_by_lars`. While :math:`t \ll d_e` the factor sits
    near :math:`1/\alpha + \gamma_{min}` (a high, exploratory rate instead of a warm-up); it
    then decays to the floor :math:`\gamma_{min}`.

    `repo_compat=True` reproduces the public reference repository instead of the paper's
    formula: :math:`\alpha = 0.1`, :math:`d_e = 0`, :math:`\gamma_{min} = 0`, the "combined"
    denominator :math:`\|g + \beta w\|`, and both norms clipped to at most 10 before the ratio.
    The knobs it fixes must then be left at their defaults.

    The defaults of `alpha`, `decay_rate`, `delay_steps` and `min_factor` are the repository's
    values; the paper's recommended settings could not be checked (ALGORITHMS.md §3), so tune
    them for your run.


    Complex params are supported as in `optlib.scale_by_lars`.
    Args:
      weight_decay: coupled weight decay :math:`\beta`, >= 0, or a schedule of the step
        count (0-based).
      trust_coefficient: :math:`\eta > 0`.
      eps: added to the denominator, >= 0.
      alpha: plateau parameter :math:`\alpha > 0`.
      decay_rate: :math:`\lambda \ge 0`, how fast the factor decays.
      delay_steps: :math:`d_e \ge 0`, steps before the decay sets in.
      min_factor: the floor :math:`\gamma_{min} \ge 0`.
      denominator: "paper" or "combined" (see `optlib.scale_by_lars`).
      norm_clip: optional upper bound on both norms before the ratio (the repository uses 10).
      repo_compat: match the reference repository (see above).
      weight_decay_mask, adaptation_mask, layer_axes: see `optlib.scale_by_lars`.

    Returns:
      A `GradientTransformation` whose state is a `ScaleByTvlarsState`.

    References:
      Do et al., "Revisiting LARS for Large Batch Training Generalization of Neural
      Networks", arXiv:2309.14053, 2023.
    """
    _layerwise.check_lars_args(weight_decay, trust_coefficient, eps, denominator)
    _validation.check_range("alpha", alpha, 0.0, None, low_open=True)
    _validation.check_non_negative("decay_rate", decay_rate)
    _validation.check_non_negative("delay_steps", delay_steps)
    _validation.check_non_negative("min_factor", min_factor)
    if norm_clip is not None:
        _validation.check_range("norm_clip", norm_clip, 0.0, None, low_open=True)
    if repo_compat:
        fixed = {
            "alpha": (alpha, REPO_ALPHA),
            "delay_steps": (delay_steps, 0.0),
            "min_factor": (min_factor, 0.0),
        }
        for name, (value, repo_value) in fixed.items():
            number = _validation.concrete_scalar(value)
            # inject_hyperparams hands the value back as a float32 array: compare loosely.
            if number is None or abs(number - repo_value) > 1e-6 * max(1.0, abs(repo_value)):
                raise ValueError(
                    f"repo_compat=True fixes {name}={repo_value} (the repository hard-codes it); "
                    f"got {name}={value!r}. Use repo_compat=False to set it."
                )
        denominator = "combined"
        norm_clip = REPO_NORM_CLIP if norm_clip is None else norm_clip

    def init_fn(params):
        _layerwise.resolve_lars_specs(weight_decay_mask, adaptation_mask, layer_axes, params)
        return ScaleByTvlarsState(count=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        _numerics.require_params(params, "scale_by_tvlars")
        flags = _layerwise.resolve_lars_specs(
            weight_decay_mask, adaptation_mask, layer_axes, params
        )
        count = optax.safe_increment(state.count)
        if repo_compat:
            # The repository evaluates the factor, and its product with eta, in float32
            # (`torch.FloatTensor([step])`) before multiplying by float64 norms.
            scaled_coefficient = _repo_scaled_coefficient(count, decay_rate, trust_coefficient)
        else:
            factor = tvlars_factor(count, alpha, decay_rate, delay_steps, min_factor)
            scaled_coefficient = trust_coefficient * factor
        out = _layerwise.lars_updates(
            updates,
            params,
            flags,
            weight_decay=_numerics.value_at(weight_decay, state.count),
            trust_coefficient=scaled_coefficient,
            eps=eps,
            denominator=denominator,
            norm_clip=norm_clip,
        )
        return out, ScaleByTvlarsState(count)

    return optax.GradientTransformation(init_fn, update_fn)


def tvlars(
    learning_rate: optax.ScalarOrSchedule,
    *,
    momentum: ArrayLike = 0.9,
    weight_decay: ArrayLike = 5e-4,
    trust_coefficient: ArrayLike = 1e-3,
    eps: ArrayLike = 0.0,
    alpha: ArrayLike = REPO_ALPHA,
    decay_rate: ArrayLike = 1e-3,
    delay_steps: ArrayLike = 0.0,
    min_factor: ArrayLike = 0.0,
    nesterov: bool = False,
    denominator: str = "paper",
    norm_clip: ArrayLike | None = None,
    repo_compat: bool = False,
    weight_decay_mask: _masks.PerLeafSpec = None,
    adaptation_mask: _masks.PerLeafSpec = None,
    layer_axes: _masks.PerLeafSpec = None,
    moment_dtype: Any = None,
) -> optax.GradientTransformation:
    r"""TVLARS: LARS momentum SGD whose trust ratio is scaled by a decaying factor.

    :math:`v \leftarrow m v + \gamma_t u`, :math:`w \leftarrow w - v`, with :math:`u` from
    `scale_by_tvlars`; used without a warm-up schedule.

    Args:
      learning_rate: a float >= 0 or a schedule (the target rate :math:`\gamma`).
      momentum: momentum :math:`m` in [0, 1).
      nesterov: use Nesterov momentum.
      moment_dtype: dtype of the momentum buffer (see `optlib.lars`).
      Other arguments: see `scale_by_tvlars` (`weight_decay` may be a schedule of the step).

    Example:
      >>> import jax, jax.numpy as jnp, optax, optlib
      >>> params = {"w": jnp.ones((3, 2))}
      >>> opt = optlib.tvlars(1.0, trust_coefficient=0.02, decay_rate=0.1, repo_compat=True)
      >>> state = opt.init(params)
      >>> updates, state = opt.update(jax.tree.map(jnp.ones_like, params), state, params)

    References:
      Do et al., "Revisiting LARS for Large Batch Training Generalization of Neural
      Networks", arXiv:2309.14053, 2023.
    """
    _validation.check_learning_rate(learning_rate)
    _validation.check_beta("momentum", momentum)
    _validation.check_float_dtype("moment_dtype", moment_dtype)
    return optax.chain(
        scale_by_tvlars(
            weight_decay=weight_decay,
            trust_coefficient=trust_coefficient,
            eps=eps,
            alpha=alpha,
            decay_rate=decay_rate,
            delay_steps=delay_steps,
            min_factor=min_factor,
            denominator=denominator,
            norm_clip=norm_clip,
            repo_compat=repo_compat,
            weight_decay_mask=weight_decay_mask,
            adaptation_mask=adaptation_mask,
            layer_axes=layer_axes,
        ),
        optax.scale_by_learning_rate(learning_rate),
        _layerwise.momentum(momentum, nesterov, moment_dtype),
    )
