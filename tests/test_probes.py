"""experiments/probes.py: noise-scale estimators against exact per-example gradients, their
microbatch and data-parallel sources (sharded on a 4x2 data x fsdp mesh), sharpness against
dense Hessians, the critical-batch fit on exact data, per-layer ratios, and bad input."""

import doctest

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree
from jax.sharding import PartitionSpec as P

import optlib
import optlib.registry
from experiments import probes, sharding

# --- a softmax regression with exact per-example gradients ---------------------------------

N, D, C = 4096, 64, 16  # examples, features, classes (W: 1024 entries, FSDP-split)
BATCH = 256
PIECES = 4  # microbatches, and data shards of the 4x2 mesh


def _softmax_problem():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D)).astype(np.float32)
    logits = x @ rng.normal(size=(D, C))
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = np.array([rng.choice(C, p=row) for row in p], np.int32)
    params = {"W": jnp.asarray(0.3 * rng.normal(size=(D, C)), jnp.float32), "b": jnp.zeros(C)}
    return {"x": jnp.asarray(x), "y": jnp.asarray(y)}, params


DATA, PARAMS = _softmax_problem()


def softmax_loss(params, batch):
    logits = batch["x"] @ params["W"] + params["b"]
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]))


_grad = jax.jit(jax.grad(softmax_loss))


@jax.jit
def _per_example(params, batch):
    singles = jax.tree.map(lambda a: a[:, None], batch)
    return jax.vmap(jax.grad(softmax_loss), in_axes=(None, 0))(params, singles)


def _per_example_grads(params, batch) -> np.ndarray:
    """[examples, num_params] float64, one example per row, by vmap over single examples."""
    per = _per_example(params, batch)
    leaves = [np.asarray(v, np.float64).reshape(v.shape[0], -1) for v in jax.tree.leaves(per)]
    return np.concatenate(leaves, axis=1)


def _exact_terms():
    g = _per_example_grads(PARAMS, DATA)
    mean = g.mean(0)
    return float(mean @ mean), float(np.mean(np.sum((g - mean) ** 2, axis=1)))


@pytest.fixture(scope="module")
def mesh():
    return sharding.make_mesh({"data": PIECES, "fsdp": 2})


def _under(mesh, fn):
    """`fn` traced under `mesh` as experiments.train traces its step."""

    def wrapped(*args):
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return fn(*args)

    return wrapped


def _sq(v):
    return float(v @ v)


def test_microbatch_path_is_exact_on_one_batch_and_sharded_equals_unsharded(mesh):
    batch = jax.tree.map(lambda a: a[:BATCH], DATA)
    out = jax.jit(lambda p, b: probes.microbatch_value_and_grad(softmax_loss, p, b, PIECES))(
        PARAMS, batch
    )
    loss, grads = jax.jit(jax.value_and_grad(softmax_loss))(PARAMS, batch)
    chex.assert_trees_all_close(out.grads, grads, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out.loss, loss, rtol=1e-6)
    per = _per_example_grads(PARAMS, batch)
    # Microbatch j holds examples j, j + k, j + 2k, ...
    small = np.mean([_sq(per[j::PIECES].mean(0)) for j in range(PIECES)])
    np.testing.assert_allclose(out.small_sq_norm, small, rtol=1e-5)
    np.testing.assert_allclose(out.big_sq_norm, _sq(per.mean(0)), rtol=1e-5)

    param_shardings = sharding.tree_shardings(PARAMS, mesh)
    step = jax.jit(
        _under(mesh, lambda p, b: probes.microbatch_value_and_grad(softmax_loss, p, b, PIECES)),
        in_shardings=(param_shardings, sharding.batch_sharding(mesh)),
    )
    sharded = step(jax.device_put(PARAMS, param_shardings), sharding.shard_batch(batch, mesh))
    jax.block_until_ready(sharded)
    chex.assert_trees_all_close(sharded, out, rtol=1e-5, atol=1e-8)
    # The accumulated gradient is split like the params: a slice per device, as in FSDP.
    assert sharded.grads["W"].sharding.spec == P("fsdp", None)


def test_data_parallel_path_sharded_equals_unsharded_and_exact(mesh):
    batch = jax.tree.map(lambda a: a[:BATCH], DATA)
    plain = jax.jit(
        lambda p, b: probes.data_parallel_value_and_grad(softmax_loss, p, b, num_shards=PIECES)
    )(PARAMS, batch)
    per = _per_example_grads(PARAMS, batch)
    shard = BATCH // PIECES  # data shard i holds the contiguous rows i*shard ... (i+1)*shard-1
    small = np.mean([_sq(per[i * shard : (i + 1) * shard].mean(0)) for i in range(PIECES)])
    np.testing.assert_allclose(plain.small_sq_norm, small, rtol=1e-5)
    np.testing.assert_allclose(plain.big_sq_norm, _sq(per.mean(0)), rtol=1e-5)
    chex.assert_trees_all_close(plain.grads, _grad(PARAMS, batch), rtol=1e-5, atol=1e-8)

    param_shardings = sharding.tree_shardings(PARAMS, mesh)
    assert param_shardings["W"].spec == P("fsdp", None)  # FSDP really splits W
    step = jax.jit(
        _under(mesh, lambda p, b: probes.data_parallel_value_and_grad(softmax_loss, p, b)),
        in_shardings=(param_shardings, sharding.batch_sharding(mesh)),
    )
    sharded = step(jax.device_put(PARAMS, param_shardings), sharding.shard_batch(batch, mesh))
    jax.block_until_ready(sharded)
    chex.assert_trees_all_close(sharded, plain, rtol=1e-5, atol=1e-8)
    assert sharded.grads["W"].sharding.spec == P("fsdp", None)  # split like the params


def test_ema_estimates_match_exact_terms_on_both_paths(mesh):
    """Batches drawn with replacement at fixed params; 800 steps of the EMA (decay 0.99).

    Per step the relative spread (std) is about 0.04 for tr Sigma and 0.08 for |G|^2; the
    EMA keeps (1 - 0.99) / (1 + 0.99) of the variance, so one sigma of each average is about
    0.3% and 0.6%: 5% is many sigmas. Both paths see the same batches and differ only in how
    each batch is cut (strided microbatches, contiguous data shards).
    """
    g2_exact, trace_exact = _exact_terms()
    # Indices drawn here, not in the compiled scan: threefry is slow to compile on CPU.
    indices = jnp.asarray(np.random.default_rng(1).integers(0, N, (800, BATCH)), jnp.int32)

    def run(path):
        def steps(params, indices):
            def step(state, idx):
                batch = jax.tree.map(lambda a: a[idx], DATA)
                if path == "microbatches":
                    out = probes.microbatch_value_and_grad(softmax_loss, params, batch, PIECES)
                else:
                    batch = jax.tree.map(
                        lambda a: jax.lax.with_sharding_constraint(a, P(sharding.BATCH_AXES)),
                        batch,
                    )
                    out = probes.data_parallel_value_and_grad(softmax_loss, params, batch)
                g2, trace = probes.noise_scale_terms(
                    out.small_sq_norm, out.big_sq_norm, BATCH // PIECES, BATCH
                )
                return probes.noise_scale_update(state, g2, trace), None

            return jax.lax.scan(step, probes.noise_scale_init(), indices)[0]

        if path == "microbatches":
            state = jax.jit(steps)(PARAMS, indices)
        else:  # on the 4x2 mesh, W split over fsdp as the training loop splits it
            shardings = sharding.tree_shardings(PARAMS, mesh)
            sharded = jax.jit(_under(mesh, steps), in_shardings=(shardings, None))
            state = sharded(jax.device_put(PARAMS, shardings), indices)
        jax.block_until_ready(state)
        return {k: float(v) for k, v in probes.noise_scale_estimates(state).items()}

    estimates = {path: run(path) for path in ("microbatches", "data")}
    for path, est in estimates.items():
        assert est["g2"] == pytest.approx(g2_exact, rel=0.05), path
        assert est["trace_sigma"] == pytest.approx(trace_exact, rel=0.05), path
        assert est["noise_scale"] == pytest.approx(trace_exact / g2_exact, rel=0.07), path
    assert estimates["microbatches"]["noise_scale"] == pytest.approx(
        estimates["data"]["noise_scale"], rel=0.03
    )


def test_noise_scale_terms_are_unbiased_on_exact_expectations(x64):
    del x64  # float64, so that the near-equal batch sizes (100, 101) test the algebra
    g2, trace = 2.0, 30.0
    for small, big in ((8, 64), (1, 2), (100, 101)):
        est = probes.noise_scale_terms(g2 + trace / small, g2 + trace / big, small, big)
        np.testing.assert_allclose(est, (g2, trace), rtol=1e-10)


def test_noise_scale_ema_is_bias_corrected_and_jittable():
    update = jax.jit(probes.noise_scale_update, static_argnames="decay")
    state = probes.noise_scale_init()
    assert np.isnan(float(probes.noise_scale_estimates(state)["noise_scale"]))
    state = update(state, 2.0, 8.0, decay=0.9)
    est = probes.noise_scale_estimates(state)  # one update: the values themselves
    np.testing.assert_allclose([est["g2"], est["trace_sigma"], est["noise_scale"]], [2, 8, 4])
    chex.assert_trees_all_equal_structs(state, probes.noise_scale_init())


def test_noise_scale_bad_input(mesh):
    with pytest.raises(ValueError, match="small_batch must be smaller than big_batch"):
        probes.noise_scale_terms(1.0, 1.0, 64, 64)
    with pytest.raises(ValueError, match="small_batch must be a positive number"):
        probes.noise_scale_terms(1.0, 1.0, 0, 64)
    with pytest.raises(ValueError, match="decay must be in"):
        probes.noise_scale_update(probes.noise_scale_init(), 1.0, 1.0, decay=1.0)
    batch = jax.tree.map(lambda a: a[:30], DATA)
    with pytest.raises(ValueError, match=r"batch size 30 does not divide into 4 microbatches"):
        probes.microbatch_value_and_grad(softmax_loss, PARAMS, batch, 4)
    with pytest.raises(ValueError, match=r"batch size 30 does not divide into 4 data shards"):
        probes.data_parallel_value_and_grad(softmax_loss, PARAMS, batch, 4)
    with pytest.raises(ValueError, match="num_shards is needed"):
        probes.data_parallel_value_and_grad(softmax_loss, PARAMS, batch)
    with pytest.raises(ValueError, match=r"num_shards=2 differs from the active mesh's 'data'"):
        _under(mesh, lambda: probes.data_parallel_value_and_grad(softmax_loss, PARAMS, batch, 2))()
    with pytest.raises(ValueError, match="leading"):
        probes.microbatch_value_and_grad(
            softmax_loss, PARAMS, {"x": DATA["x"][:8], "y": DATA["y"][:4]}, 2
        )
    with pytest.raises(ValueError, match=r"set config.microbatches > 1.*config.mesh.data > 1"):
        probes.noise_scale_source(256, 1, 1)
    with pytest.raises(ValueError, match=r"batch size 100 does not divide into 8 data shards"):
        probes.noise_scale_source(100, 1, 8)
    with pytest.raises(ValueError, match=r"batch size 100 does not divide into 3 microbatches"):
        probes.noise_scale_source(100, 3, 1)
    assert probes.noise_scale_source(256, 4, 2) == ("microbatches", 64)
    assert probes.noise_scale_source(256, 1, 8) == ("data", 32)


# --- sharpness -----------------------------------------------------------------------------


def _quadratic(eigenvalues, seed=0):
    eigenvalues = np.asarray(eigenvalues, np.float64)
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(len(eigenvalues),) * 2))
    a = jnp.asarray((q * eigenvalues) @ q.T, jnp.float32)
    return lambda w: 0.5 * w["v"] @ a @ w["v"], {"v": jnp.ones(len(eigenvalues))}


def test_sharpness_of_a_quadratic_with_known_spectrum():
    spectrum = np.concatenate([[12.0, 7.0], np.linspace(-3.0, 5.0, 18)])
    loss, params = _quadratic(spectrum)
    top = jax.jit(lambda p: probes.top_hessian_eigenvalue(loss, p))(params)  # 20 iterations
    assert float(top) == pytest.approx(12.0, rel=1e-4)


def test_sharpness_is_the_top_eigenvalue_when_a_negative_one_dominates():
    spectrum = np.concatenate([[-30.0, 10.0], np.linspace(-5.0, 4.0, 18)])
    loss, params = _quadratic(spectrum, seed=1)
    top = jax.jit(lambda p: probes.top_hessian_eigenvalue(loss, p, num_iterations=100))(params)
    assert float(top) == pytest.approx(10.0, rel=1e-4)


def _mlp_problem():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(32, 3)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 2, 32))
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    params = {
        "hidden": {"w": jax.random.normal(k1, (3, 6)), "b": jnp.zeros(6)},
        "out": {"w": jax.random.normal(k2, (6, 2)) / 2, "b": jnp.zeros(2)},
    }

    def loss(p):
        h = jnp.tanh(x @ p["hidden"]["w"] + p["hidden"]["b"])
        logits = h @ p["out"]["w"] + p["out"]["b"]
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

    return loss, params


MLP_LOSS, MLP_PARAMS = _mlp_problem()
_MLP_UNRAVEL = ravel_pytree(MLP_PARAMS)[1]
_mlp_hessian = jax.jit(jax.hessian(lambda flat: MLP_LOSS(_MLP_UNRAVEL(flat))))


def _dense_hessian(params) -> np.ndarray:
    """The MLP's Hessian, [38, 38] in the order of ravel_pytree, as float64."""
    return np.asarray(_mlp_hessian(ravel_pytree(params)[0]), np.float64)


def test_sharpness_of_an_mlp_equals_the_dense_hessians_top_eigenvalue():
    loss, params = MLP_LOSS, MLP_PARAMS
    eigenvalues = np.linalg.eigvalsh(_dense_hessian(params))
    assert eigenvalues[0] < 0 < eigenvalues[-1]  # an indefinite Hessian: a real test
    top = jax.jit(lambda p: probes.top_hessian_eigenvalue(loss, p, num_iterations=50))(params)
    assert float(top) == pytest.approx(eigenvalues[-1], rel=1e-4)


def test_preconditioned_sharpness_equals_dense_p_inverse_h():
    loss, params = MLP_LOSS, MLP_PARAMS
    opt = optax.adam(0.05)
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        updates, state = opt.update(jax.grad(loss)(params), state, params)
        return optax.apply_updates(params, updates), state

    for _ in range(5):
        params, state = step(params, state)
    precond = probes.adam_preconditioner(state)
    hessian = _dense_hessian(params)
    p = np.asarray(ravel_pytree(precond)[0], np.float64)
    dense = np.max(np.linalg.eigvals(hessian / p[:, None]).real)  # top eigenvalue of P^-1 H
    # The top two are about 55 and 47: a ratio of 0.86 needs ~100 iterations for 1e-4.
    top = jax.jit(
        lambda p, q: probes.top_hessian_eigenvalue(loss, p, num_iterations=100, preconditioner=q)
    )(params, precond)
    assert float(top) == pytest.approx(dense, rel=1e-4)
    assert dense > 1.5 * np.max(np.linalg.eigvalsh(hessian))  # P changed the answer


def test_adam_preconditioner_turns_adams_step_into_p_inverse_m():
    """Adam's update is -lr * P^-1 m with m the raw first moment (Cohen et al. 2022)."""
    grads = [jnp.array([3.0, -4.0, 0.5]), jnp.array([1.0, 2.0, -0.1]), jnp.array([-2.0, 0.3, 1.0])]
    # LAMB rescales each layer by its trust ratio after the Adam direction: same P, other step.
    for opt, eps, is_adam in ((optax.adam(0.1), 1e-8, True), (optlib.lamb(0.1), 1e-6, False)):
        params = jnp.ones(3)
        state = opt.init(params)
        for g in grads:
            updates, state = opt.update(g, state, params)
        m = np.zeros(3)
        v = np.zeros(3)
        for g in grads:
            m = 0.9 * m + 0.1 * np.asarray(g)
            v = 0.999 * v + 0.001 * np.asarray(g) ** 2
        t = len(grads)
        expected = (1 - 0.9**t) * (np.sqrt(v / (1 - 0.999**t)) + eps)
        precond = probes.adam_preconditioner(state)
        np.testing.assert_allclose(precond, expected, rtol=1e-5)
        if is_adam:
            np.testing.assert_allclose(updates, -0.1 * m / np.asarray(precond), rtol=1e-5)


def test_adam_preconditioner_finds_the_second_moment_of_every_adaptive_optimizer():
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    grads = {"w": jnp.full((3, 2), 0.5), "b": jnp.array([1.0, -2.0])}

    def after_one_step(name, **kwargs):
        entry = optlib.registry.get(name)
        opt = entry.factory(0.1, **kwargs)
        extra = {}
        if "value" in entry.needs:
            extra["value"] = jnp.asarray(1.0)
        if "grad_fn" in entry.needs:
            extra["grad_fn"] = lambda p: grads
        update = jax.jit(lambda g, s, p: opt.update(g, s, p, **extra)[1])
        return update(grads, opt.init(params), params)

    # After one step v = (1 - b2) g^2, so sqrt(v / (1 - b2)) = |g|.
    absg = jax.tree.map(jnp.abs, grads)
    cases = {
        "adamw": (0.1, 1e-8),
        "lamb": (0.1, 1e-6),
        "schedule_free_adamw": (1.0, 1e-8),
        "momo_adam": (1.0, 1e-8),
    }
    for name, (first, eps) in cases.items():
        precond = probes.adam_preconditioner(after_one_step(name))
        expected = jax.tree.map(lambda a, f=first, e=eps: f * (a + e), absg)
        chex.assert_trees_all_close(precond, expected, rtol=1e-5, custom_message=name)
    sam_state = after_one_step("sam", base="adamw")
    chex.assert_trees_all_close(
        probes.adam_preconditioner(sam_state),
        jax.tree.map(lambda a: 0.1 * (a + 1e-8), absg),
        rtol=1e-5,
    )
    # Hyperparameters from inject_hyperparams win over the defaults.
    opt = optax.inject_hyperparams(optax.adamw)(learning_rate=0.1, b1=0.5, b2=0.95, eps=1e-3)
    state = opt.update(grads, opt.init(params), params)[1]
    chex.assert_trees_all_close(
        probes.adam_preconditioner(state),
        jax.tree.map(lambda a: 0.5 * (a + 1e-3), absg),
        rtol=1e-5,
    )
    for name in ("sgd", "lars", "tvlars", "dog", "momo", "schedule_free_sgd"):
        state = optlib.registry.build(name, 0.1).init(params)
        with pytest.raises(ValueError, match="no Adam-type second moment"):
            probes.adam_preconditioner(state)
    with pytest.raises(ValueError, match="no update yet"):
        probes.adam_preconditioner(optax.adam(0.1).init(params))
    two = optax.chain(optax.scale_by_adam(), optax.scale_by_adam())
    with pytest.raises(ValueError, match="2 second moments"):
        probes.find_second_moment(two.init(params))


def test_sharpness_bad_input():
    loss, params = MLP_LOSS, MLP_PARAMS
    with pytest.raises(ValueError, match="must return a scalar loss"):
        probes.top_hessian_eigenvalue(lambda p: jnp.stack([loss(p), loss(p)]), params)
    with pytest.raises(ValueError, match="must return a scalar loss"):
        probes.top_hessian_eigenvalue(lambda p: (loss(p), 0.0), params)
    with pytest.raises(ValueError, match="num_iterations must be an int >= 1"):
        probes.top_hessian_eigenvalue(loss, params, num_iterations=0)
    with pytest.raises(ValueError, match="tree structure"):
        probes.top_hessian_eigenvalue(loss, params, preconditioner={"w": jnp.ones(3)})
    bad = jax.tree.map(lambda x: jnp.ones(x.shape + (1,)), params)
    with pytest.raises(ValueError, match="shaped like the params"):
        probes.top_hessian_eigenvalue(loss, params, preconditioner=bad)
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        probes.stability_threshold(0.0)


def test_stability_thresholds():
    assert float(probes.stability_threshold(0.01)) == pytest.approx(200.0)
    assert float(probes.stability_threshold(0.01, 0.9)) == pytest.approx(380.0)
    assert float(probes.stability_threshold(0.01, 0.9, ema=True)) == pytest.approx(3800.0)


# --- critical batch size -------------------------------------------------------------------


def test_fit_recovers_the_critical_batch_from_exact_data():
    s_min, b_crit = 1234.5, 300.0
    sizes = [2**i for i in range(3, 13)]
    steps = [s_min * (1 + b_crit / b) for b in sizes]
    # The relation itself, (S/S_min - 1)(E/E_min - 1) = 1, holds for these data.
    e_min = s_min * b_crit
    np.testing.assert_allclose(
        [(s / s_min - 1) * (b * s / e_min - 1) for b, s in zip(sizes, steps, strict=True)], 1.0
    )
    fit = probes.fit_critical_batch(sizes, steps)
    assert fit.b_crit == pytest.approx(b_crit, rel=1e-6)
    assert fit.s_min == pytest.approx(s_min, rel=1e-6)
    assert fit.e_min == pytest.approx(e_min, rel=1e-6)
    assert fit.relative_rms_residual < 1e-9
    # Batch sizes that missed the target are left out.
    missed = probes.fit_critical_batch(sizes + [8192, 16384], steps + [None, float("inf")])
    assert missed.batch_sizes == tuple(float(b) for b in sizes)
    assert missed.b_crit == pytest.approx(b_crit, rel=1e-6)


def test_fit_bad_input():
    with pytest.raises(ValueError, match="only 2 of 4 batch sizes reached the target"):
        probes.fit_critical_batch([8, 16, 32, 64], [100.0, 60.0, None, float("inf")])
    with pytest.raises(ValueError, match="only 0 of 3"):
        probes.fit_critical_batch([8, 16, 32], [float("nan")] * 3)
    with pytest.raises(ValueError, match="same length"):
        probes.fit_critical_batch([8, 16, 32], [1.0, 2.0])
    with pytest.raises(ValueError, match="batch_sizes must be positive"):
        probes.fit_critical_batch([0, 16, 32], [3.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="steps must be positive"):
        probes.fit_critical_batch([8, 16, 32], [3.0, -2.0, 1.0])
    with pytest.raises(ValueError, match="distinct"):
        probes.fit_critical_batch([8, 16, 16], [3.0, 2.0, 2.0])
    with pytest.raises(ValueError, match="do not follow"):
        probes.fit_critical_batch([8, 16, 32], [10.0, 20.0, 40.0])  # more steps at larger B


# --- per-layer ratios and doctests ---------------------------------------------------------


def test_update_param_ratios_per_leaf_and_per_stacked_layer():
    params = {
        "layers": {"kernel": jnp.arange(1.0, 25.0).reshape(3, 2, 4)},
        "head": {"kernel": jnp.ones((4, 2)), "bias": jnp.zeros(2)},
    }
    updates = jax.tree.map(lambda x: 0.01 * jnp.ones_like(x), params)
    updates["head"]["bias"] = jnp.zeros(2)
    ratios = jax.jit(lambda u, p: probes.update_param_ratios(u, p, optlib.masks.stacked_layers()))(
        updates, params
    )
    assert sorted(ratios) == [
        "head/bias",
        "head/kernel",
        "layers/kernel[0]",
        "layers/kernel[1]",
        "layers/kernel[2]",
    ]
    for i in range(3):
        w = np.asarray(params["layers"]["kernel"][i])
        expected = 0.01 * np.sqrt(w.size) / np.linalg.norm(w)
        np.testing.assert_allclose(ratios[f"layers/kernel[{i}]"], expected, rtol=1e-6)
    np.testing.assert_allclose(ratios["head/kernel"], 0.01, rtol=1e-6)
    assert float(ratios["head/bias"]) == 0.0  # zero param, zero update
    updates["head"]["bias"] = jnp.ones(2)
    assert float(probes.update_param_ratios(updates, params)["head/bias"]) == np.inf
    whole = probes.update_param_ratios(updates, params)
    assert "layers/kernel" in whole and whole["layers/kernel"].shape == ()
    with pytest.raises(ValueError, match="params' structure"):
        probes.update_param_ratios({"head": updates["head"]}, params)


def test_docstring_examples():
    failures, tried = doctest.testmod(probes, optionflags=doctest.ELLIPSIS)
    assert tried >= 8 and failures == 0
