"""Spectral-risk linear regression: the distributionally robust objective of Prospect (§9).

For a linear model `w` with per-example squared losses `ℓ_i(w) = ½ (x_iᵀw − y_i)²`,

    R(w) = max_{q ∈ P(σ)} Σ_i q_i ℓ_i(w) − ν Ω(q) + (μ/2) ‖w‖²,

with `σ` a CVaR, extremile or ESRM spectrum, `ν = shift_cost`, `Ω` the χ² (authors' code
convention) or KL penalty (`optlib.spectral.spectral_risk`), and ridge `μ = l2_reg / n` as in
the authors' code. Data (`data=`):

* "synthetic": the setting of ALGORITHMS.md §9.5, `n = 200`, `d = 10`, `x ~ N(0, I)`,
  `y = xᵀw₀ + t₃` noise, `w₀ ~ N(0, I)`, fixed by `data_seed`;
* "diabetes": scikit-learn's bundled diabetes table (442 rows, 10 features; one of the
  Prospect paper's benchmarks), features and target standardised.

The training loss of a batch is the spectral risk of the batch's own losses (spectrum of the
batch size) plus the ridge, so it is a biased estimate of `R` unless `batch_size = n`: the
bias that Prospect removes. The eval metrics are exact and need no eval batch: `eval_loss` is
`R(w)` on all `n` rows, `train_subopt = R(w) − R*` and `rel_subopt = (R − R*)/(R(0) − R*)`
against the optimum computed once in float64 by L-BFGS (`shift_cost > 0` keeps `R` smooth).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments.workloads import _common
from experiments.workloads.base import Batch, Params, Target, Workload
from optlib import spectral

DATASETS = ("synthetic", "diabetes")
SPECTRA = ("cvar", "extremile", "esrm")
PENALTIES = ("chi2", "kl")


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "name": "dro_regression",
            "seed": 0,
            "batch_size": 40,
            "data": "synthetic",
            "data_seed": 0,
            "spectrum": "cvar",
            "cvar_alpha": 0.5,
            "extremile_r": 2.0,
            "esrm_rho": 1.0,
            "penalty": "chi2",
            "shift_cost": 1.0,
            "l2_reg": 1.0,
            "target_rel_subopt": 1e-5,
        }
    )


@functools.lru_cache(maxsize=4)
def load_data(data: str, data_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features and targets (float64) of `data` ("synthetic" or "diabetes")."""
    if data == "synthetic":
        rng = np.random.default_rng([data_seed, 200, 10])
        x = rng.standard_normal((200, 10))
        w0 = rng.standard_normal(10)
        return x, x @ w0 + rng.standard_t(3, 200)
    from sklearn.datasets import load_diabetes  # imported lazily: sklearn is slow to load

    table = load_diabetes()
    x = np.asarray(table.data, np.float64)
    y = np.asarray(table.target, np.float64)
    return (x - x.mean(0)) / x.std(0), (y - y.mean()) / y.std()


def _spectrum(kind: str, n: int, values: dict) -> jax.Array:
    if kind == "cvar":
        return spectral.cvar(n, values["cvar_alpha"])
    if kind == "extremile":
        return spectral.extremile(n, values["extremile_r"])
    return spectral.esrm(n, values["esrm_rho"])


def _objective(w, x, y, spectrum, shift_cost, penalty, mu):
    losses = 0.5 * jnp.square(x @ w - y)
    risk = spectral.spectral_risk(losses, spectrum, shift_cost, penalty)
    return risk + 0.5 * mu * jnp.sum(jnp.square(w))


@functools.lru_cache(maxsize=16)
def exact_optimum(
    data: str, data_seed: int, kind: str, param: float, penalty: str, shift_cost: float, l2: float
) -> tuple[np.ndarray, float, float]:
    """(w*, R*, R(0)) in float64 by scipy's L-BFGS on the full objective."""
    import scipy.optimize

    x, y = load_data(data, data_seed)
    n = len(y)
    values = {"cvar_alpha": param, "extremile_r": param, "esrm_rho": param}
    with jax.enable_x64(True):
        spectrum = _spectrum(kind, n, values)
        objective = jax.jit(
            jax.value_and_grad(lambda w: _objective(w, x, y, spectrum, shift_cost, penalty, l2 / n))
        )

        def fun(w):
            value, grad = objective(jnp.asarray(w))
            return float(value), np.asarray(grad, np.float64)

        w0 = np.zeros(x.shape[1])
        result = scipy.optimize.minimize(
            fun,
            w0,
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": 10_000, "gtol": 1e-12, "ftol": 1e-15},
        )
        return np.asarray(result.x), float(result.fun), fun(w0)[0]


class DRORegression(Workload):
    def __init__(self, values: dict):
        self.name = "dro_regression"
        self.seed = _common.check_int(values, "seed", low=0)
        self.batch_size = _common.check_int(values, "batch_size")
        data = _common.check_choice(values, "data", DATASETS)
        data_seed = _common.check_int(values, "data_seed", low=0)
        kind = _common.check_choice(values, "spectrum", SPECTRA)
        _common.check_float(values, "cvar_alpha", 0.0, 1.0, high_open=True)
        _common.check_float(values, "extremile_r", 1.0)
        _common.check_float(values, "esrm_rho", low_open=True)
        self.penalty = _common.check_choice(values, "penalty", PENALTIES)
        self.shift_cost = _common.check_float(values, "shift_cost", low_open=True)
        l2_reg = _common.check_float(values, "l2_reg")
        target = _common.check_float(values, "target_rel_subopt", low_open=True)
        self.target = Target("rel_subopt", target, "min")

        x, y = load_data(data, data_seed)
        self.num_examples = n = len(y)
        if self.batch_size > n:
            raise ValueError(
                f"workload config 'batch_size' must be at most the {n} rows of {data!r}, "
                f"got {self.batch_size}"
            )
        self.mu = l2_reg / n
        self._x, self._y = x.astype(np.float32), y.astype(np.float32)
        self._full_spectrum = np.asarray(_spectrum(kind, n, values), np.float32)
        self._batch_spectrum = np.asarray(_spectrum(kind, self.batch_size, values), np.float32)
        param = {"cvar": "cvar_alpha", "extremile": "extremile_r", "esrm": "esrm_rho"}[kind]
        w_star, self.optimum_loss, self.initial_loss = exact_optimum(
            data, data_seed, kind, float(values[param]), self.penalty, self.shift_cost, l2_reg
        )
        self.optimum_params = {"w": w_star}

    def init_params(self, rng: jax.Array) -> Params:
        del rng  # a convex problem: start at the origin, as the authors' code does
        return {"w": jnp.zeros(self._x.shape[1], jnp.float32)}

    def loss(self, params: Params, batch: Batch) -> jax.Array:
        return _objective(
            params["w"],
            batch["x"],
            batch["y"],
            self._batch_spectrum,
            self.shift_cost,
            self.penalty,
            self.mu,
        )

    def batch(self, step: int) -> Batch:
        idx = _common.epoch_indices(self.seed, step, self.batch_size, self.num_examples)
        return {"x": self._x[idx], "y": self._y[idx]}

    def eval_batch(self) -> Batch:
        return {}  # the objective needs all n rows at once: they are held by the workload

    def eval_metrics(self, params: Params, batch: Batch) -> dict[str, jax.Array]:
        del batch
        value = _objective(
            params["w"],
            self._x,
            self._y,
            self._full_spectrum,
            self.shift_cost,
            self.penalty,
            self.mu,
        )
        subopt = value - self.optimum_loss
        return {
            "eval_loss": value,
            "train_subopt": subopt,
            "rel_subopt": subopt / (self.initial_loss - self.optimum_loss),
        }


def make(config: ml_collections.ConfigDict) -> DRORegression:
    return DRORegression(_common.resolve(config, default_config()))
