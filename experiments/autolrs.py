"""AutoLRS on our loop: the learning rate of each stage picked by Bayesian optimisation over
short, forecast trials, restored from Orbax checkpoints (Jin et al., ICLR 2021).

One stage at main-trajectory step k, with stage lengths tau (training) and tau' (each trial):

1. **checkpoint** the state at k (`experiments.checkpointing`);
2. for each of `num_candidates` learning rates proposed by a Gaussian-process Bayesian
   optimiser over a log-uniform range (lower confidence bound, `LcbSearch`): **restore** step k
   and train tau' steps at that rate, recording the training loss of every step;
3. **forecast** each trial's loss at tau steps: denoise its loss curve (`denoise`), fit
   ``a * exp(-b x) + c`` to it (`fit_exponential`) and evaluate the fit at x = tau;
4. **restore** step k and train tau steps at the rate with the lowest forecast: the stage's
   contribution to the main trajectory.

tau and tau' double after every stage until tau reaches `tau_max`. Only the tau steps of step 4
advance the model; the k x tau' trial steps are search cost, and every one of them is counted in
`Trainer.spent` (gradient evaluations), which is what any cost reported here or in the
time-to-target benchmark charges. With the defaults (k = 10, tau' = tau / 10) a stage costs 2 tau
gradient evaluations for tau steps of progress.

Facts from the authors' code (github.com/YuchenJin/autolrs, `autolrs_server.py`) and our
defaults (`Settings`), authors' value first:

- first stage tau and tau': 1000 and 100 -> 100 and 10. Our runs are 400 to 1,500 steps,
  not 10^5, and tau' = 10 is the fewest loss values we fit three parameters to. Relative to
  the run, our stages are therefore longer than the paper's.
- tau's cap: 8000 (tau' 800) -> 800 (tau' 80): the same 8x growth in three doublings.
- candidates per stage: k = 10 -> 10.
- search range: the command's `--min_lr`, `--max_lr` (its example: 1e-3 to 0.1 for SGD at
  0.1) -> given; `Settings.around(lr)` is lr / 10 to 10 lr, a 100x range as in the example.
- BO: scikit-optimize's GP (Matern 5/2 plus white noise, y normalised), one initial point,
  lower confidence bound with kappa = 1e6 -> a numpy GP with the same kernel and
  acquisition, kappa = 1e6 (see "The Bayesian optimiser" below). With kappa this large the
  proposals follow the posterior uncertainty: they fill the range, centre first, then ends.
- first candidate: random in the range -> the range's geometric centre (deterministic; in
  the benchmark it is the default learning rate).
- denoising: scipy `UnivariateSpline` (degree 2, default smoothing), 10 rounds that drop the
  3% largest residuals in the first half of the window -> a discrete cubic smoothing spline
  (Whittaker-Henderson) whose penalty is chosen by generalised cross-validation, and rounds
  that drop only residuals beyond 3 robust standard deviations (`denoise` says why). The
  default smoothing of `UnivariateSpline` bounds the residual by len(x) in absolute loss
  units, so what it does depends on the loss's scale; GCV does not.
- forecast target: training loss (validation loss every tau'/16 steps once tau' stops
  growing) -> training loss throughout, one signal for every workload.
- a diverging trial: its NaN forecast told to BO as 1e6 -> the trial stops at its first
  non-finite loss (its steps so far are counted), its forecast is +inf, and the GP sees the
  largest finite forecast instead (a 1e6 outlier would flatten the normalised GP).

Data: our batches are a function of the main-trajectory step, so every trial of a stage and the
stage's training all see the same batches from step k on (the authors' data loader moves on
during trials); the comparison between candidates is therefore on common data.

The Bayesian optimiser: a GP in one dimension on at most `num_candidates` points is a 10 x 10
Cholesky factorisation, so the authors' choices (Matern 5/2 plus white noise on normalised
values, LCB with their kappa, no point tried twice, a deterministic first point) take about 40
lines of numpy, run in milliseconds, are deterministic and add no dependency. The authors'
library, scikit-optimize (they pinned 0.8.1), has had no release since 0.10.2 in June 2024;
BoTorch would bring PyTorch into a JAX project; `bayesian-optimization` (maintained) would add
a dependency for these few lines and still need the log range and the exclusion of tried
points written around it. The GP's hyper-parameters (length scale, noise) are chosen by maximum
marginal likelihood on a grid with the amplitude profiled out, and the acquisition is
minimised on a grid of 1,001 points.

Example (the command this module runs as):

    python -m experiments.autolrs --config=experiments/configs/quadratic.py \\
        --workdir=runs/autolrs_quadratic --min_lr=0.01 --max_lr=1.0 --config.steps=700

References:
  Jin, Zhou, Zhao, Zhu, Guo, Canini, Krishnamurthy, "AutoLRS: Automatic Learning-Rate Schedule
  by Bayesian Optimization on the Fly", ICLR 2021, arXiv:2105.10762; code:
  github.com/YuchenJin/autolrs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import sys
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import checkpointing, metrics, rundir, sharding
from experiments import train as train_lib

# ----------------------------------------------------------------------------- settings


@dataclasses.dataclass(frozen=True)
class Settings:
    """AutoLRS's search: the learning-rate range and the stage lengths.

    Attributes:
      min_lr, max_lr: the log-uniform search range, 0 < min_lr < max_lr.
      tau: training steps of the first stage (authors: 1000).
      tau_prime: steps of each trial in the first stage, 5 <= tau_prime <= tau (authors:
        tau / 10); the forecast fits three parameters to a smoothed curve of this many losses.
      num_candidates: learning rates tried per stage, k >= 1 (authors: 10).
      tau_max: tau doubles after every stage (and tau' with it) while it stays <= tau_max
        (authors: 8000).
      kappa: the lower confidence bound's weight on the posterior standard deviation, >= 0
        (authors: 1e6, which makes the search nearly pure exploration of the range).
    """

    min_lr: float
    max_lr: float
    tau: int = 100
    tau_prime: int = 10
    num_candidates: int = 10
    tau_max: int = 800
    kappa: float = 1e6

    def __post_init__(self):
        for name in ("tau", "tau_prime", "num_candidates", "tau_max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.tau_prime < MIN_FORECAST_POINTS:
            raise ValueError(
                f"tau_prime must be >= {MIN_FORECAST_POINTS} (the forecast fits a*exp(-b x)+c to "
                f"a smoothed curve of tau_prime losses), got {self.tau_prime}"
            )
        if self.tau_prime > self.tau:
            raise ValueError(f"tau_prime must be <= tau, got {self.tau_prime} > {self.tau}")
        if self.tau_max < self.tau:
            raise ValueError(f"tau_max must be >= tau, got {self.tau_max} < {self.tau}")
        if not (0 < self.min_lr < self.max_lr < math.inf):
            raise ValueError(
                f"need 0 < min_lr < max_lr < inf, got min_lr={self.min_lr}, max_lr={self.max_lr}"
            )
        if not self.kappa >= 0:
            raise ValueError(f"kappa must be >= 0, got {self.kappa!r}")

    @classmethod
    def around(cls, learning_rate: float, factor: float = 10.0, **kwargs) -> Settings:
        """A range from `learning_rate / factor` to `learning_rate * factor`."""
        return cls(min_lr=learning_rate / factor, max_lr=learning_rate * factor, **kwargs)


MIN_FORECAST_POINTS = 5


def stage_lengths(settings: Settings, stage: int) -> tuple[int, int]:
    """(tau, tau') of stage `stage` (0-based): doubled per stage while tau stays <= tau_max."""
    doublings = 0
    while doublings < stage and settings.tau * 2 ** (doublings + 1) <= settings.tau_max:
        doublings += 1
    return settings.tau * 2**doublings, settings.tau_prime * 2**doublings


# ----------------------------------------------------------------------------- forecasting


def fit_exponential(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares (a, b, c) of ``y = a * exp(-b x) + c`` with b > 0.

    For a fixed b the model is linear in (a, c), so the fit minimises the residual of that
    linear least-squares problem over log b alone (variable projection, as the authors' code
    does): a grid over ``b * span`` from 1e-4 to 1e3, a golden-section search around the best
    grid point, then Gauss-Newton steps on (a, b, c) while they reduce the residual. A noiseless
    exponential is recovered to rounding.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 3:
        raise ValueError(f"need x and y of one equal length >= 3, got {x.shape} and {y.shape}")
    x0, span = x[0], float(x[-1] - x[0])
    if not span > 0:
        raise ValueError("x must increase")
    xs = (x - x0) / span  # b is fitted in units of the window, then scaled back

    def linear(log_b):
        design = np.stack([np.exp(-np.exp(log_b) * xs), np.ones_like(xs)], axis=1)
        coef = np.linalg.lstsq(design, y, rcond=None)[0]
        return coef, float(np.sum((design @ coef - y) ** 2))

    grid = np.linspace(math.log(1e-4), math.log(1e3), 141)
    sse = [linear(g)[1] for g in grid]
    i = int(np.argmin(sse))
    low, high = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    log_b = _golden_section(lambda g: linear(g)[1], low, high)
    (a, c), best = linear(log_b)
    b = math.exp(log_b)
    for _ in range(20):  # Gauss-Newton on (a, b, c) from the projected solution
        e = np.exp(-b * xs)
        residual = a * e + c - y
        jacobian = np.stack([e, -a * xs * e, np.ones_like(xs)], axis=1)
        step = np.linalg.lstsq(jacobian, -residual, rcond=None)[0]
        a2, b2, c2 = a + step[0], b + step[1], c + step[2]
        trial = float(np.sum((a2 * np.exp(-b2 * xs) + c2 - y) ** 2)) if b2 > 0 else math.inf
        if not trial < best:
            break
        a, b, c, best = a2, b2, c2, trial
    # Back to the caller's x: a * exp(-b (x - x0) / span) = (a * exp(b' x0)) * exp(-b' x).
    b_out = b / span
    return float(a * math.exp(b_out * x0)), float(b_out), float(c)


def _golden_section(f: Callable[[float], float], low: float, high: float, tol: float = 1e-12):
    """The minimiser of a unimodal `f` on [low, high], to `tol`."""
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = low, high
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = f(d)
    return (a + b) / 2.0


def smooth(y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Whittaker-Henderson smoothing with its penalty chosen by generalised cross-validation.

    ``f = argmin sum_i w_i (y_i - f_i)^2 + lam sum_i (f_{i+1} - 2 f_i + f_{i-1})^2`` (a discrete
    cubic smoothing spline; points of weight 0 are interpolated), with lam from a log grid
    minimising ``GCV(lam) = m RSS / (m - tr H)^2`` over the m points of weight 1, ``H`` the
    hat matrix. Needs no noise scale: the same curve for the loss times any constant.
    """
    n = len(y)
    second = np.diff(np.eye(n), 2, axis=0)
    penalty = second.T @ second
    w = np.diag(weights)
    m = float(weights.sum())
    best = (math.inf, y)
    for lam in np.logspace(-6, 6, 49):
        hat = np.linalg.solve(w + lam * penalty, w)
        f = hat @ y
        rss = float(np.sum(weights * (y - f) ** 2))
        dof = float(np.trace(hat))
        if dof < m - 1e-9:
            gcv = m * rss / (m - dof) ** 2
            if gcv < best[0]:
                best = (gcv, f)
    return best[1]


def denoise(
    losses: np.ndarray, trim: float = 0.03, rounds: int = 10, threshold: float = 3.0
) -> np.ndarray:
    """A smooth version of a loss curve, with outliers of its first half ignored.

    Each round smooths the points kept so far (`smooth`) and drops, among the kept points of
    the first half, up to ``max(1, round(trim * n))`` with the largest residuals, but only
    residuals beyond `threshold` robust standard deviations (1.4826 x the median absolute
    residual, and at least 0.1% of the curve's range); it stops when there are none. The
    authors' code drops the 3% largest residuals of the first half in each of 10 rounds
    whatever their size, which on our short windows eats the steep start of the curve (the
    smoother's bias is largest there), so the curve's start becomes an extrapolation; the
    second half, which decides where the curve levels off, is kept whole as in theirs.
    Returns the final smooth curve at every step.
    """
    y = np.asarray(losses, np.float64)
    keep = np.ones(len(y))
    per_round = max(1, int(round(trim * len(y))))
    first_half = np.arange(len(y)) < len(y) / 2
    curve = smooth(y, keep)
    for _ in range(rounds):
        residual = np.abs(y - curve)
        # A residual under 0.1% of the curve's range is never an outlier: a noiseless curve
        # has none, only the smoother's rounding.
        scale = max(1.4826 * np.median(residual[keep > 0]), 1e-3 * np.ptp(curve) / threshold)
        outlier = (keep > 0) & first_half & (residual > threshold * scale)
        if not outlier.any() or keep.sum() - per_round < MIN_FORECAST_POINTS:
            break
        worst = np.argsort(np.where(outlier, residual, -np.inf))[-per_round:]
        keep[worst[outlier[worst]]] = 0.0
        curve = smooth(y, keep)
    return curve


def forecast(losses: np.ndarray, horizon: int) -> float:
    """The loss after `horizon` steps predicted from the losses of steps 0, 1, ..., n - 1.

    `losses[i]` is the loss at the params after i updates. +inf when a loss is not finite or
    there are fewer than `MIN_FORECAST_POINTS` of them (a trial that diverged).
    """
    losses = np.asarray(losses, np.float64)
    if len(losses) < MIN_FORECAST_POINTS or not np.all(np.isfinite(losses)):
        return math.inf
    smooth = denoise(losses)
    a, b, c = fit_exponential(np.arange(len(losses), dtype=np.float64), smooth)
    return float(a * math.exp(-b * horizon) + c)


# ----------------------------------------------------------------------------- BO


def _matern52(distance: np.ndarray, length: float) -> np.ndarray:
    r = math.sqrt(5.0) * np.abs(distance) / length
    return (1.0 + r + r * r / 3.0) * np.exp(-r)


# Hyper-parameter grid of the GP on [0, 1] (the log range). Length scales from a tenth of the
# range to 10 ranges: scikit-optimize bounds them to [0.01, 100] but starts its optimiser at 1;
# a global maximum-likelihood search with two or three points runs to the shortest length (two
# different values look uncorrelated), where the posterior is flat away from the points and
# the acquisition ties. Ten trials cannot resolve a length below a tenth of the range anyway.
_LENGTHS = np.logspace(-1, 1, 21)
_NOISES = np.logspace(-6, 0, 7)
_AMPLITUDE_BOUNDS = (0.01, 1000.0)  # scikit-optimize's ConstantKernel bounds


def gp_posterior(z: np.ndarray, y: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and standard deviation of f at `query` from noisy values y = f(z) + e.

    GP prior: ``f ~ GP(mean(y), s^2 k)``, k the Matern-5/2 kernel of length l, white noise of
    variance ``g s^2``, on y standardised. (l, g) maximise the marginal likelihood over a grid
    (l from 0.1 to 10, g from 1e-6 to 1) with the amplitude ``s^2 = y^T (K + g I)^{-1} y / n``
    profiled out (clipped to [0.01, 1000]). The standard deviation is that of f (without the
    noise).
    """
    z, y, query = (np.asarray(v, np.float64) for v in (z, y, query))
    centre, scale = float(np.mean(y)), float(np.std(y))
    scale = scale if scale > 0 else 1.0
    yn = (y - centre) / scale
    n = len(z)
    # Every (length, noise) pair of the grid at once: [L, N, n, n] Cholesky factors.
    correlation = _matern52(z[None, :, None] - z[None, None, :], _LENGTHS[:, None, None])
    matrices = correlation[:, None] + (_NOISES[None, :, None, None] + 1e-10) * np.eye(n)
    chol = np.linalg.cholesky(matrices)
    half = np.linalg.solve(chol, np.broadcast_to(yn[:, None], chol.shape[:-1] + (1,)))[..., 0]
    quadratic = np.sum(half**2, axis=-1)  # yn^T (R + g I)^-1 yn
    amplitude = np.clip(quadratic / n, *_AMPLITUDE_BOUNDS)
    log_det = np.sum(np.log(np.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    log_likelihood = -0.5 * quadratic / amplitude - log_det - 0.5 * n * np.log(amplitude)
    i, j = np.unravel_index(int(np.argmax(log_likelihood)), log_likelihood.shape)
    length, chol, amplitude = _LENGTHS[i], chol[i, j], float(amplitude[i, j])
    weights = np.linalg.solve(chol.T, half[i, j])
    cross = _matern52(query[:, None] - z[None, :], length)
    mean = cross @ weights
    reduced = np.linalg.solve(chol, cross.T)
    variance = amplitude * np.clip(1.0 - np.sum(reduced**2, axis=0), 0.0, None)
    return centre + scale * mean, scale * np.sqrt(variance)


class LcbSearch:
    """Proposes learning rates in [min_lr, max_lr] by GP lower confidence bound, log scale.

    The first proposal is the range's geometric centre; each later one minimises
    ``mean(z) - kappa * std(z)`` of `gp_posterior` over 1,001 evenly spaced points of
    ``z = log(lr / min_lr) / log(max_lr / min_lr)``, never one already tried. Values that are
    not finite (a diverged trial) enter the GP as the largest finite value told so far.
    """

    GRID = np.linspace(0.0, 1.0, 1001)

    def __init__(self, min_lr: float, max_lr: float, kappa: float):
        self.log_min, self.log_max = math.log(min_lr), math.log(max_lr)
        self.kappa = kappa
        self.tried: list[int] = []  # grid indices
        self.values: list[float] = []

    def lr(self, index: int) -> float:
        z = self.GRID[index]
        return math.exp(self.log_min + z * (self.log_max - self.log_min))

    def ask(self) -> float:
        if not self.tried:
            index = len(self.GRID) // 2
        else:
            values = np.array(self.values)
            finite = np.isfinite(values)
            fill = values[finite].max() if finite.any() else 1.0
            values = np.where(finite, values, fill)
            mean, std = gp_posterior(self.GRID[self.tried], values, self.GRID)
            score = mean - self.kappa * std
            score[self.tried] = np.inf
            index = int(np.argmin(score))
        self._pending = index
        return self.lr(index)

    def tell(self, value: float) -> None:
        """The objective at the learning rate of the last `ask`."""
        self.tried.append(self._pending)
        self.values.append(float(value))


# ----------------------------------------------------------------------------- the loop


class Trainer:
    """Our loop's pieces for AutoLRS, counting every gradient evaluation.

    Wraps a `experiments.train.Program` built with ``learning_rate_in_state=True`` (its jitted,
    sharded step; the rate is set in the optimizer state, so trials never recompile) and an
    Orbax `checkpointing.Checkpointer` for the stage's save and restores.

    Args:
      program: `experiments.train.build(config, learning_rate_in_state=True)`.
      checkpointer: where stage starts are saved (keep >= 1).
      budget: stop once this many gradient evaluations are spent (None: no limit).
      on_main_step: `(state, step, spent) -> stop` after every main-trajectory step, with
        the number of updates applied and the gradient evaluations spent so far (exploration
        included); returning True stops the run (e.g. a target reached).
    """

    def __init__(
        self,
        program: train_lib.Program,
        checkpointer: checkpointing.Checkpointer,
        budget: int | None = None,
        on_main_step: Callable[[dict, int, int], bool] | None = None,
    ):
        self.program = program
        self.checkpointer = checkpointer
        self.budget = budget
        self.on_main_step = on_main_step
        self.spent = 0
        self.stopped: str | None = None  # "budget" or "callback" once the run must end

    def save(self, state: dict) -> int:
        step = int(state["step"])
        if step not in self.checkpointer.steps():
            self.checkpointer.save(step, state, force=True)
        return step

    def restore(self, step: int) -> dict:
        return self.checkpointer.restore(step, self.program.abstract_state)

    def eval_params(self, state: dict) -> Any:
        return self.program.entry.eval_params(state["opt_state"].inner_state, state["params"])

    def train(
        self, state: dict, learning_rate: float, steps: int, explore: bool
    ) -> tuple[dict, np.ndarray]:
        """Up to `steps` updates at `learning_rate`; the state and each update's loss.

        Stops early when the budget is spent, when a trial's (`explore`) loss is not finite,
        or when `on_main_step` says so; a non-finite loss on the main trajectory raises
        `experiments.train.NonFiniteLossError`.
        """
        program, per_step = self.program, self.program.entry.grads_per_step
        state = with_learning_rate(state, learning_rate)
        step = int(state["step"])
        losses = []
        for _ in range(steps):
            if self.budget is not None and self.spent + per_step > self.budget:
                self.stopped = "budget"
                break
            batch = sharding.shard_batch(program.workload.batch(step), program.mesh)
            state, step_metrics = program.step_fn(state, batch)
            self.spent += per_step
            step += 1
            loss = float(step_metrics["loss"])  # also waits for the step (XLA:CPU, DESIGN.md)
            losses.append(loss)
            if not math.isfinite(loss):
                if explore:
                    break
                raise train_lib.NonFiniteLossError(
                    f"loss is {loss} at step {step} on AutoLRS's main trajectory "
                    f"(learning rate {learning_rate:.4g})"
                )
            if not explore and self.on_main_step and self.on_main_step(state, step, self.spent):
                self.stopped = "callback"
                break
        return state, np.asarray(losses)


def with_learning_rate(state: dict, learning_rate: float) -> dict:
    """`state` whose optimizer (`optax.inject_hyperparams`) applies `learning_rate` next."""
    opt_state = state["opt_state"]
    old = opt_state.hyperparams["learning_rate"]
    new = jax.device_put(jnp.asarray(learning_rate, old.dtype), old.sharding)
    hyperparams = {**opt_state.hyperparams, "learning_rate": new}
    return {**state, "opt_state": opt_state._replace(hyperparams=hyperparams)}


@dataclasses.dataclass
class StageRecord:
    """What one stage did: its lengths, every trial (rate, forecast, last loss), the choice."""

    stage: int
    start_step: int
    tau: int
    tau_prime: int
    trials: list[dict]
    chosen_lr: float | None
    steps_trained: int
    spent_after: int


def run_stage(
    trainer: Trainer, state: dict, settings: Settings, stage: int, max_steps: int | None = None
) -> tuple[dict, StageRecord]:
    """One AutoLRS stage from `state`: checkpoint, k forecast trials, train tau at the best.

    The stage's tau is cut to end at `max_steps` main-trajectory steps (the forecast horizon
    with it). If the trainer stops during the trials, the state of the stage start is returned.
    """
    tau, tau_prime = stage_lengths(settings, stage)
    start = trainer.save(state)  # 1. checkpoint
    if max_steps is not None:
        tau = min(tau, max_steps - start)
    search = LcbSearch(settings.min_lr, settings.max_lr, settings.kappa)
    trials = []
    for _ in range(settings.num_candidates):  # 2. trials from restores
        lr = search.ask()
        _, losses = trainer.train(trainer.restore(start), lr, tau_prime, explore=True)
        if trainer.stopped:
            record = StageRecord(stage, start, tau, tau_prime, trials, None, 0, trainer.spent)
            return trainer.restore(start), record
        predicted = forecast(losses, tau)  # 3. forecast at tau steps
        search.tell(predicted)
        trials.append({"lr": lr, "forecast": predicted, "last_loss": float(losses[-1])})
    best = min(trials, key=lambda t: (t["forecast"], t["lr"]))
    # 4. restore and train tau steps at the best forecast rate
    state, losses = trainer.train(trainer.restore(start), best["lr"], tau, explore=False)
    record = StageRecord(
        stage, start, tau, tau_prime, trials, best["lr"], len(losses), trainer.spent
    )
    return state, record


def run(
    trainer: Trainer,
    state: dict,
    settings: Settings,
    max_steps: int,
    on_stage: Callable[[dict, StageRecord], None] | None = None,
) -> tuple[dict, list[StageRecord]]:
    """Stages from `state` until `max_steps` main-trajectory steps or the trainer stops.

    `on_stage(state, record)` is called after every stage with the main trajectory's state.
    """
    records: list[StageRecord] = []
    while int(state["step"]) < max_steps and not trainer.stopped:
        state, record = run_stage(trainer, state, settings, len(records), max_steps)
        records.append(record)
        if on_stage is not None:
            on_stage(state, record)
    return state, records


# ----------------------------------------------------------------------------- command


def train(
    config: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    settings: Settings,
    *,
    devices=None,
    budget: int | None = None,
) -> dict:
    """AutoLRS for `config` in a fresh `workdir`, for `config.steps` main-trajectory steps.

    Writes `config.json`, `metrics.jsonl` (train records of the main trajectory with the
    learning rate and `gradient_evaluations` spent so far, exploration included; eval records
    at the end of every stage), `autolrs.jsonl` (one `StageRecord` per stage) and the stage
    starts' checkpoints. The config's schedule only sets the state's initial rate.

    Returns:
      {"step", "gradient_evaluations", "eval", "stages"}.
    """
    workdir = pathlib.Path(workdir)
    if (workdir / rundir.CONFIG_FILE).exists():
        raise ValueError(f"{workdir} already holds a run; AutoLRS starts in a fresh workdir")
    program = train_lib.build(config, devices, learning_rate_in_state=True)
    workdir.mkdir(parents=True, exist_ok=True)
    rundir.write_config(workdir, config)
    eval_batch = sharding.replicate(program.workload.eval_batch(), program.mesh)
    writer = metrics.Writer(workdir)
    checkpointer = checkpointing.Checkpointer(workdir, every=10**9, keep=2)

    def log(state, step, spent):
        if step % config.log_every == 0:
            lr = float(state["opt_state"].hyperparams["learning_rate"])
            writer.write({"split": "train", "step": step, "lr": lr, "gradient_evaluations": spent})
        return False

    last_eval: dict[str, float] = {}

    def after_stage(state, record):
        last_eval.clear()
        last_eval.update({k: float(v) for k, v in program.eval_fn(state, eval_batch).items()})
        step, spent = int(state["step"]), record.spent_after
        writer.write({"split": "eval", "step": step, **last_eval, "gradient_evaluations": spent})
        stages_file.write(json.dumps(dataclasses.asdict(record)) + "\n")
        stages_file.flush()
        print(
            f"stage {record.stage}: steps {record.start_step}-{step} at lr {record.chosen_lr}, "
            f"{spent} gradient evaluations, {last_eval}",
            file=sys.stderr,
        )

    trainer = Trainer(program, checkpointer, budget=budget, on_main_step=log)
    stages_file = (workdir / "autolrs.jsonl").open("w")
    try:
        state, records = run(trainer, program.init(None), settings, config.steps, after_stage)
        trainer.save(state)
    finally:
        stages_file.close()
        writer.close()
        checkpointer.close()
    return {
        "step": int(state["step"]),
        "gradient_evaluations": trainer.spent,
        "eval": last_eval,
        "stages": records,
    }


def main(argv=None) -> None:
    from absl import app, flags
    from ml_collections import config_flags

    config_flag = config_flags.DEFINE_config_file("config", None, "experiment config")
    workdir = flags.DEFINE_string("workdir", None, "a fresh run directory")
    min_lr = flags.DEFINE_float("min_lr", None, "lower end of the learning-rate range")
    max_lr = flags.DEFINE_float("max_lr", None, "upper end of the learning-rate range")
    tau = flags.DEFINE_integer("tau", Settings.tau, "training steps of the first stage")
    tau_prime = flags.DEFINE_integer("tau_prime", Settings.tau_prime, "steps of each trial")
    flags.mark_flags_as_required(["config", "workdir", "min_lr", "max_lr"])

    def run_command(_):
        settings = Settings(min_lr.value, max_lr.value, tau=tau.value, tau_prime=tau_prime.value)
        config = config_flag.value
        config.progress_bar = False
        summary = train(config, workdir.value, settings)
        print(json.dumps({k: v for k, v in summary.items() if k != "stages"}, indent=1))

    app.run(run_command, argv)


if __name__ == "__main__":
    main()
