"""What a workload is: a (model, data, loss, eval metric, target) bundle the training loop runs.

A workload is built from its `ml_collections.ConfigDict` (the `workload` block of an experiment
config) and exposes pure functions only, so the loop can trace them under `jax.eval_shape`,
`jax.jit` and shardings without knowing what model or data lies behind them.

Data order is a pure function of `(seed, step)`: `batch(step)` returns the same examples for the
same step in every process and after every restart, which is what makes resume and WSD
branching exact.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

import jax
import numpy as np

Params = Any
Batch = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Target:
    """The value of `metric` (a key of `eval_metrics`) that counts as solving the workload."""

    metric: str
    value: float
    mode: str = "min"  # "min": reached when metric <= value; "max": when metric >= value.

    def reached(self, metrics: dict[str, float]) -> bool:
        got = float(metrics[self.metric])
        return got <= self.value if self.mode == "min" else got >= self.value


class Workload(abc.ABC):
    """Base class of every workload. Subclasses set `name`, `batch_size` and `target`."""

    name: str
    batch_size: int
    target: Target

    @abc.abstractmethod
    def init_params(self, rng: jax.Array) -> Params:
        """Initial params from a PRNG key; traceable (the loop calls it under eval_shape/jit)."""

    @abc.abstractmethod
    def loss(self, params: Params, batch: Batch) -> jax.Array:
        """Mean training loss (with any regulariser) of `batch`: a float32 scalar; jittable."""

    @abc.abstractmethod
    def batch(self, step: int) -> Batch:
        """The training batch of `step` (host numpy, leading axis `batch_size`).

        A pure function of the workload's seed and `step`.
        """

    def batch_rows(self, step: int, rows: np.ndarray) -> Batch:
        """Rows `rows` (sorted indices into the batch) of the batch of `step`.

        What one process of a multi-process run places on its own devices. The default slices
        `batch(step)`; workloads that read from files override it to read only these rows.
        """
        return {key: np.asarray(value)[rows] for key, value in self.batch(step).items()}

    @abc.abstractmethod
    def eval_batch(self) -> Batch:
        """The fixed evaluation set (host numpy), small enough to evaluate in one call."""

    @abc.abstractmethod
    def eval_metrics(self, params: Params, batch: Batch) -> dict[str, jax.Array]:
        """Scalar metrics on the evaluation set; jittable. Always includes "eval_loss"."""

    def examples_per_step(self) -> int:
        """Compute unit for reports: examples (sequences, rows) consumed per step."""
        return self.batch_size
