"""Gradient accumulation: k microbatches give the update of the whole batch, for every
registered optimizer (MoMo's loss and SAM's gradient function included), sharded or not."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optlib.registry
from experiments import sharding, train
from tests.test_experiments import mlp_config

BATCH, DIM = 16, 3


def loss_fn(params, batch):
    """A least-squares loss with a curvature that depends on the example: a mean over rows."""
    residual = batch["x"] @ params["w"] + params["b"] - batch["y"]
    return jnp.mean(residual**2 * (1.0 + batch["x"][:, 0] ** 2)) + 0.1 * jnp.sum(params["w"] ** 4)


PARAMS = {"w": jnp.linspace(-0.5, 0.5, DIM), "b": jnp.asarray(0.2)}
_rng = np.random.default_rng(0)
DATA = {
    "x": jnp.asarray(_rng.normal(size=(BATCH, DIM)), jnp.float32),
    "y": jnp.asarray(_rng.normal(size=BATCH), jnp.float32),
}


def two_updates(name, microbatches):
    entry = optlib.registry.get(name)
    opt = entry.build(entry.base_lr * 0.1)
    value_and_grad = train.split_value_and_grad(loss_fn, microbatches)

    @jax.jit
    def step(params, state):
        loss, grads = value_and_grad(params, DATA)[:2]
        grad_fn = lambda p: value_and_grad(p, DATA).grads
        extra = entry.update_kwargs(loss=loss, grad_fn=grad_fn)
        updates, state = opt.update(grads, state, params, **extra)
        return optax.apply_updates(params, updates), state, loss

    params, state = PARAMS, opt.init(PARAMS)
    losses = []
    for _ in range(2):
        params, state, loss = step(params, state)
        losses.append(loss)
    return params, np.asarray(losses)


@pytest.mark.parametrize("name", optlib.registry.names())
def test_microbatches_equal_the_whole_batch(name):
    whole, whole_losses = two_updates(name, 1)
    split, split_losses = two_updates(name, 4)
    np.testing.assert_allclose(split_losses, whole_losses, rtol=1e-6)
    chex.assert_trees_all_close(split, whole, rtol=2e-5, atol=1e-6)


def test_microbatches_in_the_sharded_loop(tmp_path):
    whole = train.train(mlp_config(steps=3), tmp_path / "one", return_state=True)
    config = mlp_config(steps=3)
    config.microbatches = 4
    config.mesh.data, config.mesh.fsdp = 2, 4
    split = train.train(config, tmp_path / "four", return_state=True)
    chex.assert_trees_all_close(split["state"], whole["state"], rtol=2e-5, atol=2e-6)


def test_batch_must_divide_into_microbatches_and_devices():
    mesh = sharding.make_mesh({"data": 8, "fsdp": 1})
    with pytest.raises(ValueError, match="batch_size=32 must be divisible by microbatches=3"):
        sharding.check_batch_size(32, mesh, 3)
    with pytest.raises(ValueError, match="32 / microbatches=8 = 4 must be divisible by the 8"):
        sharding.check_batch_size(32, mesh, 8)
