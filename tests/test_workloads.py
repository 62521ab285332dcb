"""Workloads: registry, configs, data-order determinism, training steps, eval, sharding."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import experiments.workloads as workloads
from experiments.workloads import _common

NAMES = workloads.names()
# Small overrides keep the file fast; everything else runs at its default.
OVERRIDES = {"lm": {"batch_size": 8, "eval_windows": 16}, "rosenbrock": {"noise": 0.1}}
LEARNING_RATES = {"lm": 3e-3}
_CACHE: dict = {}


def build(name: str, **overrides):
    config = workloads.default_config(name)
    config.update({**OVERRIDES.get(name, {}), **overrides})
    return workloads.make(config)


def cached(name: str):
    """(workload, initial params) built once per workload for the whole file."""
    if name not in _CACHE:
        workload = build(name)
        _CACHE[name] = (workload, jax.jit(workload.init_params)(jax.random.key(0)))
    return _CACHE[name]


def test_registry_names_and_default_configs():
    assert NAMES == sorted(workloads.WORKLOADS)
    assert {"quadratic", "rosenbrock", "logreg", "mlp_digits", "cnn_mnist1d", "lm"} <= set(NAMES)
    assert "dro_regression" in NAMES
    for name in NAMES:
        config = workloads.default_config(name)
        assert isinstance(config, ml_collections.ConfigDict)
        assert config.name == name
        assert {"seed", "batch_size"} <= set(config.keys())


@pytest.mark.parametrize("name", NAMES)
def test_steps_decrease_the_loss(name):
    workload, params = cached(name)
    opt = optax.adam(LEARNING_RATES.get(name, 1e-2))
    state = opt.init(params)

    @jax.jit
    def step(params, state, batch):
        loss, grads = jax.value_and_grad(workload.loss)(params, batch)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    batch = workload.batch(0)
    losses = []
    for _ in range(3):
        params, state, loss = step(params, state, batch)
        losses.append(float(loss))
    assert all(np.isfinite(losses)), losses
    assert losses[-1] < losses[0], losses
    assert jnp.asarray(loss).dtype == jnp.float32


@pytest.mark.parametrize("name", NAMES)
def test_batch_is_a_pure_function_of_seed_and_step(name):
    workload, _ = cached(name)
    again = build(name)  # a fresh instance: no hidden iterator state
    first, same, other = workload.batch(5), again.batch(5), workload.batch(6)
    assert first.keys() == same.keys() == other.keys()
    for key in first:
        assert first[key].shape[0] == workload.batch_size
        np.testing.assert_array_equal(first[key], same[key])
    assert any(not np.array_equal(first[k], other[k]) for k in first)
    reseeded = build(name, seed=1).batch(5)
    assert any(not np.array_equal(first[k], reseeded[k]) for k in first)


@pytest.mark.parametrize("name", NAMES)
def test_eval_metrics_include_eval_loss_and_the_target(name):
    workload, params = cached(name)
    metrics = jax.jit(workload.eval_metrics)(params, workload.eval_batch())
    assert {"eval_loss", workload.target.metric} <= set(metrics)
    for key, value in metrics.items():
        assert jnp.shape(value) == (), key
        assert np.isfinite(float(value)), key
    assert not workload.target.reached(metrics)  # nobody solves a workload at init


@pytest.mark.parametrize("name", NAMES)
def test_init_params_under_eval_shape(name):
    workload, params = cached(name)
    abstract = jax.eval_shape(workload.init_params, jax.random.key(0))
    assert jax.tree.structure(abstract) == jax.tree.structure(params)
    for a, p in zip(jax.tree.leaves(abstract), jax.tree.leaves(params), strict=True):
        assert a.shape == p.shape and a.dtype == p.dtype == jnp.float32


@pytest.mark.parametrize("name", NAMES)
def test_loss_with_a_batch_sharded_over_8_devices(name):
    workload, params = cached(name)
    batch = workload.batch(0)
    mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
    sharded = jax.device_put(batch, NamedSharding(mesh, PartitionSpec("data")))
    replicated = jax.device_put(params, NamedSharding(mesh, PartitionSpec()))
    got = jax.jit(workload.loss)(replicated, sharded)
    want = jax.jit(workload.loss)(params, batch)
    np.testing.assert_allclose(float(got), float(want), rtol=1e-5)


def test_eval_sets_are_padded_with_zero_weights():
    workload, params = cached("logreg")
    batch = workload.eval_batch()
    assert len(batch["weight"]) % _common.EVAL_PAD_MULTIPLE == 0
    assert batch["weight"].sum() == workload.num_examples == 569
    # Padding rows must not move the metric: compare with the unpadded full-data loss.
    full = {"x": batch["x"][:569], "s": batch["s"][:569], "weight": np.ones(569, np.float32)}
    np.testing.assert_allclose(
        float(workload.eval_metrics(params, batch)["eval_loss"]),
        float(workload.eval_metrics(params, full)["eval_loss"]),
        rtol=1e-6,
    )


def test_epoch_indices_visit_every_row_once_per_epoch():
    n, batch = 10, 4
    stream = np.concatenate([_common.epoch_indices(3, s, batch, n) for s in range(5)])
    assert sorted(stream[:10]) == list(range(10))  # epoch 0, across a straddling batch
    assert sorted(stream[10:20]) == list(range(10))  # epoch 1
    assert not np.array_equal(stream[:10], stream[10:20])  # a fresh order each epoch


@pytest.mark.parametrize("name", ["logreg", "dro_regression"])
def test_exact_optimum_has_zero_suboptimality(name):
    workload, params = cached(name)
    at_optimum = jax.tree.map(jnp.float32, workload.optimum_params)
    batch = workload.eval_batch()
    metrics = jax.jit(workload.eval_metrics)(at_optimum, batch)
    key = "train_subopt"
    assert abs(float(metrics[key])) < 1e-5
    # A small move away from the optimum is worse (it is the minimiser, not just a point).
    moved = jax.tree.map(lambda p: p + 0.05, at_optimum)
    assert float(jax.jit(workload.eval_metrics)(moved, batch)[key]) > 1e-5
    # The float64 gradient at the optimum vanishes for logreg (Newton's stopping rule).
    if name == "logreg":
        x, s = workloads.logreg.load_data()
        w, b = workload.optimum_params["w"], workload.optimum_params["b"]
        p = 1.0 / (1.0 + np.exp(s * (x @ w + b)))
        grad_w = x.T @ (-s * p) / len(s) + workload.l2 * w
        assert np.linalg.norm(grad_w) < 1e-9


def test_dro_batch_loss_is_the_full_objective_at_full_batch():
    workload = build("dro_regression", batch_size=200)
    params = {"w": jnp.linspace(-1.0, 1.0, 10)}
    full = workload.eval_metrics(params, {})["eval_loss"]
    for step in (0, 3):  # any order of all rows gives the same spectral risk
        np.testing.assert_allclose(
            float(workload.loss(params, workload.batch(step))), float(full), rtol=1e-5
        )


@pytest.mark.parametrize(
    "name, key, value",
    [
        ("quadratic", "batch_size", 0),
        ("quadratic", "min_eigenvalue", 2.0),
        ("rosenbrock", "dim", 1),
        ("logreg", "l2", -1.0),
        ("mlp_digits", "width", 0),
        ("cnn_mnist1d", "channels", -3),
        ("lm", "num_heads", 3),
        ("lm", "batch_size", -1),
        ("dro_regression", "data", "nope"),
        ("dro_regression", "spectrum", "median"),
        ("dro_regression", "batch_size", 1000),
        ("dro_regression", "shift_cost", 0.0),
    ],
)
def test_bad_config_values_name_the_key(name, key, value):
    config = workloads.default_config(name)
    config.unlock()
    config[key] = value
    with pytest.raises(ValueError, match=key):
        workloads.make(config)


def test_unknown_names_and_keys():
    with pytest.raises(ValueError, match="choose one of"):
        workloads.default_config("imagenet")
    config = workloads.default_config("quadratic")
    config.name = "imagenet"
    with pytest.raises(ValueError, match="quadratic"):
        workloads.make(config)
    config = workloads.default_config("quadratic")
    config.unlock()
    config.batchsize = 4
    with pytest.raises(ValueError, match="batchsize"):
        workloads.make(config)


def test_mnist1d_generation_leaves_the_global_generators_alone():
    import random

    np.random.seed(123)
    random.seed(123)
    np_state, py_state = np.random.get_state(), random.getstate()
    data = workloads.cnn_mnist1d.load_data.__wrapped__(200)  # uncached, small
    assert data["x"].shape == (160, 40) and data["x_test"].shape == (40, 40)
    after = np.random.get_state()
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1])
    assert random.getstate() == py_state
