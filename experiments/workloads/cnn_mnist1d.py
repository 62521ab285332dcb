"""A small flax CNN on MNIST-1D (Greydanus 2020), generated offline by the `mnist1d` package.

MNIST-1D turns ten 1-D digit templates into 40-sample signals with random padding, translation,
scaling, shear and correlated plus i.i.d. noise. `mnist1d.data.make_dataset` generates it from
its own arguments (seed 42 by default) with no download; we call it once per process with
`num_samples` rows (default 5,000: 4,000 train, 1,000 test, as in the paper) and cache the
arrays. The package seeds NumPy's and Python's global generators; we restore both afterwards.

Model: three Conv1D layers (`channels` filters, strides 2, 2, 2... as configured by `kernel`,
ReLU), flatten, Dense(10). Loss: mean softmax cross-entropy. Target: test accuracy >= 0.935.
"""

from __future__ import annotations

import functools
import random

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
            "name": "cnn_mnist1d",
            "seed": 0,
            "batch_size": 128,
            "channels": 32,
            "num_samples": 10000,
            "target_accuracy": 0.935,
        }
    )


@functools.lru_cache(maxsize=2)
def load_data(num_samples: int = 5000) -> dict[str, np.ndarray]:
    """MNIST-1D with the package's default arguments except `num_samples`; float32/int32."""
    from mnist1d.data import get_dataset_args, make_dataset  # lazy: imports matplotlib

    args = get_dataset_args()
    args.num_samples = num_samples
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {
        "x": np.asarray(data["x"], np.float32),
        "y": np.asarray(data["y"], np.int32),
        "x_test": np.asarray(data["x_test"], np.float32),
        "y_test": np.asarray(data["y_test"], np.int32),
    }


class CNN(nn.Module):
    channels: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x[..., None]  # (batch, length) -> (batch, length, 1 channel)
        x = nn.relu(nn.Conv(self.channels, (5,), strides=(2,), padding=1)(x))
        x = nn.relu(nn.Conv(self.channels, (3,), strides=(2,), padding=1)(x))
        x = nn.relu(nn.Conv(self.channels, (3,), strides=(2,), padding=1)(x))
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(NUM_CLASSES)(x)


class CNNMnist1D(Classification):
    def __init__(self, values: dict):
        self.name = "cnn_mnist1d"
        self.seed = _common.check_int(values, "seed", low=0)
        self.batch_size = _common.check_int(values, "batch_size")
        channels = _common.check_int(values, "channels")
        num_samples = _common.check_int(values, "num_samples", low=100)
        target = _common.check_float(values, "target_accuracy", 0.0, 1.0)
        self.target = Target("eval_accuracy", target, "max")
        self.model = CNN(channels)
        self.data = load_data(num_samples)


def make(config: ml_collections.ConfigDict) -> CNNMnist1D:
    return CNNMnist1D(_common.resolve(config, default_config()))
