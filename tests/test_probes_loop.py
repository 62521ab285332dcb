"""The probes in the training loop (`config.probes`): the noise scale from microbatches and from
data shards, the sharpness on a fixed batch against a dense Hessian, per-layer ratios, sharded
equal to unsharded, resumption, and bad input failing before the run starts."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from experiments import metrics, probes, train, workloads
from tests.test_experiments import mlp_config, quadratic_config

NOISE_KEYS = ("noise_scale", "g2", "trace_sigma")


def small_mlp(steps, width=32, **overrides):
    """The digits MLP, one hidden layer: its 64 x width kernel (>= 1024 entries) is FSDP-split."""
    config = mlp_config(steps, **overrides)
    config.workload.width, config.workload.depth = width, 1
    config.log_every = 1
    config.eval_every = 0
    return config


def train_records(config, workdir, devices=None, mesh=(1, 1), **kwargs):
    config.mesh.data, config.mesh.fsdp = mesh
    n = mesh[0] * mesh[1]
    summary = train.train(config, workdir, devices=(devices or jax.devices())[:n], **kwargs)
    records = [r for r in metrics.read_metrics(workdir) if r["split"] == "train"]
    return summary, records


def column(records, key):
    return np.array([r[key] for r in records if key in r])


def test_noise_scale_and_layer_ratios_in_the_loop(tmp_path):
    """Microbatches on one device equal microbatches on a 2x4 mesh; the data-shard source
    agrees with them within noise; the ratios at the first update are lr |g_l| / |w_l|."""
    config = small_mlp(steps=30)
    config.microbatches = 4
    config.probes.noise_scale = True
    config.probes.layer_ratios = True
    _, single = train_records(config, tmp_path / "one")
    for key in NOISE_KEYS:
        assert len(column(single, key)) == 30 and np.all(np.isfinite(column(single, key))), key

    _, sharded = train_records(config, tmp_path / "mesh", mesh=(2, 4))
    ratio_keys = [k for k in single[-1] if k.startswith(train.RATIO_PREFIX)]
    for key in [*NOISE_KEYS, *ratio_keys]:
        np.testing.assert_allclose(column(sharded, key), column(single, key), rtol=2e-4)

    # Data shards instead of microbatches: shards of 8 contiguous examples instead of
    # microbatches of 8 strided ones, so the per-step estimates differ by sampling noise and
    # the averages over 30 steps agree within it. Over workload seeds 0-9 the ratio of the two
    # B_simple ranged over [0.93, 1.11] (a 6% standard deviation); 25% is 4 sigmas.
    config.microbatches = 1
    _, data = train_records(config, tmp_path / "data", mesh=(4, 2))
    ratio = column(data, "noise_scale")[-1] / column(single, "noise_scale")[-1]
    assert 0.75 < ratio < 1.25, ratio
    # ... while the trajectories are the same (the update uses the whole batch's gradient).
    np.testing.assert_allclose(column(data, "loss"), column(single, "loss"), rtol=1e-4)

    # Layer ratios: one per param; SGD's first update with momentum is -lr g.
    workload = workloads.make(config.workload)
    params = workload.init_params(jax.random.PRNGKey(config.seed))
    grads = jax.grad(workload.loss)(params, workload.batch(0))
    lr = float(train.build_schedule(config)(0))
    norms = {
        f"{train.RATIO_PREFIX}{layer}/{name}": (
            lr * np.linalg.norm(grads[layer][name]),
            np.linalg.norm(params[layer][name]),
        )
        for layer in params
        for name in params[layer]
    }
    first = single[0]
    assert {k for k in first if k.startswith(train.RATIO_PREFIX)} == set(norms)
    for key, (update_norm, param_norm) in norms.items():
        if param_norm == 0:  # biases start at 0: a nonzero update is an infinite ratio
            assert first[key] == math.inf, key
        else:
            assert first[key] == pytest.approx(update_norm / param_norm, rel=1e-4), key


def test_data_shards_and_microbatches_of_single_examples_give_the_same_noise_scale(tmp_path):
    """With one example per piece the two sources cut the batch into the same pieces, so the
    noise scale is the same to rounding: microbatches on one device, data shards on eight."""
    config = small_mlp(steps=3)
    config.workload.batch_size = 8
    config.probes.noise_scale = True
    config.microbatches = 8
    _, micro = train_records(config, tmp_path / "micro")
    config.microbatches = 1
    _, data = train_records(config, tmp_path / "data", mesh=(8, 1))
    for key in NOISE_KEYS:
        np.testing.assert_allclose(column(data, key), column(micro, key), rtol=1e-4)


def _dense_top_eigenvalue(loss_fn, params, precond=None) -> float:
    flat, unravel = ravel_pytree(params)
    hessian = np.asarray(jax.hessian(lambda f: loss_fn(unravel(f)))(flat), np.float64)
    if precond is None:
        return float(np.linalg.eigvalsh(hessian)[-1])
    p = np.asarray(ravel_pytree(precond)[0], np.float64)
    return float(np.max(np.linalg.eigvals(hessian / p[:, None]).real))


def test_sharpness_in_the_loop_matches_the_dense_hessian_and_is_sharded(tmp_path):
    config = small_mlp(steps=4, width=16)
    config.optimizer.name = "adamw"
    config.optimizer.kwargs = {"b1": 0.8, "b2": 0.99, "eps": 1e-6, "weight_decay": 0.0}
    config.schedule.name = "warmup"  # constant after 0 warm-up steps: 2/lr stays finite
    config.schedule.kwargs = {"peak": 0.01, "warmup_steps": 0}
    config.log_every = 4
    config.probes.sharpness_every = 2
    config.probes.sharpness_iterations = 200
    summary, single = train_records(config, tmp_path / "one", return_state=True)
    measured = [r for r in single if "sharpness" in r]
    assert [r["step"] for r in measured] == [2, 4]
    last = measured[-1]
    lr = float(train.build_schedule(config)(4))  # the rate of the next update
    assert last["sharpness_threshold"] == pytest.approx(2 / lr, rel=1e-5)
    assert last["preconditioned_sharpness_threshold"] == pytest.approx(3.6 / (0.2 * lr), rel=1e-5)

    program = train.build(config, jax.devices()[:1])
    batch = program.sharpness_batch()
    assert len(batch["y"]) == 32  # the microbatch size: the whole batch here
    state = jax.device_get(summary["state"])
    loss = lambda p: program.workload.loss(p, batch)
    assert last["sharpness"] == pytest.approx(_dense_top_eigenvalue(loss, state["params"]), 1e-3)
    precond = probes.adam_preconditioner(state["opt_state"], b1=0.8, b2=0.99, eps=1e-6)
    dense = _dense_top_eigenvalue(loss, state["params"], precond)
    assert last["preconditioned_sharpness"] == pytest.approx(dense, rel=1e-3)

    _, sharded = train_records(config, tmp_path / "mesh", mesh=(2, 2))  # batch and FSDP splits
    for key in ("sharpness", "preconditioned_sharpness"):
        np.testing.assert_allclose(column(sharded, key), column(single, key), rtol=1e-4)


def test_sharpness_of_sgd_momentum_has_no_preconditioned_variant(tmp_path):
    config = quadratic_config(steps=4)
    config.optimizer.name = "sgd_momentum"
    config.optimizer.kwargs = {"momentum": 0.5}
    config.schedule.name = "warmup"
    config.schedule.kwargs = {"peak": 0.05, "warmup_steps": 2}
    config.probes.sharpness_every = 4
    config.probes.sharpness_batch_size = 48  # more than a batch: from the batches of steps 0, 1
    _, records = train_records(config, tmp_path)
    (last,) = [r for r in records if "sharpness" in r]
    assert "preconditioned_sharpness" not in last
    lr = float(train.build_schedule(config)(4))
    assert last["sharpness_threshold"] == pytest.approx(3.0 / lr, rel=1e-5)
    # The least-squares Hessian is a^T a / n on the fixed batch, the same at any params.
    workload = workloads.make(config.workload)
    a = np.concatenate([workload.batch(0)["a"], workload.batch(1)["a"][:16]]).astype(np.float64)
    top = np.linalg.eigvalsh(a.T @ a / 48)[-1]
    assert last["sharpness"] == pytest.approx(top, rel=1e-3)


def test_probes_switched_on_when_resuming_a_run_without_them(tmp_path):
    """Probes are watch-only keys; their state is not checkpointed and starts afresh."""
    config = quadratic_config(steps=20)
    train.train(config, tmp_path, stop_after=10)
    config.probes.noise_scale = True  # from the 8 data shards of the default mesh
    summary = train.train(config, tmp_path)
    assert summary["origin"] == {"kind": "resume", "step": 10}
    records = [r for r in metrics.read_metrics(tmp_path) if r["split"] == "train"]
    assert [r["step"] for r in records if "noise_scale" in r] == [15, 20]
    assert all(math.isfinite(r["noise_scale"]) for r in records if "noise_scale" in r)


def test_stop_at_target(tmp_path):
    config = quadratic_config(steps=200)
    config.optimizer.name, config.optimizer.kwargs = "sgd", {"momentum": 0.9}
    config.schedule.kwargs.peak = 0.5
    config.workload.target_loss = 1.0  # reached near step 120
    config.eval_every = 10
    first = train.train(config, tmp_path, stop_at_target=True)
    assert first["target_reached"] and 10 < first["step"] < 200
    evals = [r for r in metrics.read_metrics(tmp_path) if r["split"] == "eval"]
    assert evals[-1]["step"] == first["step"] and evals[-1]["eval_loss"] <= 1.0
    assert all(r["eval_loss"] > 1.0 for r in evals[:-1])
    again = train.train(config, tmp_path, stop_at_target=True)  # reopened: stays there
    assert again["step"] == first["step"] and again["origin"]["kind"] == "resume"


def _nonscalar_loss(monkeypatch):
    make = workloads.make

    def patched(config):
        workload = make(config)
        loss = workload.loss
        workload.loss = lambda p, b: jnp.stack([loss(p, b), loss(p, b)])
        return workload

    monkeypatch.setattr(workloads, "make", patched)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"probes.noise_scale": True}, r"set config.microbatches > 1.*config.mesh.data > 1"),
        ({"probes.noise_scale": True, "microbatches": 3}, "batch_size=32.*microbatches=3"),
        ({"probes.noise_scale_decay": 1.0}, r"noise_scale_decay must be in \[0, 1\)"),
        ({"probes.sharpness_every": -1}, "sharpness_every must be an int >= 0"),
        ({"probes.sharpness_iterations": 0}, "sharpness_iterations must be an int >= 1"),
        ({"probes.sharpness_batch_size": -8}, "sharpness_batch_size must be an int >= 0"),
        (
            {"probes.sharpness_every": 5, "probes.sharpness_batch_size": 12},
            "sharpness_batch_size=12 must be divisible by the 8 devices",
        ),
        ({"probes.sharpness_every": 5, "nonscalar": True}, "must return a scalar loss"),
    ],
)
def test_bad_probe_config_fails_before_the_run(tmp_path, monkeypatch, overrides, match):
    overrides = dict(overrides)
    if overrides.pop("nonscalar", False):
        _nonscalar_loss(monkeypatch)
    config = quadratic_config(**overrides)
    devices = jax.devices()[:1] if overrides.get("probes.noise_scale") else None
    with pytest.raises(ValueError, match=match):
        train.train(config, tmp_path / "run", devices=devices)
    assert not (tmp_path / "run").exists()


def test_probes_off_leave_the_state_and_metrics_as_they_were(tmp_path):
    summary, records = train_records(quadratic_config(steps=5), tmp_path, return_state=True)
    assert set(summary["state"]) == {"step", "params", "opt_state"}
    throughput = {"examples_per_second", "xla_flops_per_step", "mfu"}
    assert set(records[-1]) == {
        "loss", "grad_norm", "update_norm", "param_norm", "lr", "split", "step", "examples",
        "seconds", *throughput,
    }  # fmt: skip
