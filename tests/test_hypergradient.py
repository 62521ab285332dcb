"""Hypergradient descent (SGD-HD, SGDN-HD, Adam-HD) and FedHyper's safeguard.

The reference checks transcribe the update of the authors' PyTorch code
(github.com/gbaydin/hypergradient-descent, hypergrad/sgd_hd.py and adam_hd.py) in numpy,
from its math: flattened params, the previous direction starting at zero, the learning rate
updated before the step, coupled weight decay added to the gradient, and for Adam eps added to
the root of the uncorrected second moment with the bias corrections outside.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import optlib
from experiments.workloads import logreg

# --- literal transcriptions of the reference update (numpy, float64) -------------------------


def reference_sgd_hd(grad_fn, theta, lr, beta, steps, momentum=0.0, nesterov=False, wd=0.0):
    """SGDHD.step on one flat parameter vector; returns per-step (theta, lr)."""
    theta = np.array(theta, np.float64)
    grad_prev = np.zeros_like(theta)
    buf = None
    thetas, lrs = [], []
    for _ in range(steps):
        grad = grad_fn(theta) + wd * theta
        h = grad @ grad_prev
        lr = lr + beta * h
        if momentum != 0:
            buf = grad.copy() if buf is None else momentum * buf + grad
            grad = grad + momentum * buf if nesterov else buf
        grad_prev = grad
        theta = theta - lr * grad
        thetas.append(theta)
        lrs.append(lr)
    return np.stack(thetas), np.array(lrs)


def reference_adam_hd(grad_fn, theta, lr, beta, steps, b1=0.9, b2=0.999, eps=1e-8, wd=0.0):
    """AdamHD.step on one parameter tensor; returns per-step (theta, lr)."""
    theta = np.array(theta, np.float64)
    exp_avg = np.zeros_like(theta)
    exp_avg_sq = np.zeros_like(theta)
    thetas, lrs = [], []
    for step in range(1, steps + 1):
        grad = grad_fn(theta) + wd * theta
        if step > 1:
            prev_bc1 = 1 - b1 ** (step - 1)
            prev_bc2 = 1 - b2 ** (step - 1)
            h = grad @ (exp_avg / (np.sqrt(exp_avg_sq) + eps)) * np.sqrt(prev_bc2) / prev_bc1
            lr = lr + beta * h
        exp_avg = b1 * exp_avg + (1 - b1) * grad
        exp_avg_sq = b2 * exp_avg_sq + (1 - b2) * grad * grad
        denom = np.sqrt(exp_avg_sq) + eps
        step_size = lr * np.sqrt(1 - b2**step) / (1 - b1**step)
        theta = theta - step_size * exp_avg / denom
        thetas.append(theta)
        lrs.append(lr)
    return np.stack(thetas), np.array(lrs)


# An ill-conditioned quadratic 0.5 x'Ax - c'x in 9 dimensions (eigenvalues 0.2 .. 5).
_RNG = np.random.default_rng(0)
_Q, _ = np.linalg.qr(_RNG.normal(size=(9, 9)))
A = _Q @ np.diag(np.geomspace(0.2, 5.0, 9)) @ _Q.T
C = _RNG.normal(size=9)
THETA0 = _RNG.normal(size=9)


def quadratic_grad_np(theta):
    return A @ theta - C


def run_optax(opt, params, steps):
    """`steps` updates of `opt` on the quadratic of the flattened params: (thetas, alphas)."""

    def loss(p):
        x = ravel_pytree(p)[0]
        return 0.5 * x @ jnp.asarray(A) @ x - jnp.asarray(C) @ x

    @jax.jit
    def step(p, state):
        updates, state = opt.update(jax.grad(loss)(p), state, p)
        return optax.apply_updates(p, updates), state

    state = opt.init(params)
    thetas, alphas = [], []
    for _ in range(steps):
        params, state = step(params, state)
        thetas.append(np.asarray(ravel_pytree(params)[0]))
        alphas.append(float(state.alpha))
    return np.stack(thetas), np.array(alphas)


def two_leaves(theta):
    """The 9-vector as a tree of two leaves (ravel_pytree's order: "b" then "w")."""
    return {"b": jnp.asarray(theta[:3]), "w": jnp.asarray(theta[3:].reshape(2, 3))}


@pytest.mark.parametrize(
    "lr, beta, kwargs",
    [
        (0.02, 1e-3, dict(momentum=0.0, nesterov=False, wd=0.0)),  # SGD-HD
        (0.01, 1e-4, dict(momentum=0.9, nesterov=True, wd=1e-2)),  # SGDN-HD, coupled decay
        (0.01, 1e-4, dict(momentum=0.9, nesterov=False, wd=0.0)),  # u: the momentum buffer
    ],
    ids=["sgd_hd", "sgdn_hd_wd", "sgd_momentum_hd"],
)
def test_sgd_hd_matches_reference(x64, lr, beta, kwargs):
    steps = 60
    ref_theta, ref_lr = reference_sgd_hd(quadratic_grad_np, THETA0, lr, beta, steps, **kwargs)
    opt = optlib.sgd_hd(
        lr,
        beta,
        momentum=kwargs["momentum"],
        nesterov=kwargs["nesterov"],
        weight_decay=kwargs["wd"],
    )
    thetas, alphas = run_optax(opt, two_leaves(THETA0), steps)
    # The learning rate really moves, so the comparison checks the hypergradient.
    assert np.all(np.isfinite(ref_theta)) and abs(ref_lr[-1] / lr - 1) > 0.1, ref_lr[-1]
    np.testing.assert_allclose(alphas, ref_lr, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(thetas, ref_theta, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("wd", [0.0, 1e-2])
def test_adam_hd_matches_reference(x64, wd):
    lr, beta, steps = 0.01, 1e-4, 60
    ref_theta, ref_lr = reference_adam_hd(quadratic_grad_np, THETA0, lr, beta, steps, wd=wd)
    # One tensor: the reference's per-tensor accumulation of h equals the global sum.
    thetas, alphas = run_optax(optlib.adam_hd(lr, beta, weight_decay=wd), jnp.asarray(THETA0), 60)
    assert np.all(np.isfinite(ref_theta)) and abs(ref_lr[-1] / lr - 1) > 0.1, ref_lr[-1]
    np.testing.assert_allclose(alphas, ref_lr, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(thetas, ref_theta, rtol=1e-12, atol=1e-12)


def test_adam_hd_sums_the_hypergradient_over_the_tree(x64):
    # Two leaves: h is the inner product over the whole tree, the reference's math on the
    # flattened vector (its loop over tensors would update lr tensor by tensor instead).
    lr, beta, steps = 0.01, 1e-4, 30
    ref_theta, ref_lr = reference_adam_hd(quadratic_grad_np, THETA0, lr, beta, steps)
    thetas, alphas = run_optax(optlib.adam_hd(lr, beta), two_leaves(THETA0), steps)
    np.testing.assert_allclose(alphas, ref_lr, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(thetas, ref_theta, rtol=1e-12, atol=1e-12)


def test_adam_hd_optax_eps_placement_is_scale_by_adam(x64):
    params = jnp.asarray(THETA0)
    a, alpha_a = run_optax(optlib.adam_hd(0.01, 1e-4, eps=1e-3, eps_placement="optax"), params, 5)
    generic = optlib.hypergradient(optax.scale_by_adam(eps=1e-3), 0.01, 1e-4)
    b, alpha_b = run_optax(generic, params, 5)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(alpha_a, alpha_b)
    # With a large eps the reference placement (eps on the uncorrected root) differs.
    c, _ = run_optax(optlib.adam_hd(0.01, 1e-4, eps=1e-3), params, 5)
    assert np.max(np.abs(a - c)) > 1e-6


# --- schedules and plumbing ----------------------------------------------------------------


def test_constant_schedule_equals_float_and_zero_lr_stops():
    params = two_leaves(THETA0)
    plain, alpha_plain = run_optax(optlib.sgd_hd(0.02, 1e-3), params, 10)
    sched, alpha_sched = run_optax(optlib.sgd_hd(optax.constant_schedule(0.02), 1e-3), params, 10)
    np.testing.assert_array_equal(plain, sched)
    np.testing.assert_array_equal(alpha_plain, alpha_sched)
    # A schedule at 0 (the start of a warm-up) gives a zero step and alpha 0; the next step
    # restarts from the schedule's value plus the hypergradient step (the params did not move,
    # so h = |g_1|^2).
    warm = optax.linear_schedule(0.0, 0.02, 4)
    thetas, alphas = run_optax(optlib.sgd_hd(warm, 1e-3), params, 3)
    np.testing.assert_array_equal(thetas[0], ravel_pytree(params)[0])
    g1 = quadratic_grad_np(THETA0)
    assert alphas[0] == 0.0
    assert alphas[1] == pytest.approx(0.005 + 1e-3 * g1 @ g1, rel=1e-5)


def test_schedule_scales_alpha_and_inject_hyperparams_agrees():
    schedule = optax.cosine_decay_schedule(0.02, 20)
    params = two_leaves(THETA0)
    direct, alpha_direct = run_optax(optlib.sgd_hd(schedule, 1e-3), params, 21)
    injected = optax.inject_hyperparams(optlib.sgd_hd)(learning_rate=schedule, beta=1e-3)
    state = injected.init(params)
    loss = lambda p: 0.5 * ravel_pytree(p)[0] @ A @ ravel_pytree(p)[0] - C @ ravel_pytree(p)[0]

    @jax.jit
    def step(params, state):
        updates, state = injected.update(jax.grad(loss)(params), state, params)
        return optax.apply_updates(params, updates), state

    alphas = []
    for _ in range(21):
        params, state = step(params, state)
        alphas.append(float(optax.tree.get(state, "alpha")))
    chex.assert_trees_all_close(np.asarray(alphas), alpha_direct, rtol=1e-5)
    chex.assert_trees_all_close(ravel_pytree(params)[0], direct[-1], rtol=1e-5, atol=1e-6)
    # The cosine ends at 0, so alpha does too, whatever hypergradient descent learned.
    assert alpha_direct[-1] == 0.0 and alpha_direct[10] > 0


def test_donated_jitted_step_and_alpha_in_a_chain():
    # alpha and last_lr start equal; they must still be two buffers for donation.
    opt = optax.chain(optax.clip_by_global_norm(1e9), optlib.adam_hd(3e-3, beta=1e-4))
    loss = lambda p: jnp.sum((p["w"] - 1.0) ** 2)

    def step(params, state):
        updates, state = opt.update(jax.grad(loss)(params), state, params)
        return optax.apply_updates(params, updates), state

    params = {"w": jnp.zeros(3)}
    state = opt.init(params)
    assert float(optax.tree.get(state, "alpha")) == pytest.approx(3e-3)
    expected = jax.jit(step)(*jax.jit(step)(params, state))
    donating = jax.jit(step, donate_argnums=(0, 1))
    for _ in range(2):
        params, state = donating(params, state)
    chex.assert_trees_all_close((params, state), expected)


# --- logistic regression on the breast-cancer workload -------------------------------------


@functools.lru_cache(maxsize=1)
def logreg_problem(steps=1000):
    workload = logreg.make(ml_collections.ConfigDict({"name": "logreg"}))
    batches = [workload.batch(t) for t in range(steps)]
    stacked = {k: jnp.stack([b[k] for b in batches]) for k in ("x", "s")}
    full = {"x": jnp.asarray(workload._x), "s": jnp.asarray(workload._s)}
    return workload, stacked, full


def train_logreg(make_opt, alpha0s, steps):
    """Final full-batch suboptimality and the alpha trajectory, one run per alpha0 (vmapped)."""
    workload, batches, full = logreg_problem()
    batches = jax.tree.map(lambda b: b[:steps], batches)

    def one(alpha0):
        opt = make_opt(alpha0)
        params = workload.init_params(None)

        def body(carry, batch):
            params, state = carry
            updates, state = opt.update(jax.grad(workload.loss)(params, batch), state, params)
            params = optax.apply_updates(params, updates)
            alpha = state.alpha if isinstance(state, optlib.HypergradientState) else alpha0
            return (params, state), alpha

        (params, _), alphas = jax.lax.scan(body, (params, opt.init(params)), batches)
        return workload.loss(params, full) - workload.optimum_loss, alphas

    return jax.jit(jax.vmap(one))(jnp.asarray(alpha0s, jnp.float32))


def test_logreg_alpha_rises_then_settles():
    # The reference run (logreg, alpha_0 = beta = 1e-3) shows alpha climbing by an order of
    # magnitude within its first few hundred iterations and then staying near one level.
    _, alphas = train_logreg(lambda a: optlib.sgd_hd(a, 1e-3), [1e-3], 1000)
    alphas = np.asarray(alphas[0])
    assert alphas[0] == pytest.approx(1e-3)
    assert alphas[100] > 10 * 1e-3, alphas[100]  # rises
    late = alphas[500:]
    spread = (late.max() - late.min()) / late.mean()
    assert spread < 0.1, (late.min(), late.max())  # settles


def test_logreg_final_loss_spread_is_smaller_with_hd():
    alpha0s = [1e-4, 1e-3, 1e-2, 1e-1]
    hd, _ = train_logreg(lambda a: optlib.sgd_hd(a, 1e-3), alpha0s, 500)
    sgd, _ = train_logreg(optax.sgd, alpha0s, 500)
    hd, sgd = np.asarray(hd), np.asarray(sgd)
    assert np.all(np.isfinite(hd)), hd
    assert np.ptp(hd) < np.ptp(sgd), (hd, sgd)


# --- the safeguard -------------------------------------------------------------------------


def stiff_run(opt, steps=100):
    """`opt` on 0.5 * (x^2 + 10 y^2) from (1, 1): alphas and losses per step."""
    loss = lambda p: 0.5 * (p[0] ** 2 + 10 * p[1] ** 2)

    def body(carry, _):
        params, state = carry
        updates, state = opt.update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, updates)
        return (params, state), (state.alpha, loss(params))

    params = jnp.array([1.0, 1.0])
    run = jax.jit(lambda p: jax.lax.scan(body, (p, opt.init(p)), length=steps)[1])
    alphas, losses = run(params)
    return np.asarray(alphas), np.asarray(losses)


def test_safeguard_keeps_alpha_in_range_where_plain_hd_goes_negative():
    # beta = 3e-3 overshoots: alpha passes 2/10, the stiff direction flips sign, the next
    # hypergradient is large and negative, and plain HD turns into gradient ascent.
    plain, plain_losses = stiff_run(optlib.sgd_hd(0.01, 3e-3))
    assert plain[2] < 0, plain[:5]
    assert not np.isfinite(plain_losses[-1]) or plain_losses[-1] > plain_losses[0]
    for kwargs, low, high in [
        ({}, 1e-3, 0.1),  # FedHyper's band: [0.1, 10] times the learning rate
        (dict(alpha_min=1e-3, alpha_max=1.0), 1e-3, 1.0),
    ]:
        alphas, losses = stiff_run(optlib.sgd_hd(0.01, 3e-3, safeguard=True, **kwargs))
        assert np.all(alphas >= low * (1 - 1e-6)) and np.all(alphas <= high * (1 + 1e-6))
        growth = alphas[1:] / alphas[:-1]
        assert np.all(growth <= 1.1 * (1 + 1e-6)), growth.max()
        assert losses[-1] < 1e-3 * losses[0], losses[-1]
    # A wide band lets the clip bind on both sides once the step is left unbounded.
    alphas, _ = stiff_run(
        optlib.sgd_hd(0.01, 3e-3, safeguard=True, alpha_min=1e-3, alpha_max=0.5, max_growth=1e6)
    )
    assert alphas.min() == pytest.approx(1e-3) and alphas.max() == pytest.approx(0.5)


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: optlib.sgd_hd(1e-3, beta=-1e-3), "beta"),
        (lambda: optlib.adam_hd(1e-3, beta=-1e-7), "beta"),
        (lambda: optlib.sgd_hd(-1e-3), "learning_rate"),
        (lambda: optlib.sgd_hd(float("nan")), "learning_rate"),
        (lambda: optlib.sgd_hd("fast"), "learning_rate"),
        (lambda: optlib.sgd_hd(safeguard=True, alpha_min=0.1, alpha_max=0.01), "alpha_min"),
        (lambda: optlib.sgd_hd(1e-3, safeguard=True, alpha_min=0.1), "alpha_min"),
        (lambda: optlib.sgd_hd(safeguard=True, alpha_min=-1.0), "alpha_min"),
        (lambda: optlib.sgd_hd(safeguard=True, alpha_max=0.0), "alpha_max"),
        (lambda: optlib.sgd_hd(safeguard=True, max_growth=0.5), "max_growth"),
        (lambda: optlib.sgd_hd(alpha_min=1e-4), "safeguard=True"),
        (lambda: optlib.sgd_hd(momentum=1.0), "momentum"),
        (lambda: optlib.sgd_hd(nesterov=True), "nesterov"),
        (lambda: optlib.sgd_hd(weight_decay=-1.0), "weight_decay"),
        (lambda: optlib.adam_hd(b2=1.0), "b2"),
        (lambda: optlib.adam_hd(eps_placement="torch"), "eps_placement"),
        (lambda: optlib.hypergradient(optax.sgd, 1e-3), "direction"),
    ],
)
def test_bad_input_is_a_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_weight_decay_needs_params():
    opt = optlib.sgd_hd(1e-3, weight_decay=1e-4)
    state = opt.init(jnp.ones(2))
    with pytest.raises(ValueError, match="params"):
        opt.update(jnp.ones(2), state)


def test_default_sgd_hd_state_is_the_same_under_inject_hyperparams():
    # optax's harness compares the two states; momentum=None stays static under injection, as
    # in optax.sgd, so no momentum buffer appears on one side only.
    params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(2)}
    plain = optlib.sgd_hd(1e-3).init(params)
    injected = optax.inject_hyperparams(optlib.sgd_hd)(learning_rate=1e-3).init(params)
    chex.assert_trees_all_equal_structs(injected.inner_state, plain)
