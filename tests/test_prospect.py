"""Prospect: against a plain re-sort-every-step implementation, linear convergence (§9.5),
linear (scalar-table) mode, paired sampling, and bad input.

Prospect is not in tests/test_contract.py: its update needs the sampled index and loss and its
init needs the n-row tables, which the contract's problems do not provide.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optlib
from experiments import prospect as exp
from optlib import spectral


def _problem(n=12, d=3, seed=0):
    X, y = exp.make_regression(n, d, seed)
    return jnp.asarray(X), jnp.asarray(y)


def _loss(w, example):
    x, y = example
    return 0.5 * (x @ w - y) ** 2


def _reference_run(X, y, spectrum, nu, penalty, l2_reg, lr, indices, loss_indices=None):
    """Prospect as §9.4 states it: full gradient table, λ = q*(ℓ̂) recomputed by a full sort and
    PAV after every step, numpy float64."""
    X, y = np.asarray(X), np.asarray(y)
    n, d = X.shape
    mu = l2_reg / n
    q_star = jax.jit(lambda losses: spectral.worst_case_weights(losses, spectrum, nu, penalty))
    w = np.zeros(d)
    losses = 0.5 * (X @ w - y) ** 2
    table = (X @ w - y)[:, None] * X
    lam = np.asarray(q_star(losses))
    rho = lam.copy()
    g_avg = rho @ table
    trajectory = []
    for t, i in enumerate(indices):
        j = i if loss_indices is None else loss_indices[t]
        g = (X[i] @ w - y[i]) * X[i]
        loss_j = 0.5 * (X[j] @ w - y[j]) ** 2
        v = n * lam[i] * g - n * rho[i] * table[i] + g_avg
        w_new = (w - lr * v) / (1 + lr * mu)
        lam_i = lam[i]
        g_avg = g_avg + lam_i * g - rho[i] * table[i]
        table[i] = g
        rho[i] = lam_i
        losses[j] = loss_j
        lam = np.asarray(q_star(losses))
        w = w_new
        trajectory.append(w.copy())
    return np.asarray(trajectory), losses, rho


@pytest.mark.parametrize(
    "penalty, nu, linear, sampling",
    [
        ("chi2", 1.0, False, "single"),
        ("chi2", 0.1, True, "single"),
        ("kl", 0.5, True, "single"),
        ("chi2", 0.0, False, "single"),
        ("chi2", 1.0, True, "paired"),
    ],
)
def test_matches_reference_implementation(x64, penalty, nu, linear, sampling):
    X, y = _problem()
    n = X.shape[0]
    spectrum = spectral.cvar(n, 0.5) if nu != 0.1 else spectral.esrm(n, 2.0)
    lr, l2_reg, steps = 0.02, 1.0, 40
    rng = np.random.default_rng(1)
    indices = rng.integers(0, n, steps)
    loss_indices = rng.integers(0, n, steps) if sampling == "paired" else None
    ref_w, ref_losses, ref_rho = _reference_run(
        X, y, spectrum, nu, penalty, l2_reg, lr, indices, loss_indices
    )

    opt = optlib.prospect(lr, spectrum, nu, penalty, l2_reg, sampling, linear=linear)
    w = jnp.zeros(X.shape[1])
    if linear:
        losses, scalars = optlib.prospect_tables(lambda p, t: 0.5 * (p - t) ** 2, w, y, features=X)
        state = opt.init(w, losses=losses, grads=scalars, features=X)
    else:
        losses, grads = optlib.prospect_tables(_loss, w, (X, y))
        state = opt.init(w, losses=losses, grads=grads)

    @jax.jit
    def step(w, state, i, j):
        loss, g = jax.value_and_grad(_loss)(w, (X[i], y[i]))
        kwargs = {"index": i}
        if linear:
            kwargs["features"] = X[i]
            g = X[i] @ w - y[i]
        if sampling == "paired":
            kwargs.update(loss_index=j, loss_value=_loss(w, (X[j], y[j])))
        else:
            kwargs["loss"] = loss
        updates, state = opt.update(g, state, w, **kwargs)
        return optax.apply_updates(w, updates), state

    for t, i in enumerate(indices):
        j = i if loss_indices is None else loss_indices[t]
        w, state = step(w, state, jnp.int32(i), jnp.int32(j))
        np.testing.assert_allclose(w, ref_w[t], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(state.losses, ref_losses, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(state.rho, ref_rho, rtol=1e-10, atol=1e-13)
    # The incrementally kept sorted table is the sorted loss table.
    np.testing.assert_allclose(state.sorted_losses, np.sort(ref_losses), atol=0)
    np.testing.assert_array_equal(
        np.asarray(state.losses)[np.asarray(state.order)], state.sorted_losses
    )
    assert int(state.count) == steps


@pytest.mark.parametrize("name, param", [("cvar", 0.5), ("extremile", 2.0), ("esrm", 1.0)])
def test_linear_convergence_beats_biased_sgd(x64, name, param):
    """§9.5: after 40 epochs Prospect (η = 0.01) is below 1e-10 relative suboptimality while
    minibatch SGD (batch 1, η = 0.003) stalls above 1e-5."""
    config = exp.get_config()
    out = exp.run_objective(config, name, param, [20, 40], verbose=False)
    p20, p40 = out["prospect"]
    assert abs(p40) < 1e-10, out
    assert p40 < 1e-2 * p20 or abs(p40) < 1e-14  # still contracting: linear, not stalled
    assert min(out["sgd"]) > 1e-5, out


def test_linear_and_full_tables_agree_and_epoch_runner(x64):
    X, y = _problem(n=16, d=4, seed=3)
    spectrum = spectral.extremile(16, 2.0)
    w0 = jnp.zeros(4)
    full = optlib.prospect(0.01, spectrum)
    lin = optlib.prospect(0.01, spectrum, linear=True)
    losses, grads = optlib.prospect_tables(_loss, w0, (X, y))
    s_full = full.init(w0, losses=losses, grads=grads)
    sq = lambda p, t: 0.5 * (p - t) ** 2  # noqa: E731
    l2, s = optlib.prospect_tables(sq, w0, y, features=X)
    s_lin = lin.init(w0, losses=l2, grads=s, features=X)
    np.testing.assert_allclose(s_full.grad_avg, s_lin.grad_avg, atol=1e-14)
    key = jax.random.key(0)
    w_full, _ = optlib.prospect_epochs(full, _loss, w0, s_full, (X, y), key, 3)
    w_lin, _ = optlib.prospect_epochs(lin, sq, w0, s_lin, y, key, 3, features=X)
    np.testing.assert_allclose(w_full, w_lin, rtol=1e-12)
    assert float(jnp.linalg.norm(w_full)) > 0.1
    # Paired sampling converges to the same optimum as single sampling (L-BFGS's).
    objective = jax.jit(exp.objective_fn(X, y, spectrum, 1.0, "chi2", 1.0))
    w_star, f_star = exp.lbfgs_optimum(objective, w0)
    for sampling in ("single", "paired"):
        opt = optlib.prospect(0.01, spectrum, sampling=sampling, linear=True)
        state = opt.init(w0, losses=l2, grads=s, features=X)
        w, _ = optlib.prospect_epochs(
            opt, sq, w0, state, y, key, 120, features=X, sampling=sampling
        )
        assert float(objective(w) - f_star) < 1e-10 * float(objective(w0) - f_star), sampling
        np.testing.assert_allclose(w, w_star, atol=1e-4)


def test_learning_rate_schedule_and_float32():
    X, y = _problem(n=10, d=3)
    X, y = X.astype(jnp.float32), y.astype(jnp.float32)
    opt = optlib.prospect(optax.constant_schedule(0.01), spectral.cvar(10, 0.5), linear=True)
    w = jnp.zeros(3, jnp.float32)
    losses, s = optlib.prospect_tables(lambda p, t: 0.5 * (p - t) ** 2, w, y, features=X)
    state = opt.init(w, losses=losses, grads=s, features=X)
    w, state = optlib.prospect_epochs(
        opt, lambda p, t: 0.5 * (p - t) ** 2, w, state, y, jax.random.key(0), 2, features=X
    )
    assert w.dtype == jnp.float32 and state.sorted_losses.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(w)))
    assert int(state.count) == 20


def test_bad_input_raises():
    spectrum = spectral.cvar(4, 0.5)
    with pytest.raises(ValueError, match="spectrum"):
        optlib.prospect(0.1, [0.5, 0.3, 0.2])
    with pytest.raises(ValueError, match="spectrum"):
        optlib.prospect(0.1, [0.2, 0.2, 0.2])
    with pytest.raises(ValueError, match="shift_cost"):
        optlib.prospect(0.1, spectrum, shift_cost=-1.0)
    with pytest.raises(ValueError, match="penalty"):
        optlib.prospect(0.1, spectrum, penalty="l2")
    with pytest.raises(ValueError, match="sampling"):
        optlib.prospect(0.1, spectrum, sampling="double")
    with pytest.raises(ValueError, match="learning_rate"):
        optlib.prospect(-0.1, spectrum)
    with pytest.raises(ValueError, match="l2_reg"):
        optlib.prospect(0.1, spectrum, l2_reg=-1.0)

    opt = optlib.prospect(0.1, spectrum)
    w = jnp.zeros(2)
    with pytest.raises(ValueError, match="losses"):
        opt.init(w, losses=jnp.zeros(5), grads=jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="grads"):
        opt.init(w, losses=jnp.zeros(4), grads=jnp.zeros((5, 2)))
    with pytest.raises(ValueError, match="initial tables"):
        opt.init(w)
    state = opt.init(w, losses=jnp.zeros(4), grads=jnp.zeros((4, 2)))
    g = jnp.ones(2)
    with pytest.raises(ValueError, match=r"index must be in \[0, 4\)"):
        opt.update(g, state, w, index=4, loss=1.0)
    with pytest.raises(ValueError, match="index"):
        opt.update(g, state, w, index=-1, loss=1.0)
    with pytest.raises(ValueError, match="index is required"):
        opt.update(g, state, w, loss=1.0)
    with pytest.raises(ValueError, match="loss is required"):
        opt.update(g, state, w, index=0)
    with pytest.raises(ValueError, match="params"):
        opt.update(g, state, None, index=0, loss=1.0)
    with pytest.raises(ValueError, match="paired"):
        opt.update(g, state, w, index=0, loss=1.0, loss_index=1, loss_value=1.0)

    paired = optlib.prospect(0.1, spectrum, sampling="paired")
    state = paired.init(w, losses=jnp.zeros(4), grads=jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="loss_index"):
        paired.update(g, state, w, index=0, loss_index=7, loss_value=1.0)
    with pytest.raises(ValueError, match="loss_value"):
        paired.update(g, state, w, index=0, loss_index=1)

    lin = optlib.prospect(0.1, spectrum, linear=True)
    with pytest.raises(ValueError, match="features"):
        lin.init(w, losses=jnp.zeros(4), grads=jnp.zeros(4))
    with pytest.raises(ValueError, match="features"):
        lin.init(w, losses=jnp.zeros(4), grads=jnp.zeros(4), features=jnp.zeros((4, 3)))
    state = lin.init(w, losses=jnp.zeros(4), grads=jnp.zeros(4), features=jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="features"):
        lin.update(jnp.float32(1.0), state, w, index=0, loss=1.0)


def test_complex_params_are_a_clear_error_at_init():
    opt = optlib.prospect(0.1, optlib.spectral.cvar(3, 0.5))
    params = {"w": jnp.zeros(2), "z": jnp.zeros(2, jnp.complex64)}
    grads = jax.tree.map(lambda p: jnp.zeros((3, *p.shape), p.dtype), params)
    with pytest.raises(ValueError, match=r"complex.*params\['z'\] is complex64"):
        opt.init(params, losses=jnp.zeros(3), grads=grads)
