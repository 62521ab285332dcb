"""optlib.spectral: spectra, worst-case weights over the permutahedron, penalised spectral risk."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import optlib
from optlib import spectral
from optlib._spectral import weight_at_rank
from tests import golden

GOLDEN = golden.load("golden_prospect.json")

SPECTRA = {
    "cvar_q0.5": lambda n: spectral.cvar(n, 0.5),
    "cvar_q0.3": lambda n: spectral.cvar(n, 0.3),
    "extremile_r2": lambda n: spectral.extremile(n, 2.0),
    "esrm_rho1": lambda n: spectral.esrm(n, 1.0),
}


@pytest.mark.parametrize("name", sorted(SPECTRA))
def test_golden_spectra(x64, name):
    np.testing.assert_allclose(SPECTRA[name](8), GOLDEN["spectra_n8"][name], rtol=0, atol=1e-10)


GOLDEN_Q = sorted(k for k in GOLDEN if k.startswith("q_"))


@pytest.mark.parametrize("key", GOLDEN_Q)
def test_golden_worst_case_weights(x64, key):
    _, penalty, nu, *rest = key.split("_")
    sigma = SPECTRA["_".join(rest)](8)
    q = spectral.worst_case_weights(GOLDEN["losses"], sigma, float(nu[2:]), penalty)
    np.testing.assert_allclose(q, GOLDEN[key], rtol=0, atol=1e-10)


def test_golden_covers_all_spectra_penalties_and_nus():
    seen = {tuple(k.split("_")[1:3]) + ("_".join(k.split("_")[3:]),) for k in GOLDEN_Q}
    for name in SPECTRA:
        for nu in ("nu0.1", "nu1.0"):
            assert {("chi2", nu, name), ("kl", nu, name)} <= seen
        assert ("chi2", "nu0.0", name) in seen


def _objective(q, losses, nu, penalty, n):
    if penalty == "chi2":
        return q @ losses - 0.5 * n * nu * np.sum((q - 1.0 / n) ** 2)
    return q @ losses - nu * np.sum(np.where(q > 0, q * np.log(np.maximum(n * q, 1e-300)), 0.0))


def _in_permutahedron(q, sigma, tol=1e-12):
    """Majorisation: q's largest-k sums are at most sigma's, with equal totals."""
    qs = np.cumsum(np.sort(q)[::-1])
    ss = np.cumsum(np.sort(sigma)[::-1])
    return abs(qs[-1] - ss[-1]) < tol and np.all(qs <= ss + tol)


@pytest.mark.parametrize("n", [3, 4, 5])
@pytest.mark.parametrize("penalty", ["chi2", "kl"])
@pytest.mark.parametrize("nu", [0.05, 0.3, 2.0])
def test_worst_case_weights_against_brute_force_qp(x64, n, penalty, nu):
    """Against scipy's SLSQP on the permutahedron's full H-representation, and the exact
    first-order optimality condition over all n! vertices."""
    optimize = pytest.importorskip("scipy.optimize")
    rng = np.random.default_rng(n * 100 + int(nu * 10))
    for sigma in (spectral.cvar(n, 0.4), spectral.extremile(n, 2.5), spectral.esrm(n, 2.0)):
        sigma = np.asarray(sigma)
        losses = rng.exponential(size=n)
        q = np.asarray(spectral.worst_case_weights(losses, sigma, nu, penalty))
        assert _in_permutahedron(q, sigma)
        # Maximising a concave f over a polytope: q is optimal iff <∇f(q), u − q> <= 0 for every
        # vertex u (every permutation of sigma).
        if penalty == "chi2":
            grad = losses - n * nu * (q - 1.0 / n)
        else:
            grad = losses - nu * (np.log(n * q) + 1.0)
        worst = max(grad @ (np.asarray(u) - q) for u in itertools.permutations(sigma))
        assert worst <= 1e-10
        # P(σ) = {q: Σq = 1, Σ_{i∈S} q_i <= sum of the |S| largest σ for every subset S}.
        top = np.cumsum(np.sort(sigma)[::-1])
        cons = [{"type": "eq", "fun": lambda x: np.sum(x) - 1.0}]
        for size in range(1, n):
            for subset in itertools.combinations(range(n), size):
                idx = list(subset)
                cons.append(
                    {"type": "ineq", "fun": lambda x, i=idx, b=top[size - 1]: b - x[i].sum()}
                )
        res = optimize.minimize(
            lambda x, losses=losses: -_objective(x, losses, nu, penalty, n),
            np.full(n, 1.0 / n),
            method="SLSQP",
            bounds=[(1e-12, 1.0)] * n,
            constraints=cons,
            options={"ftol": 1e-15, "maxiter": 500},
        )
        f_pav = _objective(q, losses, nu, penalty, n)
        assert f_pav >= -res.fun - 1e-12
        np.testing.assert_allclose(q, res.x, atol=1e-5)
        np.testing.assert_allclose(f_pav, -res.fun, atol=1e-9)


@settings(max_examples=15, deadline=None)
@given(
    # Three sizes only: every new length compiles every op of the PAV again (most of the time).
    losses=st.sampled_from([1, 5, 12]).flatmap(
        lambda n: st.lists(st.floats(-5, 5, allow_nan=False), min_size=n, max_size=n)
    ),
    nu=st.sampled_from([0.0, 1e-3, 0.1, 1.0, 10.0]),
    penalty=st.sampled_from(["chi2", "kl"]),
    kind=st.sampled_from(["cvar", "extremile", "esrm", "uniform"]),
)
def test_worst_case_weights_properties(losses, nu, penalty, kind):
    n = len(losses)
    sigma = {
        "cvar": lambda: spectral.cvar(n, 0.6),
        "extremile": lambda: spectral.extremile(n, 3.0),
        "esrm": lambda: spectral.esrm(n, 1.5),
        "uniform": lambda: spectral.uniform(n),
    }[kind]()
    losses = jnp.asarray(losses, jnp.float32)
    q = np.asarray(_jit_weights(losses, jnp.asarray(sigma), nu, penalty), np.float64)
    # float32: merged blocks lose ~eps·|ℓ|/ν (relative) to cancellation.
    tol = 1e-6 * (1.0 + (float(jnp.max(jnp.abs(losses))) / nu if nu > 0 else 0.0))
    assert np.all(np.isfinite(q))
    assert _in_permutahedron(q, np.asarray(sigma, np.float64), tol=tol)
    assert np.all(q >= -tol)
    # Larger losses never get smaller weights.
    order = np.argsort(np.asarray(losses), kind="stable")
    assert np.all(np.diff(q[order]) >= -tol)
    # The single-rank evaluation Prospect uses agrees with the full PAV.
    at = _jit_weights_at_ranks(jnp.sort(losses), jnp.asarray(sigma), nu, penalty)
    np.testing.assert_allclose(at, q[order], atol=tol)


# Jitted once per (size, nu, penalty): op-by-op, the vmapped ranks took ~3 s per example.
_jit_weights = jax.jit(spectral.worst_case_weights, static_argnums=(2, 3))


@functools.partial(jax.jit, static_argnums=(2, 3))
def _jit_weights_at_ranks(sorted_losses, sigma, nu, penalty):
    ranks = jnp.arange(sorted_losses.shape[0])
    return jax.vmap(lambda p: weight_at_rank(sorted_losses, sigma, p, nu, penalty))(ranks)


def test_uniform_spectrum_gives_uniform_weights_for_any_nu(x64):
    losses = jnp.array([3.0, -1.0, 0.5, 2.0, 7.0])
    for penalty in ("chi2", "kl"):
        for nu in (0.0, 0.1, 5.0):
            q = spectral.worst_case_weights(losses, spectral.uniform(5), nu, penalty)
            np.testing.assert_allclose(q, 0.2, atol=1e-12)


def test_nu_zero_returns_sigma_by_rank_and_large_nu_tends_to_uniform(x64):
    losses = jnp.array([0.3, 2.0, 0.1, 1.5, 0.7])
    sigma = spectral.esrm(5, 2.0)
    ranks = np.argsort(np.argsort(np.asarray(losses)))
    for penalty in ("chi2", "kl"):
        q = spectral.worst_case_weights(losses, sigma, 0.0, penalty)
        np.testing.assert_array_equal(q, np.asarray(sigma)[ranks])
        q = spectral.worst_case_weights(losses, sigma, 1e6, penalty)
        np.testing.assert_allclose(q, 0.2, atol=1e-5)


def test_chi2_readme_convention_is_code_with_twice_the_shift_cost(x64):
    losses = jnp.asarray(GOLDEN["losses"])
    sigma = spectral.extremile(8, 2.0)
    readme = spectral.worst_case_weights(losses, sigma, 0.4, chi2_convention="readme")
    code = spectral.worst_case_weights(losses, sigma, 0.8, chi2_convention="code")
    np.testing.assert_allclose(readme, code, atol=1e-14)
    assert not np.allclose(readme, spectral.worst_case_weights(losses, sigma, 0.4), atol=1e-6)
    r = spectral.spectral_risk(losses, sigma, 0.4, chi2_convention="readme")
    q = np.asarray(readme)
    np.testing.assert_allclose(r, q @ losses - 0.4 * 8 * np.sum((q - 1 / 8) ** 2), atol=1e-14)


@pytest.mark.parametrize("penalty", ["chi2", "kl"])
def test_spectral_risk_value_gradient_and_jit(x64, penalty):
    losses = jnp.asarray(GOLDEN["losses"])
    sigma = spectral.cvar(8, 0.5)
    nu = 1.0
    q = np.asarray(spectral.worst_case_weights(losses, sigma, nu, penalty))
    r = spectral.spectral_risk(losses, sigma, nu, penalty)
    np.testing.assert_allclose(r, _objective(q, np.asarray(losses), nu, penalty, 8), atol=1e-14)
    # Danskin: the gradient is q*; check against finite differences too.
    g = jax.grad(spectral.spectral_risk)(losses, sigma, nu, penalty)
    np.testing.assert_allclose(g, q, atol=1e-14)
    e = 1e-6 * jnp.eye(8)[3]
    fd = (
        spectral.spectral_risk(losses + e, sigma, nu, penalty)
        - spectral.spectral_risk(losses - e, sigma, nu, penalty)
    ) / 2e-6
    np.testing.assert_allclose(fd, q[3], atol=1e-7)
    jitted = jax.jit(spectral.worst_case_weights, static_argnames="penalty")
    np.testing.assert_allclose(jitted(losses, sigma, nu, penalty=penalty), q, atol=1e-15)
    # ν = 0 is the plain L-statistic.
    r0 = spectral.spectral_risk(losses, sigma, 0.0, penalty)
    np.testing.assert_allclose(r0, np.sort(np.asarray(losses)) @ np.asarray(sigma), atol=1e-14)


def test_spectra_are_valid_for_many_sizes(x64):
    for n in (1, 2, 7, 100, 1001):
        for sigma in (
            spectral.cvar(n, 0.0),
            spectral.cvar(n, 0.5),
            spectral.cvar(n, 0.99),
            spectral.extremile(n, 1.5),
            spectral.esrm(n, 1e-3),
            spectral.esrm(n, 20.0),
            spectral.uniform(n),
        ):
            spectral.check_spectrum(sigma, n)
    np.testing.assert_allclose(spectral.cvar(10, 0.0), 0.1, atol=1e-15)
    np.testing.assert_allclose(spectral.extremile(10, 1.0), 0.1, atol=1e-15)
    # The authors' fallback when n·alpha rounds just below an integer.
    alpha = 0.3 - 1e-15
    sigma = np.asarray(spectral.cvar(10, alpha))
    k = int(np.floor(10 * alpha))
    np.testing.assert_allclose(sigma[k:], 1.0 / (10 - k), atol=1e-15)


@pytest.mark.parametrize(
    "spectrum, match",
    [
        ([0.5, 0.3, 0.2], "non-decreasing"),
        ([-0.1, 0.5, 0.6], "non-negative"),
        ([0.2, 0.3, 0.4], "sum to 1"),
        ([[0.5, 0.5]], "1-D"),
        ([0.25, 0.25, 0.25, 0.25], "length n = 3"),
        ([0.2, np.nan, 0.8], "finite"),
    ],
)
def test_bad_spectrum_raises(spectrum, match):
    with pytest.raises(ValueError, match="spectrum") as info:
        spectral.worst_case_weights(jnp.zeros(3), spectrum)
    assert match in str(info.value)
    with pytest.raises(ValueError, match="spectrum"):
        spectral.spectral_risk(jnp.zeros(3), spectrum)


def test_bad_arguments_raise():
    sigma = spectral.uniform(3)
    with pytest.raises(ValueError, match="shift_cost"):
        spectral.worst_case_weights(jnp.zeros(3), sigma, -1.0)
    with pytest.raises(ValueError, match="penalty"):
        spectral.worst_case_weights(jnp.zeros(3), sigma, 1.0, "l2")
    with pytest.raises(ValueError, match="chi2_convention"):
        spectral.worst_case_weights(jnp.zeros(3), sigma, chi2_convention="paper")
    with pytest.raises(ValueError, match="losses"):
        spectral.worst_case_weights(jnp.zeros((3, 1)), sigma)
    with pytest.raises(ValueError, match="alpha"):
        spectral.cvar(4, 1.0)
    with pytest.raises(ValueError, match="r"):
        spectral.extremile(4, 0.5)
    with pytest.raises(ValueError, match="rho"):
        spectral.esrm(4, 0.0)
    with pytest.raises(ValueError, match="n must"):
        spectral.uniform(0)


def test_public_namespace():
    assert optlib.spectral is spectral
    for name in ("cvar", "extremile", "esrm", "uniform", "worst_case_weights", "spectral_risk"):
        assert callable(getattr(optlib.spectral, name))


def test_weight_at_rank_float32_precision_matches_float64_pav(x64):
    """Prospect's per-step weight in float32 at n = 5000, heavy-tailed losses: the centred
    refinement keeps it within ~1e-6 relative of the float64 PAV (the raw cumulative-sum hull
    alone was off by ~1e-4)."""
    n = 5000
    rng = np.random.default_rng(7)
    losses = np.sort(rng.standard_t(3, n) ** 2 / 2)
    ranks = jnp.asarray(rng.integers(0, n, 64))
    for sigma in (spectral.cvar(n, 0.5), spectral.esrm(n, 1.0)):
        q64 = np.asarray(spectral.worst_case_weights(losses, sigma, 1.0))[np.asarray(ranks)]
        l32, s32 = jnp.asarray(losses, jnp.float32), jnp.asarray(sigma, jnp.float32)
        q32 = jax.jit(jax.vmap(lambda p, l32=l32, s32=s32: weight_at_rank(l32, s32, p, 1.0)))(ranks)
        assert q32.dtype == jnp.float32
        np.testing.assert_allclose(q32, q64, rtol=5e-6, atol=1e-12)
