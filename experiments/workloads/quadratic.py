"""An ill-conditioned quadratic with noisy gradients: random-design least squares.

The population objective is `f(x) = ½ (x − x*)ᵀ A (x − x*)` with `A = Q diag(λ) Qᵀ`, the
eigenvalues `λ` log-spaced over `[min_eigenvalue, 1]` (condition number `1/min_eigenvalue`) and
`Q`, `x* ~ N(0, I)` fixed by `instance_seed`. Training batches are rows `a = Q diag(√λ) z`,
`z ~ N(0, I)`, so `E[a aᵀ] = A`, with labels `y = aᵀx* + noise·ε`; the batch loss is
`½ mean_b (a_bᵀx − y_b)²`, whose expectation is `f(x) + ½ noise²`. With `noise=0` every example
is solved by `x*` (interpolation) and SGD converges to it; with `noise>0` a constant step size
stalls at a noise floor that a decaying schedule removes.

Eval is exact (no data): `eval_loss = f(x)`, the excess population loss, 0 at the optimum.
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
            "name": "quadratic",
            "seed": 0,
            "batch_size": 32,
            "dim": 100,
            "min_eigenvalue": 1e-3,
            "noise": 0.01,
            "instance_seed": 0,
            "target_loss": 1e-3,
        }
    )


@functools.lru_cache(maxsize=4)
def _instance(dim: int, min_eigenvalue: float, instance_seed: int):
    rng = np.random.default_rng([instance_seed, dim])
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    eigenvalues = np.logspace(np.log10(min_eigenvalue), 0.0, dim)
    x_star = rng.standard_normal(dim)
    return q, eigenvalues, x_star


class Quadratic(Workload):
    def __init__(self, values: dict):
        self.name = "quadratic"
        self.seed = _common.check_int(values, "seed", low=0)
        self.batch_size = _common.check_int(values, "batch_size")
        self.dim = _common.check_int(values, "dim")
        self.min_eigenvalue = _common.check_float(values, "min_eigenvalue", 0.0, 1.0, low_open=True)
        self.noise = _common.check_float(values, "noise")
        instance_seed = _common.check_int(values, "instance_seed", low=0)
        target = _common.check_float(values, "target_loss", low_open=True)
        self.target = Target("eval_loss", target, "min")
        q, eigenvalues, x_star = _instance(self.dim, self.min_eigenvalue, instance_seed)
        self.x_star = x_star.astype(np.float32)
        self.eigenvalues = eigenvalues
        # Rows are sampled as z ⊙ √λ times Qᵀ.
        self._row_map = (np.sqrt(eigenvalues)[:, None] * q.T).astype(np.float32)
        self._hessian = ((q * eigenvalues) @ q.T).astype(np.float32)

    def init_params(self, rng: jax.Array) -> Params:
        del rng  # a fixed start (the origin) makes runs comparable across seeds
        return {"x": jnp.zeros((self.dim,), jnp.float32)}

    def loss(self, params: Params, batch: Batch) -> jax.Array:
        residual = batch["a"] @ params["x"] - batch["y"]
        return 0.5 * jnp.mean(jnp.square(residual))

    def batch(self, step: int) -> Batch:
        rng = _common.step_rng(self.seed, step)
        z = rng.standard_normal((self.batch_size, self.dim), dtype=np.float32)
        a = z @ self._row_map
        eps = rng.standard_normal(self.batch_size, dtype=np.float32)
        return {"a": a, "y": a @ self.x_star + np.float32(self.noise) * eps}

    def eval_batch(self) -> Batch:
        return {}  # the metric is exact: it needs no data

    def eval_metrics(self, params: Params, batch: Batch) -> dict[str, jax.Array]:
        del batch
        error = params["x"] - self.x_star
        excess = 0.5 * error @ (jnp.asarray(self._hessian) @ error)
        return {"eval_loss": excess, "distance": jnp.linalg.norm(error)}


def make(config: ml_collections.ConfigDict) -> Quadratic:
    return Quadratic(_common.resolve(config, default_config()))
