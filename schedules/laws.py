"""Loss as a function of the learning-rate schedule: two published laws, their fits, optima.

Conventions: `lrs[k]` is the learning rate of update k (0-based), so `lrs[k] == schedule(k)`. A
loss recorded at step s (s >= 1) is the loss after s updates, so it depends on `lrs[:s]`.
With `P[s] = sum(lrs[:s])` (the forward area, `S1`) and the drops `d_k = lrs[k-1] - lrs[k]`:

* Annealing law (Tissue et al.): `L(s) = L0 + A * S1(s)^(-alpha) - C * S2(s)`, where S2 is the
  annealing area in momentum form: `m_0 = 0`, `m_k = decay * m_{k-1} + d_k`, `S2(s) =
  sum_{k < s} m_k` (see `annealing_areas`).
* Multi-power law (Luo et al.): `L(s) = L0 + A * (S1(s) + S_W)^(-alpha) - LD(s)`, with
  `LD(s) = B * sum_{k=1}^{s-1} d_k * G(lrs[k]^(-gamma) * S_k(s))`, `S_k(s) = sum_{t=k}^{s-1}
  lrs[t]` (the area from update k on, k included) and `G(x) = 1 - (C x + 1)^(-beta)`. In the
  authors' code S1 + S_W is simply the area of every rate from step 0, warm-up included, and LD
  sums the rate changes from k = 1, so the rising warm-up adds negative drops; both are so here.
  (The authors' arrays count the rate of the recorded step too, one more term than here: a
  one-step shift, invisible at their precision.)

Fitting follows the authors: a Huber loss (delta 1e-3) on `log(loss) - log(prediction)`, summed
over every recorded point of every curve, minimised by L-BFGS-B (a bounded quasi-Newton method,
every parameter >= 0) from a grid of starting points, keeping the best converged optimum
(the multi-power law's second stage excepted by default, see below).

* "annealing": Tissue et al.'s 54-point grid, L0 in {0.1, 2.1}, A in {1, 11.5, 22},
  C in {1, 11.5, 22}, alpha in {0, 0.4, 0.8}.
* "multipower": the authors' two stages. Stage 1 fits `L0 + A S1^(-alpha) - B (peak - lrs[s-1])`
  from a 135-point grid built from the data (L0 within 0.2 of the lowest loss, A and alpha
  within 0.1 of a log-log regression of `loss - min + 0.01` on S1, B in {100, 550, 1000} x
  3e-4 / peak). Stage 2 starts all seven parameters from the best stage-1 point with C = 1,
  beta = gamma = 1/2 and, by default (`stage2="adamw"`), runs the authors' stage 2: at most
  200 AdamW steps with their early stop, keeping the best point seen. `stage2="lbfgsb"` runs
  L-BFGS-B to convergence instead, an optimum of the stated objective.

  The default departs from "a bounded quasi-Newton method" for stage 2 on purpose: the early
  stop predicts held-out curves better. Fitted on the authors' training set (cosine_24000,
  constant_24000, wsdcon_9; every point, the default grid, `block=16`) and predicting their
  other six curves, mean relative error, adamw against lbfgsb: 25M 0.095% vs 0.138% (the
  authors report 0.110%); 100M 0.133% vs 0.165% (authors 0.142%); 400M 0.202% vs 0.216%, the
  authors' 0.168% not reproduced (their published 400M parameters give 0.168% with this code;
  the early stop lands near them but not at them). The converged fit reaches about half the
  training objective: with two or three training curves the seven parameters are loosely
  determined, and stopping early acts as a regulariser. The annealing law has four parameters
  and is fitted by L-BFGS-B to convergence.

The objectives and their gradients are written out in NumPy float64 (no compilation per data
shape); scipy's L-BFGS-B drives the search, in parameters scaled to their typical size over the
grid and with the objective in units of delta^2. A fit in which no start converges raises
`FitError`; it never returns a last iterate silently.

References:
  Tissue, Wang, Wang, Chen, Luo, Zhou, Sun 2024, "Scaling Law with Learning Rate Annealing"
  (arXiv 2408.11029).
  Luo, Wen, Hu, Wang, Lyu, Li, Yin 2025, "A Multi-Power Law for Loss Curve Prediction Across
  Learning Rate Schedules" (ICLR 2025, arXiv 2503.12811); definitions and fitting procedure from
  the authors' repository thu-yao-01-luo/MultiPowerLaw.
"""

import dataclasses
import functools
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from schedules._common import _as_step, _float_dtype
from schedules._validation import check_array

KINDS = ("annealing", "multipower")
PARAM_NAMES = {
    "annealing": ("L0", "A", "alpha", "C"),
    "multipower": ("L0", "A", "alpha", "B", "C", "beta", "gamma"),
}
HUBER_DELTA = 1e-3
# Tissue et al.'s grid of starting points (their public fitting script): 2 x 3 x 3 x 3 = 54.
ANNEALING_GRID = {
    "L0": (0.1, 2.1),
    "A": (1.0, 11.5, 22.0),
    "C": (1.0, 11.5, 22.0),
    "alpha": (0.0, 0.4, 0.8),
}
# The multi-power authors' stage-2 start for the parameters stage 1 does not fit.
MULTIPOWER_STAGE2 = {"C": (1.0,), "beta": (0.5,), "gamma": (0.5,)}
_AUTHORS_PEAK = 3e-4  # the peak rate the multi-power authors' stage-1 B grid was written for
_MASKED = -1.0e4  # log-area of (eval step, drop) pairs that do not count: exp() gives exactly 0
_STAGE2 = ("lbfgsb", "adamw")
_ENTRY_BUDGET = 1 << 23  # (eval point, drop group) pairs held at once by a multi-power fit
_PREDICT_CHUNK = 1 << 22  # ... and by a prediction, per chunk of rows


class FitError(RuntimeError):
    """A fit in which no starting point converged."""


# ----------------------------------------------------------------------------------------
# Areas
# ----------------------------------------------------------------------------------------


def annealing_areas(lrs, decay: float = 0.999) -> tuple[jax.Array, jax.Array]:
    """The forward area S1 and the annealing area S2 of a schedule, as running sums.

    `S1[s-1] = sum(lrs[:s])`. S2 is the annealing area in its momentum form: `m_0 = 0`,
    `m_k = decay * m_{k-1} + (lrs[k-1] - lrs[k])`, `S2[s-1] = sum(m[:s])`. Both are O(T): S1 a
    running sum, m a first-order linear filter, all in one `lax.scan`.

    Args:
      lrs: the rate of each update, a 1-D array of T >= 1 finite values >= 0.
      decay: lambda in [0, 1); Tissue et al. use 0.999.

    Returns:
      `(S1, S2)`, two arrays of length T in the default float dtype (float64 under x64). The
      loss after s updates uses entry s - 1 of each.

    Example:
      >>> from schedules import laws
      >>> s1, s2 = laws.annealing_areas([1.0, 1.0, 0.5, 0.5], decay=0.5)
      >>> s1.tolist(), s2.tolist()
      ([1.0, 2.0, 2.5, 3.0], [0.0, 0.0, 0.5, 0.75])

    References:
      Tissue et al. 2024, "Scaling Law with Learning Rate Annealing" (arXiv 2408.11029), Eq. 3.
    """
    where = "annealing_areas"
    if not isinstance(lrs, jax.core.Tracer):
        _check_lrs(where, "`lrs`", lrs)
    decay = _check_decay(where, decay)
    return _areas_jit(jnp.asarray(lrs, _float_dtype()), decay)


def _areas(lrs: jax.Array, decay: float) -> tuple[jax.Array, jax.Array]:
    drops = jnp.concatenate([jnp.zeros((1,), lrs.dtype), lrs[:-1] - lrs[1:]])

    def step(carry, x):  # one pass: S1 += lr, m = decay m + d, S2 += m
        s1, m, s2 = carry
        lr, d = x
        m = decay * m + d
        carry = (s1 + lr, m, s2 + m)
        return carry, (carry[0], carry[2])

    zero = jnp.zeros((), lrs.dtype)
    _, (s1, s2) = jax.lax.scan(step, (zero, zero, zero), (lrs, drops))
    return s1, s2


_areas_jit = jax.jit(_areas, static_argnums=1)


# ----------------------------------------------------------------------------------------
# Laws
# ----------------------------------------------------------------------------------------


class FitInfo(NamedTuple):
    """How a law was fitted.

    Attributes:
      curves: the names of the fitted curves.
      curve_errors: mean relative error |prediction - loss| / loss on each fitted curve.
      objective: the summed Huber loss at the optimum.
      starts: the number of starting points tried (of the last stage).
      converged: how many of them converged.
      iterations: L-BFGS-B iterations of the kept start.
      message: scipy's message for the kept start.
      block: multi-power only: the drop-group size used (1 = exact sums).
      start: the starting point of the kept start (of the last stage), by parameter name.
    """

    curves: tuple[str, ...]
    curve_errors: tuple[float, ...]
    objective: float
    starts: int
    converged: int
    iterations: int
    message: str
    block: int | None = None
    start: dict[str, float] | None = None


class _Law:
    """Shared behaviour of the fitted laws (frozen dataclasses)."""

    kind: str
    warmup_as_peak: bool
    fit_info: FitInfo | None

    @property
    def params(self) -> dict[str, float]:
        """The law's parameters by name."""
        return {name: float(getattr(self, name)) for name in PARAM_NAMES[self.kind]}

    @property
    def fit_error(self) -> float | None:
        """Mean over the fitted curves of each curve's mean relative error; None if not fitted."""
        if self.fit_info is None:
            return None
        return float(np.mean(self.fit_info.curve_errors))

    def predict(self, lrs, steps) -> np.ndarray:
        """Predicted losses after `steps` updates of the schedule `lrs` (float64 NumPy).

        Args:
          lrs: the rate of each update, 1-D, finite, >= 0, at least `max(steps)` long.
          steps: strictly increasing integers in [1, len(lrs)].

        Returns:
          A float64 array, one prediction per step.
        """
        curve = _check_curve(f"{self.kind}.predict", "curve", lrs, steps, None)
        return self._predict(curve)

    def errors(self, curves) -> dict[str, float]:
        """Mean relative error |prediction - loss| / loss of each curve, by curve name.

        Args:
          curves: as for `fit`: a sequence of `(lrs, steps, losses)` or a mapping name -> one.

        Returns:
          A dict from curve name ("curves[i]" for a sequence) to its mean relative error.
        """
        checked = _check_curves(f"{self.kind}.errors", curves)
        return {c.name: _relative_error(self._predict(c), c.losses) for c in checked}

    def final_loss(self, lrs) -> jax.Array:
        """The law's loss after `len(lrs)` updates, as a differentiable JAX function of `lrs`.

        O(T) closed forms, computed in the dtype of `lrs` (float64 under x64 for a fit's
        precision); equal to `predict(lrs, [len(lrs)])`. Used by `optimal_schedule`.
        """
        return _final_loss_of(self, lrs)

    def _effective(self, lrs):
        return _warmup_at_peak(lrs) if self.warmup_as_peak else lrs

    def _predict(self, curve: "_Curve") -> np.ndarray:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class AnnealingLaw(_Law):
    """Tissue et al.'s law, `L(s) = L0 + A * S1(s)^(-alpha) - C * S2(s)`.

    S1, S2 are the areas of `annealing_areas(lrs, decay)`; with `warmup_as_peak` the rates
    before the schedule first reaches its maximum count as that maximum (Tissue et al.'s
    convention). Build one from known parameters, or get one from `fit("annealing", ...)`.

    Example:
      >>> import numpy as np
      >>> from schedules import laws
      >>> law = laws.AnnealingLaw(L0=2.0, A=1.0, alpha=0.5, C=1.0, decay=0.9)
      >>> lrs = np.r_[np.full(50, 0.1), np.full(50, 0.01)]
      >>> law.predict(lrs, [50, 100]).round(4).tolist()
      [2.4472, 1.531]

    References:
      Tissue et al. 2024, "Scaling Law with Learning Rate Annealing" (arXiv 2408.11029).
    """

    L0: float
    A: float
    alpha: float
    C: float
    decay: float = 0.999
    warmup_as_peak: bool = False
    fit_info: FitInfo | None = None
    kind: str = dataclasses.field(default="annealing", init=False)

    def __post_init__(self):
        _check_params("AnnealingLaw", self)
        object.__setattr__(self, "decay", _check_decay("AnnealingLaw", self.decay))

    def _predict(self, curve):
        s1, s2 = _annealing_features(self._effective(curve.lrs), curve.steps, self.decay)
        p = np.array([self.L0, self.A, self.alpha, self.C])
        return _annealing_pred(p, s1, s2)


@dataclasses.dataclass(frozen=True)
class MultiPowerLaw(_Law):
    """Luo et al.'s multi-power law, `L(s) = L0 + A (S1 + S_W)^(-alpha) - LD(s)`.

    `LD(s) = B sum_{k=1}^{s-1} (lrs[k-1] - lrs[k]) G(lrs[k]^(-gamma) S_k(s))`, `G(x) = 1 -
    (C x + 1)^(-beta)`, `S_k(s) = sum(lrs[k:s])`; see the module docstring. Predictions use the
    exact sums (in chunks); a fit may group drops (`block`).

    Example:
      >>> import numpy as np
      >>> from schedules import laws
      >>> law = laws.MultiPowerLaw(L0=2.0, A=1.0, alpha=0.5, B=5.0, C=2.0, beta=0.5, gamma=0.5)
      >>> lrs = np.r_[np.full(50, 0.1), np.full(50, 0.01)]
      >>> law.predict(lrs, [50, 100]).round(4).tolist()
      [2.4472, 2.1121]

    References:
      Luo et al. 2025, "A Multi-Power Law for Loss Curve Prediction Across Learning Rate
      Schedules" (arXiv 2503.12811).
    """

    L0: float
    A: float
    alpha: float
    B: float
    C: float
    beta: float
    gamma: float
    warmup_as_peak: bool = False
    fit_info: FitInfo | None = None
    kind: str = dataclasses.field(default="multipower", init=False)

    def __post_init__(self):
        _check_params("MultiPowerLaw", self)

    def _predict(self, curve):
        lrs = self._effective(curve.lrs)
        p = np.array([getattr(self, n) for n in PARAM_NAMES["multipower"]])
        steps = curve.steps
        rows = max(1, _PREDICT_CHUNK // max(1, int(steps[-1])))
        out = []
        for lo in range(0, len(steps), rows):
            feats = _multipower_features(lrs, steps[lo : lo + rows], block=1)
            out.append(_multipower_pred(p, feats))
        return np.concatenate(out)


def _final_loss_of(law: _Law, lrs) -> jax.Array:
    lrs = jnp.asarray(lrs)
    if not jnp.issubdtype(lrs.dtype, jnp.floating):
        lrs = lrs.astype(_float_dtype())
    params = jnp.asarray([getattr(law, n) for n in PARAM_NAMES[law.kind]], lrs.dtype)
    decay = getattr(law, "decay", 0.0)
    return _final_loss_jit(law.kind, decay, law.warmup_as_peak, params, lrs)


def _final_loss(kind: str, decay: float, warmup_as_peak: bool, params, lrs):
    """The law's loss after len(lrs) updates: O(T) closed forms, differentiable in lrs."""
    if warmup_as_peak:
        lrs = _warmup_at_peak_jax(lrs)
    total = jnp.sum(lrs)
    drops = lrs[:-1] - lrs[1:]  # d_k for k = 1..T-1
    if kind == "annealing":
        L0, A, alpha, C = (params[i] for i in range(4))
        # S2(T) = sum_k d_k (1 - decay^(T-k)) / (1 - decay)
        left = jnp.arange(lrs.shape[0] - 1, 0, -1).astype(lrs.dtype)  # T - k
        s2 = jnp.sum(drops * (1.0 - jnp.power(decay, left)) / (1.0 - decay))
        return L0 + A * total ** (-alpha) - C * s2
    L0, A, alpha, B, C, beta, gamma = (params[i] for i in range(7))
    tiny = jnp.finfo(lrs.dtype).tiny
    s_k = jnp.maximum(total - jnp.cumsum(lrs)[:-1], tiny)  # S_k(T) = sum(lrs[k:]), k >= 1
    x = jnp.exp(jnp.log(s_k) - gamma * jnp.log(jnp.maximum(lrs[1:], tiny)))
    g = -jnp.expm1(-beta * jnp.log1p(C * x))
    return L0 + A * total ** (-alpha) - B * jnp.sum(drops * g)


_final_loss_jit = jax.jit(_final_loss, static_argnums=(0, 1, 2))


def law(kind: str, warmup_as_peak: bool = False, **params: float) -> _Law:
    """A law of `kind` ("annealing" or "multipower") from known parameters.

    Example:
      >>> from schedules import laws
      >>> laws.law("annealing", L0=3.0, A=0.5, alpha=0.5, C=1.0).params["C"]
      1.0
    """
    kind = _check_kind("law", kind)
    cls = AnnealingLaw if kind == "annealing" else MultiPowerLaw
    return cls(warmup_as_peak=warmup_as_peak, **params)


# ----------------------------------------------------------------------------------------
# Fitting
# ----------------------------------------------------------------------------------------


def fit(
    kind: str,
    curves,
    *,
    decay: float | None = None,
    warmup_as_peak: bool = False,
    grid: Mapping[str, Sequence[float]] | Sequence[Mapping[str, float]] | None = None,
    huber_delta: float = HUBER_DELTA,
    maxiter: int = 20_000,
    block: int | None = None,
    stage2: str | None = None,
) -> _Law:
    """Fits a loss law to recorded loss curves, the way its authors do.

    Minimises `sum huber_delta(log(loss) - log(prediction))` over every point of every curve with
    L-BFGS-B (all parameters >= 0) from each starting point of a grid, and keeps the best
    converged optimum. See the module docstring for each law's grid and stages.

    Args:
      kind: "annealing" or "multipower".
      curves: a sequence of `(lrs, steps, losses)`, or a mapping from a name to one. `lrs` is the
        rate of every update from step 0 (at least `max(steps)` long); `steps` strictly
        increasing integers >= 1; `losses` finite and > 0, one per step.
      decay: annealing only: lambda in [0, 1), default 0.999.
      warmup_as_peak: count the rates before each schedule first reaches its maximum as that
        maximum (Tissue et al.'s convention). The default uses the true rates.
      grid: starting points: a mapping from parameter name to values (their product is the
        grid; names not given keep the default grid's values), or a sequence of mappings, one
        full starting point each. For "multipower" a mapping or a sequence of four-parameter
        points replaces the stage-1 grid (L0, A, alpha, B; C, beta, gamma in a mapping set the
        stage-2 starts), and a sequence of seven-parameter points gives the stage-2 starts
        directly (no stage 1).
      huber_delta: delta of the Huber loss, > 0.
      maxiter: L-BFGS-B iteration limit per start.
      block: multipower only: group the rate changes of up to `block` consecutive updates into
        one term (a midpoint rule, weighted by the drops; a single drop stays exact). 1 is the
        exact sum; None picks 1 unless the (points x changes) table would exceed 2^23 entries,
        then the smallest power of two that fits.
      stage2: multipower only: "adamw" (None means "adamw", the default) is the authors' stage 2
        as published: float64 AdamW (weight decay 0.01, rate 5e-2 for L0, A, B, C and 5e-3 for
        alpha, beta, gamma), at most 200 steps, stopping after 20 without improvement, keeping
        the best point seen. It stops early by design, so it is not an optimum;
        `fit_info.message` says where it stopped. It predicts held-out curves better than the
        optimum (numbers in the module docstring). "lbfgsb" runs stage 2 to an optimum.

    Returns:
      An `AnnealingLaw` or `MultiPowerLaw` with `.params`, `.predict(lrs, steps)`, `.fit_error`
      (the mean over the fitted curves of each curve's mean relative error) and `.fit_info`.

    Raises:
      ValueError: bad curves or options; the message names the curve and the problem.
      FitError: no starting point converged (L-BFGS-B stages), or AdamW found no finite
        objective.

    Example:
      >>> import numpy as np
      >>> from schedules import laws
      >>> truth = laws.AnnealingLaw(L0=2.0, A=1.0, alpha=0.5, C=0.1, decay=0.99)
      >>> lrs = np.r_[np.full(300, 0.1), np.linspace(0.1, 0.01, 300)]
      >>> steps = np.arange(10, 601, 10)
      >>> curves = {"run": (lrs, steps, truth.predict(lrs, steps))}
      >>> start = {"L0": [1.0], "A": [1.0], "C": [1.0], "alpha": [0.4]}
      >>> fitted = laws.fit("annealing", curves, decay=0.99, grid=start)
      >>> {k: round(v, 3) for k, v in fitted.params.items()}
      {'L0': 2.0, 'A': 1.0, 'alpha': 0.5, 'C': 0.1}

    References:
      Tissue et al. 2024 (arXiv 2408.11029); Luo et al. 2025 (arXiv 2503.12811) and their
      repository thu-yao-01-luo/MultiPowerLaw.
    """
    where = "fit"
    kind = _check_kind(where, kind)
    checked = _check_curves(where, curves)
    if not isinstance(warmup_as_peak, bool):
        raise ValueError(f"{where}: `warmup_as_peak` must be True or False, got {warmup_as_peak!r}")
    huber_delta = _check_positive(where, "huber_delta", huber_delta)
    if isinstance(maxiter, bool) or not isinstance(maxiter, numbers.Integral) or maxiter < 1:
        raise ValueError(f"{where}: `maxiter` must be an integer >= 1, got {maxiter!r}")
    names = PARAM_NAMES[kind]
    n_points = sum(len(c.steps) for c in checked)
    if n_points < len(names):
        counts = ", ".join(f"{c.name}: {len(c.steps)}" for c in checked)
        raise ValueError(
            f"{where}: the {kind} law has {len(names)} parameters but the curves hold only "
            f"{n_points} points ({counts}); give at least {len(names)}"
        )
    if warmup_as_peak:
        checked = [c._replace(lrs=_warmup_at_peak(c.lrs)) for c in checked]
    _check_positive_areas(where, checked)
    if kind == "annealing":
        if block is not None:
            raise ValueError(f"{where}: `block` applies to kind='multipower' only, got {block!r}")
        if stage2 is not None:
            raise ValueError(f"{where}: `stage2` applies to kind='multipower' only, got {stage2!r}")
        decay = 0.999 if decay is None else _check_decay(where, decay)
        return _fit_annealing(checked, decay, warmup_as_peak, grid, huber_delta, int(maxiter))
    if decay is not None:
        raise ValueError(
            f"{where}: `decay` applies to kind='annealing' only (the multi-power law has none), "
            f"got {decay!r}"
        )
    stage2 = "adamw" if stage2 is None else stage2
    if stage2 not in _STAGE2:
        raise ValueError(
            f"{where}: `stage2` must be one of {', '.join(map(repr, _STAGE2))}, got {stage2!r}"
        )
    if block is not None and (
        isinstance(block, bool) or not isinstance(block, numbers.Integral) or block < 1
    ):
        raise ValueError(f"{where}: `block` must be None or an integer >= 1, got {block!r}")
    return _fit_multipower(checked, warmup_as_peak, grid, huber_delta, int(maxiter), block, stage2)


def _fit_annealing(curves, decay, warmup_as_peak, grid, delta, maxiter):
    names = PARAM_NAMES["annealing"]
    starts = _grid_points("fit", grid, ANNEALING_GRID, names)
    feats = [_annealing_features(c.lrs, c.steps, decay) for c in curves]
    data = [(s1, s2, np.log(c.losses)) for (s1, s2), c in zip(feats, curves, strict=True)]
    best, info = _minimize(_annealing_value_grad, data, starts, delta, maxiter)
    fitted = AnnealingLaw(
        **dict(zip(names, best, strict=True)), decay=decay, warmup_as_peak=warmup_as_peak
    )
    errors = tuple(
        _relative_error(_annealing_pred(best, s1, s2), c.losses)
        for (s1, s2), c in zip(feats, curves, strict=True)
    )
    info = info._replace(
        curves=tuple(c.name for c in curves),
        curve_errors=errors,
        start=dict(zip(names, info.start, strict=True)),
    )
    return dataclasses.replace(fitted, fit_info=info)


def _fit_multipower(curves, warmup_as_peak, grid, delta, maxiter, block, stage2):
    names = PARAM_NAMES["multipower"]
    full = (
        not isinstance(grid, Mapping)
        and grid is not None
        and len(grid) > 0
        and all(isinstance(g, Mapping) and set(g) == set(names) for g in grid)
    )
    if full:  # complete starting points: stage 2 only
        starts2 = _grid_points("fit", grid, {}, names)
    else:
        # Stage 1: the authors' surrogate, with the grid built from the data.
        peak = max(float(c.lrs.max()) for c in curves)
        log_s1 = [np.log(_forward_area(c.lrs, c.steps)) for c in curves]
        stage2_default = dict(MULTIPOWER_STAGE2)
        if isinstance(grid, Mapping):
            grid = dict(grid)
            for name in ("C", "beta", "gamma"):
                if name in grid:
                    stage2_default[name] = grid.pop(name)
        starts1 = _grid_points("fit", grid, _stage1_grid(curves, log_s1, peak), names[:4])
        data1 = [
            (a, peak - c.lrs[c.steps - 1], np.log(c.losses))
            for a, c in zip(log_s1, curves, strict=True)
        ]
        best1, _ = _minimize(_surrogate_value_grad, data1, starts1, delta, maxiter)
        # Stage 2: all seven parameters from the best stage-1 point.
        rest = _grid_points("fit", stage2_default, stage2_default, ("C", "beta", "gamma"))
        starts2 = np.array([np.r_[best1, r] for r in rest])
    block = _choose_block(curves, block)
    feats = [_multipower_features(c.lrs, c.steps, block) for c in curves]
    data2 = [(f, np.log(c.losses)) for f, c in zip(feats, curves, strict=True)]
    if stage2 == "adamw":
        best, info = _adamw(_multipower_value_grad, data2, starts2, delta)
    else:
        best, info = _minimize(_multipower_value_grad, data2, starts2, delta, maxiter)
    fitted = MultiPowerLaw(**dict(zip(names, best, strict=True)), warmup_as_peak=warmup_as_peak)
    errors = tuple(
        _relative_error(_multipower_pred(best, f), c.losses)
        for f, c in zip(feats, curves, strict=True)
    )
    info = info._replace(
        curves=tuple(c.name for c in curves),
        curve_errors=errors,
        block=block,
        start=dict(zip(names, info.start, strict=True)),
    )
    return dataclasses.replace(fitted, fit_info=info)


def _stage1_grid(curves, log_s1, peak):
    losses = np.concatenate([c.losses for c in curves])
    lo = float(losses.min())
    x = np.concatenate(log_s1)
    y = np.log(losses - lo + 0.01)
    slope, intercept = np.polyfit(x, y, 1) if np.ptp(x) > 0 else (0.0, float(np.mean(y)))
    a0, alpha0 = math.exp(intercept), -slope
    scale = _AUTHORS_PEAK / peak
    return {
        "L0": tuple(np.linspace(lo - 0.2, lo + 0.2, 5)),
        "A": tuple(np.linspace(a0 - 0.1, a0 + 0.1, 3)),
        "alpha": tuple(np.linspace(alpha0 - 0.1, alpha0 + 0.1, 3)),
        "B": tuple(np.linspace(100.0, 1000.0, 3) * scale),
    }


def _grid_points(where, grid, default, names) -> np.ndarray:
    """Starting points as an (n, len(names)) array; negative starts are moved to the bound 0."""
    if grid is None:
        grid = default
    if isinstance(grid, Mapping):
        unknown = sorted(set(grid) - set(names) - set(default))
        if unknown:
            raise ValueError(
                f"{where}: `grid` has unknown parameters {unknown}; the law's are {list(names)}"
            )
        axes = []
        for name in names:
            values = grid.get(name, default.get(name))
            try:
                values = np.atleast_1d(np.asarray(values, dtype=np.float64))
            except (TypeError, ValueError):
                values = np.array([np.nan])
            if values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values)):
                raise ValueError(
                    f"{where}: `grid[{name!r}]` must be a non-empty list of finite numbers, "
                    f"got {grid.get(name)!r}"
                )
            axes.append(values)
        points = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(names))
    else:
        if isinstance(grid, (str, bytes)) or not isinstance(grid, Sequence):
            raise ValueError(
                f"{where}: `grid` must be a mapping from parameter name to values or a list of "
                f"starting points, got {type(grid).__name__}"
            )
        rows = []
        for i, point in enumerate(grid):
            if not isinstance(point, Mapping) or set(point) != set(names):
                raise ValueError(
                    f"{where}: `grid[{i}]` must be a mapping with exactly the keys "
                    f"{list(names)}, got {point!r}"
                )
            try:
                rows.append([float(point[n]) for n in names])
            except (TypeError, ValueError):
                raise ValueError(f"{where}: `grid[{i}]` values must be numbers") from None
        if not rows:
            raise ValueError(f"{where}: `grid` must hold at least one starting point")
        points = np.asarray(rows, dtype=np.float64)
        if not np.all(np.isfinite(points)):
            raise ValueError(f"{where}: `grid` starting points must be finite")
    return np.maximum(points, 0.0)


def _minimize(value_grad, data, starts, delta, maxiter):
    """L-BFGS-B from every start on value_grad(params, data, delta); the best converged one."""
    from scipy.optimize import minimize

    starts = np.asarray(starts, dtype=np.float64)
    # Each parameter in units of its typical size over the grid, so that one tolerance suits
    # all of them; the objective in units of delta^2, so that ftol is relative to its scale.
    scale = np.median(np.abs(starts), axis=0)
    scale = np.where(scale > 0, scale, 1.0)

    def fun(z):
        with np.errstate(all="ignore"):
            v, g = value_grad(z * scale, data, delta)
        if not (math.isfinite(v) and np.all(np.isfinite(g))):
            return 1e300, np.zeros_like(z)
        return v / delta**2, g * scale / delta**2

    best, best_value, kept, n_conv, kept_start = None, math.inf, None, 0, None
    last_message = ""
    with _one_blas_thread():
        for start in starts:
            res = _lbfgsb(minimize, fun, start / scale, maxiter)
            last_message = str(res.message)
            if not _converged(res):
                continue
            n_conv += 1
            if res.fun < best_value:
                best_value, best, kept, kept_start = float(res.fun), res.x, res, start
        if best is None:
            raise FitError(
                f"fit: none of the {len(starts)} starting points converged within {maxiter} "
                f"L-BFGS-B iterations (last message: {last_message!r}); raise `maxiter` or give "
                "a `grid` closer to the optimum"
            )
        # L-BFGS-B can stop on a tiny relative decrease in a flat valley: restart it from the
        # kept optimum (a fresh curvature estimate) until that no longer helps.
        for _ in range(3):
            res = _lbfgsb(minimize, fun, best, maxiter)
            if not (_converged(res) and res.fun < best_value * (1.0 - 1e-13)):
                break
            best_value, best, kept = float(res.fun), res.x, res
    best = best * scale
    info = FitInfo(
        curves=(),
        curve_errors=(),
        objective=best_value * delta**2,
        starts=len(starts),
        converged=n_conv,
        iterations=int(kept.nit),
        message=str(kept.message),
        start=tuple(float(v) for v in kept_start),
    )
    return best, info


def _adamw(value_grad, data, starts, delta, steps=200, patience=20, weight_decay=0.01):
    """The multi-power authors' stage 2: AdamW from each start, best point seen, early stop.

    torch.optim.AdamW semantics (betas 0.9, 0.999, eps 1e-8, decoupled decay `p *= 1 - lr wd`),
    rate 5e-2 for L0, A, B, C and 5e-3 for the exponents; stop after `steps` steps, after
    `patience` steps without a lower objective, or when the gradient norm is below 1e-5. Each
    step is projected onto the bounds (parameters >= 0); the authors' AdamW is unconstrained,
    which makes no difference on their curves, whose parameters stay far from 0.
    """
    rates = np.array([5e-2, 5e-2, 5e-3, 5e-2, 5e-2, 5e-3, 5e-3])
    best, best_value, kept, kept_start, kept_steps = None, math.inf, "", None, 0
    for start in np.asarray(starts, dtype=np.float64):
        p, m, v = start.copy(), np.zeros_like(start), np.zeros_like(start)
        lowest, stale, why = math.inf, 0, f"{steps} steps"
        for t in range(1, steps + 1):
            with np.errstate(all="ignore"):
                value, grad = value_grad(p, data, delta)
            if math.isfinite(value) and value < best_value:
                best_value, best, kept_start = value, p.copy(), start
            stale = 0 if value < lowest else stale + 1
            lowest = min(lowest, value)
            if t - 1 > patience and stale >= patience:
                why = f"no improvement for {patience} steps at step {t - 1}"
                break
            if float(np.linalg.norm(grad)) < 1e-5:
                why = f"gradient norm below 1e-5 at step {t - 1}"
                break
            p = p * (1.0 - rates * weight_decay)
            m = 0.9 * m + 0.1 * grad
            v = 0.999 * v + 0.001 * grad * grad
            denom = np.sqrt(v) / math.sqrt(1.0 - 0.999**t) + 1e-8
            # Kept in the law's domain (every parameter >= 0, the L-BFGS-B stages' bounds): an
            # unconstrained step can take C or B below 0 on curves far from the law's form.
            p = np.maximum(p - rates / (1.0 - 0.9**t) * m / denom, 0.0)
        if kept_start is start:  # the best point so far came from this start
            kept, kept_steps = why, t
    if best is None:
        raise FitError("fit: AdamW produced no finite objective from any start")
    info = FitInfo(
        curves=(),
        curve_errors=(),
        objective=best_value,
        starts=len(starts),
        converged=0,
        iterations=kept_steps,
        message=f"AdamW (the authors' stage 2) stopped early by design: {kept}; not an optimum",
        start=tuple(float(v) for v in kept_start),
    )
    return best, info


def _converged(res) -> bool:
    """scipy's success, or a line-search stop at a point whose projected gradient is ~0."""
    if res.success:
        return True
    if not str(res.message).startswith("ABNORMAL"):
        return False
    grad = np.asarray(res.jac, dtype=np.float64)
    grad = np.where((res.x <= 0) & (grad > 0), 0.0, grad)  # pushes into the bound: stationary
    return bool(np.max(np.abs(grad)) <= 1e-6 * max(1.0, abs(float(res.fun))))


def _lbfgsb(minimize, fun, z0, maxiter):
    return minimize(
        fun,
        z0,
        jac=True,
        method="L-BFGS-B",
        bounds=[(0.0, None)] * len(z0),
        options={"maxiter": maxiter, "ftol": 1e-12, "gtol": 1e-8, "maxcor": 20},
    )


def _one_blas_thread():
    """L-BFGS-B's few-parameter linear algebra runs 10x slower with threaded BLAS on a busy
    machine (measured: 9 ms instead of 0.1 ms per iteration on 2 shared cores)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _huber_value_grad(log_loss, pred, delta):
    """sum huber_delta(log_loss - log(pred)) and its derivative in pred (pred floored at 1e-10,
    as the authors do, with no gradient below the floor)."""
    floor = pred < 1e-10
    r = log_loss - np.log(np.where(floor, 1e-10, pred))
    small = np.abs(r) < delta
    value = float(np.sum(np.where(small, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta))))
    slope = np.where(small, r, delta * np.sign(r))
    return value, np.where(floor, 0.0, -slope / np.where(floor, 1.0, pred))


def _annealing_pred(p, s1, s2):
    L0, A, alpha, C = p
    return L0 + A * s1 ** (-alpha) - C * s2


def _annealing_value_grad(p, data, delta):
    L0, A, alpha, C = p
    value, grad = 0.0, np.zeros(4)
    for s1, s2, log_loss in data:
        power = s1 ** (-alpha)
        v, dpred = _huber_value_grad(log_loss, L0 + A * power - C * s2, delta)
        value += v
        grad += [dpred.sum(), dpred @ power, -A * (dpred @ (power * np.log(s1))), -(dpred @ s2)]
    return value, grad


def _surrogate_value_grad(p, data, delta):
    """The multi-power authors' stage 1: `L0 + A S1^(-alpha) - B (peak - lrs[s-1])`."""
    L0, A, alpha, B = p
    value, grad = 0.0, np.zeros(4)
    for log_s1, below_peak, log_loss in data:
        power = np.exp(-alpha * log_s1)
        v, dpred = _huber_value_grad(log_loss, L0 + A * power - B * below_peak, delta)
        value += v
        grad += [dpred.sum(), dpred @ power, -A * (dpred @ (power * log_s1)), -(dpred @ below_peak)]
    return value, grad


class _MPLFeatures(NamedTuple):
    """Per-curve constants of the multi-power law at its recorded steps.

    log_s1: (n,) log forward area. log_area: (n, g) log of `S_k(s)` per drop group, `_MASKED`
    where the group is not before s. log_rate: (g,) log rate of each group. drop: (g,) the sum
    of its rate changes `lrs[k-1] - lrs[k]`.
    """

    log_s1: Any
    log_area: Any
    log_rate: Any
    drop: Any


def _multipower_terms(p, f: _MPLFeatures):
    """x = rate^(-gamma) S_k, log1p(C x) and (1 + C x)^(-beta) for every (step, group) pair."""
    _, _, _, _, C, beta, gamma = p
    x = np.exp(f.log_area - gamma * f.log_rate[None, :])
    log_u = np.log1p(C * x)
    return x, log_u, np.exp(-beta * log_u)


def _multipower_pred(p, f: _MPLFeatures):
    L0, A, alpha, B = p[:4]
    _, log_u, w = _multipower_terms(p, f)
    return L0 + A * np.exp(-alpha * f.log_s1) - B * ((1.0 - w) @ f.drop)


def _multipower_value_grad(p, data, delta):
    L0, A, alpha, B, C, beta, gamma = p
    value, grad = 0.0, np.zeros(7)
    for f, log_loss in data:
        x, log_u, w = _multipower_terms(p, f)
        power = np.exp(-alpha * f.log_s1)
        drop = (1.0 - w) @ f.drop  # sum_k d_k G_k
        v, dpred = _huber_value_grad(log_loss, L0 + A * power - B * drop, delta)
        value += v
        # dG/dC = beta w x / (1 + C x); dG/dgamma = C (dG/dC) (-log rate); dG/dbeta = w log(1 + C x)
        q = beta * w * x / (1.0 + C * x)
        grad += [
            dpred.sum(),
            dpred @ power,
            -A * (dpred @ (power * f.log_s1)),
            -(dpred @ drop),
            -B * (dpred @ (q @ f.drop)),
            -B * (dpred @ ((w * log_u) @ f.drop)),
            -B * C * (dpred @ (q @ (-f.log_rate * f.drop))),
        ]
    return value, grad


def _drop_groups(lrs: np.ndarray, steps: np.ndarray, block: int):
    """Groups of the rate changes before max(steps): (drop, rate, area before, last k) each.

    Changes k = 1 .. max(steps) - 1 with `d_k != 0` are grouped by windows of `block`
    consecutive k, cut again at every recorded step (so a group lies wholly before or wholly
    after each step) and by sign. A group is one term with its summed drop, and the rate and
    area-before weighted by the drops: exact for a single change, a midpoint rule otherwise.
    """
    top = int(steps[-1])
    k = np.arange(1, top)
    drops = lrs[k - 1] - lrs[k]
    keep = drops != 0
    k, drops = k[keep], drops[keep]
    area_before = np.concatenate([[0.0], np.cumsum(lrs[:top])])  # P[j] = sum(lrs[:j])
    if k.size == 0:
        empty = np.zeros(0)
        return empty, empty, empty, np.zeros(0, dtype=np.int64), area_before
    cuts = np.union1d(np.arange(block, top, block), steps)
    window = np.searchsorted(cuts, k, side="right")
    _, group = np.unique(window * 2 + (drops > 0), return_inverse=True)
    total = np.bincount(group, drops)
    rate = np.bincount(group, drops * lrs[k]) / total
    before = np.bincount(group, drops * area_before[k]) / total
    last = np.zeros(total.size, dtype=np.int64)
    np.maximum.at(last, group, k)
    return total, rate, before, last, area_before


def _multipower_features(lrs, steps, block) -> _MPLFeatures:
    drop, rate, before, last, area = _drop_groups(lrs, steps, block)
    tiny = np.finfo(np.float64).tiny
    s1 = area[steps]
    valid = last[None, :] < steps[:, None]
    with np.errstate(divide="ignore"):
        log_area = np.where(valid, np.log(np.maximum(s1[:, None] - before[None, :], tiny)), _MASKED)
    peak = float(lrs.max()) if lrs.size else 1.0
    log_rate = np.log(np.maximum(rate, peak * 1e-12)) if rate.size else rate
    return _MPLFeatures(np.log(s1), log_area, log_rate, drop)


def _group_count(curve, block) -> int:
    return len(_drop_groups(curve.lrs, curve.steps, block)[0])


def _choose_block(curves, block) -> int:
    if block is not None:
        return int(block)
    block = 1
    while True:
        entries = sum(len(c.steps) * _group_count(c, block) for c in curves)
        if entries <= _ENTRY_BUDGET or block >= max(int(c.steps[-1]) for c in curves):
            return block
        block *= 2


# ----------------------------------------------------------------------------------------
# Law-optimal schedules
# ----------------------------------------------------------------------------------------


def optimal_lrs(
    law: _Law,
    total_steps: int,
    peak: float,
    warmup_steps: int = 0,
    min_lr: float = 0.0,
    iterations: int = 10_000,
    learning_rate: float | None = None,
) -> np.ndarray:
    """The per-step rates of `optimal_schedule`, as a float64 NumPy array of `total_steps`.

    See `optimal_schedule` for the method and the arguments.
    """
    where = "optimal_lrs"
    if not isinstance(law, _Law):
        raise ValueError(f"{where}: `law` must be an AnnealingLaw or MultiPowerLaw, got {law!r}")
    total_steps = _check_int(where, "total_steps", total_steps, 2)
    peak = _check_positive(where, "peak", peak)
    warmup_steps = _check_int(where, "warmup_steps", warmup_steps, 0)
    if warmup_steps >= total_steps:
        raise ValueError(
            f"{where}: `warmup_steps` must be < `total_steps` = {total_steps}, got {warmup_steps}"
        )
    if (
        isinstance(min_lr, bool)
        or not isinstance(min_lr, numbers.Real)
        or not (0.0 <= min_lr < peak)
    ):
        raise ValueError(f"{where}: `min_lr` must be in [0, peak) = [0, {peak}), got {min_lr!r}")
    iterations = _check_int(where, "iterations", iterations, 1)
    n = total_steps - warmup_steps
    budget = peak - float(min_lr)
    if learning_rate is None:
        learning_rate = 0.3 * budget / n
    learning_rate = _check_positive(where, "learning_rate", learning_rate)
    with jax.enable_x64(True):
        params = jnp.asarray([getattr(law, k) for k in PARAM_NAMES[law.kind]], jnp.float64)
        warm = jnp.asarray(peak * np.arange(warmup_steps) / max(warmup_steps, 1), jnp.float64)
        out = _descend(
            law.kind,
            getattr(law, "decay", 0.0),
            law.warmup_as_peak,
            iterations,
            params,
            warm,
            jnp.zeros(n, jnp.float64),
            jnp.float64(peak),
            jnp.float64(budget),
            jnp.float64(learning_rate),
        )
        out = np.asarray(out, dtype=np.float64)
    return _clip_tail(out, warmup_steps, float(min_lr))


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _descend(kind, decay, warmup_as_peak, iterations, params, warm, delta, peak, budget, rate):
    """Projected Adam steps on the decrements; returns the rates. One compile per shape.

    Each step is `y = delta - rate * m_hat / D` with Adam's `D = sqrt(v_hat) + eps`, then the
    projection of y onto the feasible set in the metric `D` (not the Euclidean one): a fixed
    point then satisfies the constrained problem's KKT conditions whatever D is. (The Euclidean
    projection after Adam's per-coordinate step has other fixed points: measured, it flattens
    the decay into a line once the floor binds.)
    """

    def rates(d):
        return jnp.concatenate([warm, peak - jnp.cumsum(d)])

    grad_fn = jax.grad(lambda d: _final_loss(kind, decay, warmup_as_peak, params, rates(d)))

    def step(carry, t):
        d, m, v = carry
        g = grad_fn(d)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        scale = jnp.sqrt(v / (1.0 - 0.999**t)) + 1e-12
        y = d - rate * m / (1.0 - 0.9**t) / scale
        return (_project(y, 1.0 / scale, budget), m, v), None

    zeros = jnp.zeros_like(delta)
    counts = jnp.arange(1, iterations + 1, dtype=delta.dtype)
    (delta, _, _), _ = jax.lax.scan(step, (delta, zeros, zeros), counts)
    return rates(delta)


def _project(y, w, cap):
    """argmin_x sum (x - y)^2 / w subject to x >= 0, sum(x) <= cap (w > 0): x = max(y - theta w,
    0), theta >= 0 the smallest making the sum <= cap; found exactly after one sort."""
    clipped = jnp.maximum(y, 0.0)

    def binding(_):
        # Breakpoints theta_i = y_i / w_i, descending; with the k largest active,
        # theta = (sum y - cap) / sum w over them, valid when it is below the k-th breakpoint.
        order = jnp.argsort(-(y / w))
        ys, ws = y[order], w[order]
        theta_k = (jnp.cumsum(ys) - cap) / jnp.cumsum(ws)
        valid = (ys / ws > theta_k) & (ys > 0)
        k = jnp.max(jnp.where(valid, jnp.arange(y.size), 0))
        return jnp.maximum(y - jnp.maximum(theta_k[k], 0.0) * w, 0.0)

    return jax.lax.cond(jnp.sum(clipped) <= cap, lambda _: clipped, binding, None)


def _clip_tail(values, warmup_steps, min_lr):
    values = values.copy()
    values[warmup_steps:] = np.maximum(values[warmup_steps:], min_lr)
    return values


def optimal_schedule(
    law: _Law,
    total_steps: int,
    peak: float,
    warmup_steps: int = 0,
    min_lr: float = 0.0,
    iterations: int = 10_000,
    learning_rate: float | None = None,
) -> Callable:
    """The non-increasing schedule (after warm-up) that minimises a law's final loss.

    The warm-up is linear, `peak * t / W` for t < W. After it, the rates are written as
    `lrs[W + j] = peak - sum(delta[:j + 1])` with `delta >= 0` and `sum(delta) <= peak - min_lr`,
    which is exactly the set of non-increasing rates in [min_lr, peak]. Projected gradient steps
    (Adam-preconditioned, the gradient of `law.final_loss` by `jax.grad`, in float64) on delta
    start from the constant schedule; each is followed by the projection onto that set in
    Adam's own metric, so that a fixed point is a KKT point of the constrained problem. Luo et
    al. optimise the same decrements with Adam (and clipping).

    Args:
      law: a fitted (or hand-built) `AnnealingLaw` or `MultiPowerLaw`.
      total_steps: T >= 2, the number of updates.
      peak: the largest rate, > 0.
      warmup_steps: W in [0, T), steps of linear warm-up (not optimised).
      min_lr: the smallest rate allowed, in [0, peak).
      iterations: projected gradient steps.
      learning_rate: the step size on delta; default 0.3 (peak - min_lr) / (T - W).

    Returns:
      A schedule: a jittable function of the 0-based step (the rate of update t, the last value
      after T - 1), usable as an optax learning rate.

    Example:
      >>> from schedules import laws
      >>> law = laws.MultiPowerLaw(L0=3.0, A=0.5, alpha=0.5, B=400.0, C=2.0, beta=0.6,
      ...                          gamma=0.6)
      >>> lr = laws.optimal_schedule(law, total_steps=2000, peak=3e-4, iterations=300)
      >>> bool(lr(0) >= lr(1000) >= lr(1999))
      True

    References:
      Luo et al. 2025 (arXiv 2503.12811), section on optimal schedules; the authors'
      `optimization.py` in thu-yao-01-luo/MultiPowerLaw.
    """
    values = optimal_lrs(law, total_steps, peak, warmup_steps, min_lr, iterations, learning_rate)
    return _table(values)


def _table(values: np.ndarray) -> Callable:
    """A schedule that looks up `values[t]` (the last value past the end)."""
    n = len(values)

    def schedule(step):
        step = _as_step(step)
        lut = jnp.asarray(values, _float_dtype())
        if jnp.issubdtype(step.dtype, jnp.integer):
            return lut[jnp.clip(step, 0, n - 1)]
        t = jnp.clip(step.astype(lut.dtype), 0, n - 1)
        i0 = jnp.clip(jnp.floor(t).astype(jnp.int32), 0, max(n - 2, 0))
        i1 = jnp.minimum(i0 + 1, n - 1)
        return lut[i0] + (lut[i1] - lut[i0]) * (t - i0.astype(lut.dtype))

    return schedule


def plot_optimal(
    law: _Law,
    total_steps: int,
    peak: float,
    warmup_steps: int = 0,
    min_lr: float = 0.0,
    decay_fraction: float = 0.2,
    path: str | None = None,
    **options,
):
    """Draws the law-optimal schedule beside cosine and WSD, with the law's predicted losses.

    Needs matplotlib (the `plots` extra). The cosine decays to `min_lr` over T - W steps; WSD is
    `schedules.wsd` with linear decay over `decay_fraction` of T. The legend gives each
    schedule's predicted final loss.

    Args:
      law, total_steps, peak, warmup_steps, min_lr: as for `optimal_schedule`.
      decay_fraction: WSD's decay fraction.
      path: if given, the figure is saved there.
      **options: passed on to `optimal_lrs` (iterations, learning_rate).

    Returns:
      The matplotlib figure.
    """
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    import schedules

    steps = np.arange(total_steps)
    candidates = {
        "law-optimal": optimal_lrs(law, total_steps, peak, warmup_steps, min_lr, **options),
        "cosine": np.asarray(
            schedules.cosine(peak, total_steps, warmup_steps=warmup_steps, end_value=min_lr)(steps),
            np.float64,
        ),
        f"WSD ({decay_fraction:g} linear)": np.asarray(
            schedules.wsd(
                peak,
                total_steps,
                warmup_steps=warmup_steps,
                decay_fraction=decay_fraction,
                end_value=min_lr,
            )(steps),
            np.float64,
        ),
    }
    eval_steps = np.unique(np.linspace(max(1, warmup_steps), total_steps, 200).astype(int))
    fig, (ax_lr, ax_loss) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, lrs in candidates.items():
        pred = law.predict(lrs, eval_steps)
        ax_lr.plot(steps, lrs, label=name)
        ax_loss.plot(eval_steps, pred, label=f"{name}: {pred[-1]:.4f}")
    ax_lr.set_xlabel("step")
    ax_lr.set_ylabel("learning rate")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel(f"predicted loss ({law.kind} law)")
    tail = law.predict(candidates["law-optimal"], eval_steps)
    ax_loss.set_ylim(tail[-1] - 0.05 * abs(tail[-1]), tail[len(tail) // 4] + 0.02 * abs(tail[-1]))
    for ax in (ax_lr, ax_loss):
        ax.grid(lw=0.2, ls="--")
        ax.legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


# ----------------------------------------------------------------------------------------
# Checks and small helpers
# ----------------------------------------------------------------------------------------


class _Curve(NamedTuple):
    name: str
    lrs: np.ndarray
    steps: np.ndarray
    losses: np.ndarray | None


def _check_kind(where, kind) -> str:
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(
            f"{where}: unknown law kind {kind!r}; choose one of: {', '.join(map(repr, KINDS))}"
        )
    return kind


def _check_decay(where, decay) -> float:
    if isinstance(decay, bool) or not isinstance(decay, numbers.Real) or not 0.0 <= decay < 1.0:
        raise ValueError(f"{where}: `decay` must be a number in [0, 1), got {decay!r}")
    return float(decay)


def _check_positive(where, name, value) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{where}: `{name}` must be a finite number > 0, got {value!r}")
    return float(value)


def _check_int(where, name, value, minimum) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{where}: `{name}` must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_params(where, law) -> None:
    for name in PARAM_NAMES[law.kind]:
        value = getattr(law, name)
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Real)
            or not math.isfinite(value)
            or value < 0
        ):
            raise ValueError(
                f"{where}: parameter `{name}` must be a finite number >= 0, got {value!r}"
            )
        object.__setattr__(law, name, float(value))
    if not isinstance(law.warmup_as_peak, bool):
        raise ValueError(
            f"{where}: `warmup_as_peak` must be True or False, got {law.warmup_as_peak!r}"
        )


def _check_lrs(where: str, name: str, lrs) -> np.ndarray:
    return check_array(where, name, lrs, minimum=0.0, index="step")


def _check_curve(where, name, lrs, steps, losses) -> _Curve:
    arr = _check_lrs(where, f"{name}: lrs", lrs)
    try:
        raw = np.asarray(steps, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {name}: steps must be a 1-D array of integers") from None
    if raw.ndim != 1 or raw.size == 0:
        raise ValueError(
            f"{where}: {name}: steps must be a non-empty 1-D array, got shape {raw.shape}"
        )
    if not np.all(np.isfinite(raw)) or np.any(raw != np.round(raw)):
        i = int(np.argmax(~np.isfinite(raw) | (raw != np.round(raw))))
        raise ValueError(
            f"{where}: {name}: steps must be integers, got {float(raw[i])!r} at index {i}"
        )
    st = raw.astype(np.int64)
    if st[0] < 1:
        raise ValueError(
            f"{where}: {name}: steps must be >= 1 (a loss after s updates), got {st[0]} at index 0"
        )
    if np.any(np.diff(st) <= 0):
        i = int(np.argmax(np.diff(st) <= 0)) + 1
        raise ValueError(
            f"{where}: {name}: steps must be strictly increasing; index {i} has {st[i]} after "
            f"{st[i - 1]}"
        )
    if st[-1] > arr.size:
        raise ValueError(
            f"{where}: {name}: step {st[-1]} goes past the schedule: lrs has {arr.size} rates, "
            f"so steps must be <= {arr.size}"
        )
    out = None
    if losses is not None:
        try:
            out = np.asarray(losses, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: {name}: losses must be a 1-D array of numbers") from None
        if out.shape != st.shape:
            raise ValueError(
                f"{where}: {name}: losses must have one value per step ({st.size}), got shape "
                f"{out.shape}"
            )
        bad = ~np.isfinite(out)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(
                f"{where}: {name}: loss {float(out[i])!r} at step {st[i]} is not finite "
                f"({int(bad.sum())} such points); drop them first"
            )
        if (out <= 0).any():
            i = int(np.argmax(out <= 0))
            raise ValueError(
                f"{where}: {name}: loss {float(out[i])!r} at step {st[i]} is not > 0; the laws fit "
                "log(loss)"
            )
    return _Curve(name, arr, st, out)


def _check_curves(where, curves) -> list[_Curve]:
    if isinstance(curves, Mapping):
        items = [(str(k), v) for k, v in curves.items()]
    elif isinstance(curves, (str, bytes)) or not isinstance(curves, Sequence):
        raise ValueError(
            f"{where}: `curves` must be a list of (lrs, steps, losses) or a mapping from a name "
            f"to one, got {type(curves).__name__}"
        )
    else:
        items = [(f"curves[{i}]", v) for i, v in enumerate(curves)]
    if not items:
        raise ValueError(f"{where}: `curves` is empty; give at least one (lrs, steps, losses)")
    out = []
    for name, item in items:
        if isinstance(item, (str, bytes)) or not isinstance(item, Sequence) or len(item) != 3:
            raise ValueError(f"{where}: {name} must be a tuple (lrs, steps, losses)")
        out.append(_check_curve(where, name, *item))
    return out


def _forward_area(lrs, steps):
    return np.concatenate([[0.0], np.cumsum(lrs)])[steps]


def _check_positive_areas(where, curves) -> None:
    for c in curves:
        area = _forward_area(c.lrs, c.steps)
        if area[0] <= 0:
            raise ValueError(
                f"{where}: {c.name}: the forward area sum(lrs[:s]) is 0 at step {c.steps[0]}; "
                "the laws need a positive rate before the first recorded loss"
            )


def _annealing_features(lrs, steps, decay):
    """S1 and S2 at the recorded steps, float64: the recurrence of `annealing_areas` in NumPy."""
    drops = np.concatenate([[0.0], lrs[:-1] - lrs[1:]])
    momentum = np.empty_like(drops)
    m = 0.0
    for k, d in enumerate(drops.tolist()):
        m = decay * m + d
        momentum[k] = m
    return np.cumsum(lrs)[steps - 1], np.cumsum(momentum)[steps - 1]


def _warmup_at_peak(lrs: np.ndarray) -> np.ndarray:
    top = int(np.argmax(lrs))
    out = np.array(lrs, dtype=np.float64, copy=True)
    out[:top] = out[top]
    return out


def _warmup_at_peak_jax(lrs):
    top = jnp.argmax(lrs)
    return jnp.where(jnp.arange(lrs.shape[0]) < top, lrs[top], lrs)


def _relative_error(pred, losses) -> float:
    return float(np.mean(np.abs(pred - losses) / losses))
