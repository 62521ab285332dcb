"""Helpers shared by the workloads: config checks, seeded data order, padded eval sets."""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import PartitionSpec as P

# Eval sets are padded to a multiple of this many rows (padding rows carry weight 0), so a loop
# can shard the eval batch over a `data` mesh axis of any size that divides it.
EVAL_PAD_MULTIPLE = 128


def resolve(config: ml_collections.ConfigDict, defaults: ml_collections.ConfigDict) -> dict:
    """The workload block as a plain dict: `defaults` overridden by `config`.

    Raises:
      ValueError: if `config` has a key the workload does not know (a typo would otherwise be
        silently ignored).
    """
    unknown = sorted(set(config.keys()) - set(defaults.keys()))
    if unknown:
        raise ValueError(
            f"workload {defaults.name!r} got unknown config keys {unknown}; "
            f"known keys: {sorted(defaults.keys())}"
        )
    values = defaults.to_dict()
    values.update(config.to_dict())
    return values


def check_int(values: dict, key: str, low: int = 1) -> int:
    value = values[key]
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"workload config {key!r} must be an integer >= {low}, got {value!r}")
    return int(value)


def check_float(
    values: dict,
    key: str,
    low: float = 0.0,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    value = values[key]
    ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = math.isfinite(value) and (value > low if low_open else value >= low)
        ok = ok and (value < high if high_open else value <= high)
    if not ok:
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        raise ValueError(
            f"workload config {key!r} must be a finite number in {lo}{low}, {high}{hi}, "
            f"got {values[key]!r}"
        )
    return value


def check_choice(values: dict, key: str, choices: tuple[str, ...]) -> str:
    value = values[key]
    if value not in choices:
        raise ValueError(f"workload config {key!r} must be one of {list(choices)}, got {value!r}")
    return value


@functools.lru_cache(maxsize=8)
def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def epoch_indices(seed: int, step: int, batch_size: int, n: int) -> np.ndarray:
    """Row indices of the batch of `step` when each epoch visits `n` rows in a seeded order.

    The stream is epoch 0's permutation, then epoch 1's, ...; each epoch's permutation comes
    from `default_rng([seed, epoch])`, so the batch is a pure function of (seed, step) and a
    batch that straddles two epochs takes the tail of one and the head of the next.
    """
    positions = step * batch_size + np.arange(batch_size, dtype=np.int64)
    epochs, offsets = np.divmod(positions, n)
    out = np.empty(batch_size, dtype=np.int64)
    for epoch in np.unique(epochs):
        sel = epochs == epoch
        out[sel] = _permutation(seed, int(epoch), n)[offsets[sel]]
    return out


def step_rng(seed: int, step: int) -> np.random.Generator:
    """A generator that depends only on (seed, step)."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return np.random.default_rng([seed, step])


def pad_eval(arrays: dict[str, np.ndarray], multiple: int = EVAL_PAD_MULTIPLE) -> dict[str, Any]:
    """Pads every array's leading axis to a multiple of `multiple` and adds a 0/1 `weight`."""
    n = len(next(iter(arrays.values())))
    total = -(-n // multiple) * multiple
    out = {}
    for key, array in arrays.items():
        pad = [(0, total - n)] + [(0, 0)] * (array.ndim - 1)
        out[key] = np.pad(array, pad)
    weight = np.zeros(total, np.float32)
    weight[:n] = 1.0
    out["weight"] = weight
    return out


def weighted_mean(values: jnp.ndarray, weight: jnp.ndarray) -> jnp.ndarray:
    """Mean of `values` over the rows with weight 1 (the eval set's real rows)."""
    return jnp.sum(values * weight) / jnp.sum(weight)


def gather_whole(w: jax.Array) -> jax.Array:
    """`w` (a parameter) whole on every device where it is used: FSDP's all-gather of a weight.

    For weights whose FSDP split (experiments/sharding.py) XLA's partitioner would otherwise
    carry into the activations, e.g. an embedding table split over its features: the lookup
    then yields activations split by feature, which clash with the batch split of everything
    else and get gathered whole ("Involuntary full rematerialization" warnings). A no-op when
    no mesh is set while tracing (`experiments.train` traces its step under its mesh).
    """
    if jax.sharding.get_abstract_mesh().empty:
        return w
    return jax.lax.with_sharding_constraint(w, P())
