"""The Rosenbrock function, 2-D or the multi-dimensional chain, with optional gradient noise.

`f(x) = Σ_{i<d} [(1 − x_i)² + 100 (x_{i+1} − x_i²)²]`, minimised at `x = 1` with `f = 0`,
started at the classic `(−1.2, 1, −1.2, 1, ...)`. The batch loss adds `noise · mean_b ξ_bᵀx`
with `ξ ~ N(0, I)`: zero in expectation, so it perturbs the gradient by
`noise · mean_b ξ_b` and leaves the optimum alone (`noise=0`, the default, is deterministic).
For `dim >= 4` the chain also has a local minimum near `x_1 = −1`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments.workloads import _common
from experiments.workloads.base import Batch, Params, Target, Workload


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "name": "rosenbrock",
            "seed": 0,
            "batch_size": 8,
            "dim": 2,
            "noise": 0.0,
            "target_loss": 1e-4,
        }
    )


def rosenbrock(x: jax.Array) -> jax.Array:
    return jnp.sum(jnp.square(1.0 - x[:-1]) + 100.0 * jnp.square(x[1:] - jnp.square(x[:-1])))


class Rosenbrock(Workload):
    def __init__(self, values: dict):
        self.name = "rosenbrock"
        self.seed = _common.check_int(values, "seed", low=0)
        self.batch_size = _common.check_int(values, "batch_size")
        self.dim = _common.check_int(values, "dim", low=2)
        self.noise = _common.check_float(values, "noise")
        self.target = Target(
            "eval_loss", _common.check_float(values, "target_loss", low_open=True), "min"
        )

    def init_params(self, rng: jax.Array) -> Params:
        del rng  # the classic fixed start
        start = np.where(np.arange(self.dim) % 2 == 0, -1.2, 1.0).astype(np.float32)
        return {"x": jnp.asarray(start)}

    def loss(self, params: Params, batch: Batch) -> jax.Array:
        x = params["x"]
        return rosenbrock(x) + jnp.mean(batch["xi"] @ x)

    def batch(self, step: int) -> Batch:
        rng = _common.step_rng(self.seed, step)
        xi = rng.standard_normal((self.batch_size, self.dim), dtype=np.float32)
        return {"xi": np.float32(self.noise) * xi}

    def eval_batch(self) -> Batch:
        return {}  # the metric is exact: it needs no data

    def eval_metrics(self, params: Params, batch: Batch) -> dict[str, jax.Array]:
        del batch
        x = params["x"]
        return {"eval_loss": rosenbrock(x), "distance": jnp.linalg.norm(x - 1.0)}


def make(config: ml_collections.ConfigDict) -> Rosenbrock:
    return Rosenbrock(_common.resolve(config, default_config()))
