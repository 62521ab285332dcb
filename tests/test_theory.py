"""schedules.theory: the convex last-iterate bound, the optimal base rate, horizon transfer.

The facts checked are those of Schaipp et al. (arXiv 2501.18965) with the schedule conventions
of their package (a schedule of T + 1 values whose last, 0, is not used: here the schedule
evaluated on steps 0..T-1).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import schedules
from schedules import theory


def _shape(schedule, T):
    return np.asarray(jax.jit(schedule)(np.arange(T)), np.float64)


def _bound_by_definition(lrs, D, G):
    """Omega_T term by term, O(T^2), 1-based t as in the paper."""
    eta = list(map(float, lrs))
    g = [float(G)] * len(eta) if np.ndim(G) == 0 else list(map(float, G))
    T, S = len(eta), sum(eta)
    value = D**2 / (2 * S) + sum(e * e * x * x for e, x in zip(eta, g, strict=True)) / (2 * S)
    for k in range(1, T):  # k = 1..T-1
        after = sum(eta[k:])  # sum_{t=k+1}^T eta_t
        from_k = sum(eta[k - 1 :])  # sum_{t=k}^T eta_t
        sq = sum(e * e * x * x for e, x in zip(eta[k - 1 :], g[k - 1 :], strict=True))
        value += 0.5 * eta[k - 1] / after * sq / from_k
    return value


@pytest.mark.parametrize(
    "T, eta, D, G", [(1, 0.3, 1.0, 1.0), (7, 0.1, 2.0, 3.0), (400, 0.02, 1.0, 1.0)]
)
def test_constant_schedule_bound_is_the_harmonic_number_identity(T, eta, D, G):
    harmonic = sum(1.0 / j for j in range(1, T))  # H_{T-1}
    expected = D**2 / (2 * eta * T) + eta * G**2 / 2 + eta * G**2 / 2 * harmonic
    assert theory.bound(np.full(T, eta), D=D, G=G) == pytest.approx(expected, rel=1e-12)


def test_bound_matches_its_definition_with_per_step_gradient_norms():
    rng = np.random.default_rng(0)
    lrs = rng.uniform(0.05, 1.0, 60)
    G = rng.uniform(0.5, 2.0, 60)
    assert theory.bound(lrs, D=1.5, G=G) == pytest.approx(
        _bound_by_definition(lrs, 1.5, G), rel=1e-12
    )


def test_ranking_and_base_rate_ratio_at_T_400():
    T = 400
    shapes = {
        "linear": _shape(schedules.linear_decay(1.0, T), T),
        "cosine": _shape(schedules.cosine(1.0, T), T),
        "wsd 20%": _shape(schedules.wsd(1.0, T, decay_fraction=0.2), T),
        "constant": np.ones(T),
    }
    best = {name: theory.optimal_base_lr(s, D=1.0, G=1.0) for name, s in shapes.items()}
    omega = [best[n][1] for n in ("linear", "cosine", "wsd 20%", "constant")]
    assert omega == sorted(omega) and len(set(omega)) == 4, best
    ratio = best["linear"][0] / best["wsd 20%"][0]
    assert ratio == pytest.approx(1.95, abs=0.01)  # measured 1.9533


def test_optimal_base_lr_is_the_minimiser_of_the_bound():
    shape = _shape(schedules.wsd(1.0, 300, decay_fraction=0.3, decay_shape="1-sqrt"), 300)
    gamma, omega = theory.optimal_base_lr(shape, D=2.0, G=0.5)
    assert theory.bound(gamma * shape, D=2.0, G=0.5) == pytest.approx(omega, rel=1e-12)
    for factor in (0.98, 1.02):
        assert theory.bound(factor * gamma * shape, D=2.0, G=0.5) > omega


def test_bound_of_jax_input_is_differentiable(x64):
    lrs = jnp.linspace(1.0, 0.1, 50)
    grad = jax.jit(jax.grad(lambda x: theory.bound(x, D=1.0, G=1.0)))(lrs)
    eps = 1e-6
    bump = np.zeros(50)
    bump[10] = eps
    fd = (theory.bound(np.asarray(lrs) + bump) - theory.bound(np.asarray(lrs) - bump)) / (2 * eps)
    assert float(grad[10]) == pytest.approx(fd, rel=1e-6)
    gamma, _ = jax.jit(theory.optimal_base_lr)(lrs)
    assert float(gamma) == pytest.approx(theory.optimal_base_lr(np.asarray(lrs))[0], rel=1e-12)


@pytest.mark.parametrize("T1, expected", [(8000, 0.53), (16000, 0.375)])
def test_horizon_transfer_factor(x64, T1, expected):
    transfer = theory.horizon_transfer(4000, T1)
    assert transfer.rho == pytest.approx(expected, abs=0.005)  # measured 0.5330, 0.3754
    assert (transfer.resume_step, transfer.decay_start, transfer.decay_steps) == (
        3200,
        T1 - T1 // 5,
        T1 // 5,
    )
    # The defining property: the extended schedule keeps the original's optimal base rate.
    original = _shape(schedules.wsd(1.0, 4000, decay_fraction=0.2), 4000)
    extended = _shape(transfer.schedule(peak=1.0), T1)
    assert theory.optimal_base_lr(extended)[0] == pytest.approx(
        theory.optimal_base_lr(original)[0], rel=1e-9
    )
    # The trainable schedule: the original's values up to the checkpoint, then rho * peak.
    peak = 3e-3
    lr = transfer.schedule(peak=peak, warmup_steps=100)
    np.testing.assert_allclose(
        _shape(lr, 3200),
        _shape(schedules.wsd(peak, 4000, warmup_steps=100, decay_fraction=0.2), 3200),
    )
    assert float(lr(3200)) == pytest.approx(transfer.rho * peak, rel=1e-6)
    assert float(lr(T1)) == 0.0


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match=r"`lrs` must be finite and >= 0; entry 1 is -0.1"):
        theory.bound([1.0, -0.1, 1.0])
    with pytest.raises(ValueError, match=r"the last rate must be > 0"):
        theory.bound([1.0, 0.5, 0.0])
    with pytest.raises(ValueError, match=r"`G` must be a number or one value per step \(3\)"):
        theory.bound([1.0, 1.0, 1.0], G=[1.0, 1.0])
    with pytest.raises(ValueError, match=r"`D` must be a finite number >= 0"):
        theory.bound([1.0], D=-1.0)
    with pytest.raises(ValueError, match=r"`D` must be > 0"):
        theory.optimal_base_lr([1.0, 1.0], D=0.0)
    with pytest.raises(ValueError, match=r"`G` must not be 0 on every step"):
        theory.optimal_base_lr([1.0, 1.0], G=0.0)
    with pytest.raises(ValueError, match=r"`T1` must be an integer >= 4001"):
        theory.horizon_transfer(4000, 4000)
    with pytest.raises(ValueError, match=r"`cooldown_fraction` must be a number in \(0, 1\)"):
        theory.horizon_transfer(4000, 8000, cooldown_fraction=1.0)
    with pytest.raises(ValueError, match=r"`resume_fraction` must be a number in \(0, 1\]"):
        theory.horizon_transfer(4000, 8000, resume_fraction=0.0)
    with pytest.raises(ValueError, match=r"resume step .* = 4000 must be in \[1, T1 - cooldown"):
        theory.horizon_transfer(4000, 4500, resume_fraction=1.0, cooldown_fraction=0.2)
    with pytest.raises(ValueError, match=r"`warmup_steps` must be an integer in \[0, resume_step"):
        theory.horizon_transfer(4000, 8000).schedule(1.0, warmup_steps=5000)
    assert math.isfinite(theory.bound([1.0]))
