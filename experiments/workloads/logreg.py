"""L2-regularised logistic regression on scikit-learn's bundled breast-cancer data.

569 rows, 30 features standardised to zero mean and unit variance (statistics over all rows),
labels `s ∈ {−1, +1}`. The objective is

    F(w, b) = mean_i log(1 + exp(−s_i (x_iᵀw + b))) + (l2/2) ‖w‖²

(the bias is not regularised). `F` is strongly convex in `w`; its exact minimiser is computed
once in float64 by damped Newton and exposed as `optimum_params` / `optimum_loss`. The eval set
is the whole training set, and the target is `train_subopt = F(w, b) − F* <= 5e-3`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments.workloads import _common
from experiments.workloads.base import Batch, Params, Target, Workload


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "name": "logreg",
            "seed": 0,
            "batch_size": 32,
            "l2": 1e-3,
            "target_subopt": 5e-3,
        }
    )


@functools.lru_cache(maxsize=1)
def load_data() -> tuple[np.ndarray, np.ndarray]:
    """Standardised features (float64) and ±1 labels of the breast-cancer table."""
    from sklearn.datasets import load_breast_cancer  # imported lazily: sklearn is slow to load

    data = load_breast_cancer()
    x = np.asarray(data.data, np.float64)
    x = (x - x.mean(0)) / x.std(0)
    s = 2.0 * np.asarray(data.target, np.float64) - 1.0
    return x, s


def _objective(x, s, l2, w, b):
    margin = s * (x @ w + b)
    return np.mean(np.logaddexp(0.0, -margin)) + 0.5 * l2 * w @ w


@functools.lru_cache(maxsize=8)
def exact_optimum(l2: float) -> tuple[np.ndarray, float, float]:
    """(w*, b*, F*) in float64 by Newton's method with backtracking, to a gradient norm < 1e-12."""
    x, s = load_data()
    n, d = x.shape
    design = np.concatenate([x, np.ones((n, 1))], axis=1)
    reg = np.full(d + 1, l2)
    reg[-1] = 0.0
    theta = np.zeros(d + 1)
    value = _objective(x, s, l2, theta[:-1], theta[-1])
    for _ in range(100):
        margin = s * (design @ theta)
        p = 0.5 * (1.0 - np.tanh(0.5 * margin))  # sigmoid(−margin), stable for any sign
        grad = design.T @ (-s * p) / n + reg * theta
        if np.linalg.norm(grad) < 1e-12:
            break
        hess = (design.T * (p * (1.0 - p))) @ design / n + np.diag(reg)
        direction = np.linalg.solve(hess, grad)
        t = 1.0
        while True:
            candidate = theta - t * direction
            new_value = _objective(x, s, l2, candidate[:-1], candidate[-1])
            if new_value <= value - 1e-4 * t * grad @ direction or t < 1e-10:
                break
            t *= 0.5
        theta, value = candidate, new_value
    return theta[:-1], float(theta[-1]), float(value)


class LogReg(Workload):
    def __init__(self, values: dict):
        self.name = "logreg"
        self.seed = _common.check_int(values, "seed", low=0)
        self.batch_size = _common.check_int(values, "batch_size")
        self.l2 = _common.check_float(values, "l2", low_open=True)
        target = _common.check_float(values, "target_subopt", low_open=True)
        self.target = Target("train_subopt", target, "min")
        x, s = load_data()
        self._x = x.astype(np.float32)
        self._s = s.astype(np.float32)
        w, b, value = exact_optimum(self.l2)
        self.optimum_params = {"w": w, "b": b}
        self.optimum_loss = value

    @property
    def num_examples(self) -> int:
        return len(self._s)

    def init_params(self, rng: jax.Array) -> Params:
        del rng  # a convex problem: start at the origin
        return {"w": jnp.zeros(self._x.shape[1], jnp.float32), "b": jnp.zeros((), jnp.float32)}

    def _losses(self, params: Params, batch: Batch) -> jax.Array:
        margin = batch["s"] * (batch["x"] @ params["w"] + params["b"])
        return jnp.logaddexp(0.0, -margin)

    def _ridge(self, params: Params) -> jax.Array:
        return 0.5 * self.l2 * jnp.sum(jnp.square(params["w"]))

    def loss(self, params: Params, batch: Batch) -> jax.Array:
        return jnp.mean(self._losses(params, batch)) + self._ridge(params)

    def batch(self, step: int) -> Batch:
        idx = _common.epoch_indices(self.seed, step, self.batch_size, self.num_examples)
        return {"x": self._x[idx], "s": self._s[idx]}

    def eval_batch(self) -> Batch:
        return _common.pad_eval({"x": self._x, "s": self._s})

    def eval_metrics(self, params: Params, batch: Batch) -> dict[str, jax.Array]:
        weight = batch["weight"]
        value = _common.weighted_mean(self._losses(params, batch), weight) + self._ridge(params)
        logits = batch["x"] @ params["w"] + params["b"]
        correct = (jnp.sign(logits) == batch["s"]).astype(jnp.float32)
        return {
            "eval_loss": value,
            "train_subopt": value - self.optimum_loss,
            "eval_accuracy": _common.weighted_mean(correct, weight),
        }


def make(config: ml_collections.ConfigDict) -> LogReg:
    return LogReg(_common.resolve(config, default_config()))
