"""A flax MLP on scikit-learn's bundled digits (8x8 grey images, 10 classes, 1,797 rows).

The split is fixed (independent of `seed`): a stratified 80/20 split drawn once from
`default_rng(0)`, 1,438 training and 359 test images. Pixels are standardised with the training
rows' mean and standard deviation (+0.1, for the always-blank pixels). The model is
`depth` Dense(width)+ReLU layers and a Dense(10) head; the loss is mean softmax cross-entropy
(regularise through the optimizer's weight decay). Target: test accuracy >= 0.98.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from experiments.workloads import _common
from experiments.workloads._classification import Classification
from experiments.workloads.base import Target

NUM_CLASSES = 10


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "name": "mlp_digits",
            "seed": 0,
            "batch_size": 64,
            "width": 256,
            "depth": 2,
            "target_accuracy": 0.98,
        }
    )


@functools.lru_cache(maxsize=1)
def load_data() -> dict[str, np.ndarray]:
    """The fixed stratified train/test split of the digits table."""
    from sklearn.datasets import load_digits  # imported lazily: sklearn is slow to load

    data = load_digits()
    x = (np.asarray(data.data, np.float32) / 16.0).astype(np.float32)
    y = np.asarray(data.target, np.int32)
    rng = np.random.default_rng(0)
    test = []
    for label in range(NUM_CLASSES):
        rows = np.flatnonzero(y == label)
        test.append(rng.permutation(rows)[: round(0.2 * len(rows))])
    test = np.sort(np.concatenate(test))
    train = np.setdiff1d(np.arange(len(y)), test)
    # Standardise with training statistics; the +0.1 keeps always-blank border pixels finite.
    mean, std = x[train].mean(0), x[train].std(0) + 0.1
    x = ((x - mean) / std).astype(np.float32)
    return {"x": x[train], "y": y[train], "x_test": x[test], "y_test": y[test]}


class MLP(nn.Module):
    width: int
    depth: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for _ in range(self.depth):
            x = nn.relu(nn.Dense(self.width)(x))
        return nn.Dense(NUM_CLASSES)(x)


class MLPDigits(Classification):
    def __init__(self, values: dict):
        self.name = "mlp_digits"
        self.seed = _common.check_int(values, "seed", low=0)
        self.batch_size = _common.check_int(values, "batch_size")
        width = _common.check_int(values, "width")
        depth = _common.check_int(values, "depth", low=0)
        target = _common.check_float(values, "target_accuracy", 0.0, 1.0)
        self.target = Target("eval_accuracy", target, "max")
        self.model = MLP(width, depth)
        self.data = load_data()


def make(config: ml_collections.ConfigDict) -> MLPDigits:
    return MLPDigits(_common.resolve(config, default_config()))
