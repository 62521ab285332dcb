"""Image-style classification workloads: a flax model, in-memory arrays, cross-entropy.

Subclasses set `name`, `seed`, `batch_size`, `target`, `model` (a flax module mapping a batch
of inputs to logits) and `data` (dict of numpy arrays "x", "y", "x_test", "y_test").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from experiments.workloads import _common
from experiments.workloads.base import Batch, Params, Workload


class Classification(Workload):
    model: object
    data: dict

    def init_params(self, rng: jax.Array) -> Params:
        return self.model.init(rng, jnp.zeros((1, *self.data["x"].shape[1:])))["params"]

    def loss(self, params: Params, batch: Batch) -> jax.Array:
        logits = self.model.apply({"params": params}, batch["x"])
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]))

    def batch(self, step: int) -> Batch:
        idx = _common.epoch_indices(self.seed, step, self.batch_size, len(self.data["y"]))
        return {"x": self.data["x"][idx], "y": self.data["y"][idx]}

    def eval_batch(self) -> Batch:
        return _common.pad_eval({"x": self.data["x_test"], "y": self.data["y_test"]})

    def eval_metrics(self, params: Params, batch: Batch) -> dict[str, jax.Array]:
        logits = self.model.apply({"params": params}, batch["x"])
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"])
        correct = (jnp.argmax(logits, -1) == batch["y"]).astype(jnp.float32)
        return {
            "eval_loss": _common.weighted_mean(losses, batch["weight"]),
            "eval_accuracy": _common.weighted_mean(correct, batch["weight"]),
        }
