"""Spectral risk measures with an f-divergence shift penalty, and their worst-case weights.

A *spectrum* is a vector `σ ∈ Rⁿ` that is non-negative, non-decreasing and sums to one; `σ_i` is
the weight of the i-th smallest loss. The spectral risk of losses `ℓ ∈ Rⁿ` with shift cost
`ν ≥ 0` and penalty `Ω` is

    R_σ(ℓ) = max_{q ∈ P(σ)} <q, ℓ> − ν Ω(q),

where `P(σ)` is the permutahedron of `σ` (the convex hull of its permutations). With `ν = 0` it is
the plain L-statistic `Σ_i σ_i ℓ_(i)` (losses sorted ascending); with `σ = 1/n` it is the mean.

Penalties and the χ² scaling convention:

* `penalty="chi2"`, `chi2_convention="code"` (the default): `ν Ω(q) = (n ν / 2) ‖q − 1/n‖²`. This
  is what the authors' code computes (it passes `n ν` as its smoothing coefficient) and what the
  golden values and the convergence facts of Mehta et al. were produced with.
* `penalty="chi2"`, `chi2_convention="readme"`: `ν D_χ²(q) = ν n ‖q − 1/n‖²` as the authors'
  README writes it. It equals the "code" convention with `ν` doubled.
* `penalty="kl"`: `ν Ω(q) = ν Σ_i q_i log(n q_i)`, with no factor `n`.

The maximiser is found by sorting the losses and running pool-adjacent-violators (PAV) once:
`O(n log n)` for the sort plus `O(n)` for PAV, jittable (PAV is a `lax.fori_loop` over a
fixed-size block stack).

References:
  Mehta, Roulet, Pillutla, Harchaoui, "Distributionally robust optimization with bias and
  variance reduction", ICLR 2024 (arXiv 2310.13863); repository ronakdm/prospect.
"""

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from optlib import _validation

PENALTIES = ("chi2", "kl")
CHI2_CONVENTIONS = ("code", "readme")

# Below this shift cost the penalised problem is the plain L-statistic; the authors' code uses
# the same cut-off and returns sigma by rank.
_NU_ZERO = 1e-16
# Most rounds of centred refinement after the hull search in `weight_at_rank` (see there);
# it stops as soon as a round leaves the block's edges where they were (usually 1-2 rounds).
_REFINE_ROUNDS = 8


# ---------------------------------------------------------------------------------------------
# Validation.


def _check_n(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    return int(n)


def _float_dtype():
    return jnp.zeros(()).dtype  # float64 under jax_enable_x64, else float32


def check_spectrum(spectrum: Any, n: int | None = None, name: str = "spectrum") -> None:
    """Raises ValueError unless `spectrum` is a non-negative, non-decreasing vector summing to 1.

    Traced spectra (inside `jax.jit`) cannot be inspected and are accepted unchecked.
    """
    if isinstance(spectrum, jax.core.Tracer):
        return
    try:
        s = np.asarray(spectrum)
    except Exception as e:  # noqa: BLE001 - anything not array-like is not a spectrum
        raise ValueError(f"{name} must be a 1-D array of weights, got {spectrum!r}") from e
    if s.ndim != 1 or s.size == 0 or not np.issubdtype(s.dtype, np.number):
        raise ValueError(f"{name} must be a non-empty 1-D array of weights, got shape {s.shape}")
    if n is not None and s.shape[0] != n:
        raise ValueError(f"{name} must have length n = {n} (one weight per example), got {s.size}")
    s = s.astype(np.float64)
    # float32 spectra of 1e5 entries still sum to 1 within ~1e-5; float64 ones to ~1e-13.
    tol = 1e-9 if np.asarray(spectrum).dtype == np.float64 else 1e-4
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{name} must be finite")
    if s.min() < -tol:
        raise ValueError(f"{name} must be non-negative, got a minimum of {s.min()}")
    if s.size > 1 and np.diff(s).min() < -tol:
        i = int(np.argmin(np.diff(s)))
        raise ValueError(
            f"{name} must be non-decreasing (weights of losses in ascending order), but "
            f"{name}[{i}] = {s[i]} > {name}[{i + 1}] = {s[i + 1]}"
        )
    if abs(s.sum() - 1.0) > tol * max(1.0, s.size / 1e3):
        raise ValueError(f"{name} must sum to 1, got {s.sum()}")


def _check_penalty(penalty: Any, chi2_convention: Any) -> None:
    _validation.check_choice("penalty", penalty, PENALTIES)
    _validation.check_choice("chi2_convention", chi2_convention, CHI2_CONVENTIONS)


# ---------------------------------------------------------------------------------------------
# Spectra.


def uniform(n: int) -> jax.Array:
    """The uniform spectrum `σ_i = 1/n`: the spectral risk is the mean loss (ERM).

    >>> import optlib
    >>> optlib.spectral.uniform(4).tolist()
    [0.25, 0.25, 0.25, 0.25]
    """
    n = _check_n(n)
    return jnp.full((n,), 1.0 / n, _float_dtype())


def cvar(n: int, alpha: float = 0.5) -> jax.Array:
    """The CVaR (superquantile) spectrum at level `alpha`: the mean of the top `1 − alpha` tail.

    With `k = ⌊n α⌋` (0-based), index `k` gets `1 − (n − k − 1)/(n (1 − α))` and every later
    index gets `1/(n (1 − α))`. When the mass on index `k` is at most 1e-12 (a rounding of
    `n α` just below an integer), `1/(n − k)` goes on every index `≥ k`, as in the authors' code.

    Args:
      n: number of examples.
      alpha: level in [0, 1); 0 gives the uniform spectrum.

    Returns:
      The spectrum, shape `(n,)`, ascending-loss order.

    >>> import optlib
    >>> optlib.spectral.cvar(8, 0.5).tolist()
    [0.0, 0.0, 0.0, 0.0, 0.25, 0.25, 0.25, 0.25]
    """
    n = _check_n(n)
    _validation.check_range("alpha", alpha, 0.0, 1.0, high_open=True)
    dtype = _float_dtype()
    alpha = jnp.asarray(alpha, dtype)
    idx = jnp.arange(n)
    k = jnp.floor(n * alpha).astype(idx.dtype)
    tail = 1.0 / (n * (1.0 - alpha))
    frac = 1.0 - (n - k - 1) * tail
    regular = jnp.where(idx > k, tail, jnp.where(idx == k, frac, 0.0))
    fallback = jnp.where(idx >= k, 1.0 / (n - k), 0.0)
    return jnp.where(frac > 1e-12, regular, fallback).astype(dtype)


def extremile(n: int, r: float = 2.0) -> jax.Array:
    """The extremile spectrum `σ_i = (i/n)^r − ((i − 1)/n)^r`, `i = 1..n`.

    Args:
      n: number of examples.
      r: exponent `>= 1` (1 gives the uniform spectrum).

    Returns:
      The spectrum, shape `(n,)`, ascending-loss order.

    >>> import optlib
    >>> (optlib.spectral.extremile(4, 2.0) * 16).tolist()
    [1.0, 3.0, 5.0, 7.0]
    """
    n = _check_n(n)
    _validation.check_range("r", r, 1.0, None)
    dtype = _float_dtype()
    i = jnp.arange(n + 1, dtype=dtype) / n
    cdf = i ** jnp.asarray(r, dtype)
    return jnp.diff(cdf)


def esrm(n: int, rho: float = 1.0) -> jax.Array:
    """The exponential spectral risk measure `σ_i = e^{−ρ}(e^{ρ i/n} − e^{ρ(i−1)/n})/(1 − e^{−ρ})`.

    Args:
      n: number of examples.
      rho: risk aversion `> 0`.

    Returns:
      The spectrum, shape `(n,)`, ascending-loss order.

    >>> import optlib
    >>> s = optlib.spectral.esrm(8, 1.0)
    >>> round(float(s[0]), 6), round(float(s[-1]), 6), round(float(s.sum()), 6)
    (0.077489, 0.185887, 1.0)
    """
    n = _check_n(n)
    _validation.check_range("rho", rho, 0.0, None, low_open=True)
    dtype = _float_dtype()
    rho = jnp.asarray(rho, dtype)
    i = jnp.arange(n, dtype=dtype)
    # e^{ρ((i−1)/n − 1)} (e^{ρ/n} − 1) / (1 − e^{−ρ}), with expm1 for small ρ/n.
    return jnp.exp(rho * (i / n - 1.0)) * jnp.expm1(rho / n) / (-jnp.expm1(-rho))


# ---------------------------------------------------------------------------------------------
# Worst-case weights.


def chi2_coefficient(n: int, shift_cost: ArrayLike, chi2_convention: str = "code") -> jax.Array:
    """The curvature `c` of the χ² penalty, `ν Ω(q) = (c/2) ‖q − 1/n‖²`.

    `c = n ν` in the "code" convention and `2 n ν` in the "readme" one.
    """
    return n * shift_cost * (2.0 if chi2_convention == "readme" else 1.0)


def _pav(num: jax.Array, den: jax.Array, combine, value) -> jax.Array:
    """Non-decreasing isotonic fit by pool-adjacent-violators over a fixed-size block stack.

    Each point starts as its own block with accumulators `(num_i, den_i)`; `combine` merges two
    blocks' accumulators, `value` maps accumulators to the block's fitted value. Scanning left to
    right, a pushed block is merged with its predecessor while the predecessor's value is `>=`
    its own. Returns each point's block accumulators. O(n): each point is merged at most once.
    """
    n = num.shape[0]
    end0 = jnp.zeros((n,), jnp.int32)

    def push(i, carry):
        s_num, s_den, s_end, top = carry
        s_num = s_num.at[top].set(num[i])
        s_den = s_den.at[top].set(den[i])
        s_end = s_end.at[top].set(i + 1)
        top = top + 1

        def violated(c):
            s_num, s_den, _, top = c
            prev = value(s_num[top - 2], s_den[top - 2])
            last = value(s_num[top - 1], s_den[top - 1])
            return (top >= 2) & (prev >= last)

        def merge(c):
            s_num, s_den, s_end, top = c
            m_num, m_den = combine(s_num[top - 2], s_den[top - 2], s_num[top - 1], s_den[top - 1])
            s_num = s_num.at[top - 2].set(m_num)
            s_den = s_den.at[top - 2].set(m_den)
            s_end = s_end.at[top - 2].set(s_end[top - 1])
            return s_num, s_den, s_end, top - 1

        return jax.lax.while_loop(violated, merge, (s_num, s_den, s_end, top))

    carry = (jnp.zeros_like(num), jnp.zeros_like(den), end0, jnp.int32(0))
    s_num, s_den, s_end, top = jax.lax.fori_loop(0, n, push, carry)
    # Unused stack slots get end = n + 1 so that searchsorted never lands on them.
    ends = jnp.where(jnp.arange(n) < top, s_end, n + 1)
    block_of = jnp.searchsorted(ends, jnp.arange(n), side="right")
    return s_num[block_of], s_den[block_of]


def _sorted_chi2(sorted_losses, spectrum, c):
    n = sorted_losses.shape[0]
    base = sorted_losses / c + 1.0 / n
    a = base - spectrum
    total, count = _pav(
        a,
        jnp.ones_like(a),
        lambda n1, d1, n2, d2: (n1 + n2, d1 + d2),
        lambda num, den: num / den,
    )
    fit = total / count
    # σ + (a − v) rather than base − v: exact on singleton blocks (the common case for small ν),
    # where base is large and its rounding would swamp σ.
    return spectrum + (a - fit)


def _sorted_kl(sorted_losses, spectrum, nu):
    n = sorted_losses.shape[0]
    z = sorted_losses / nu
    log_sigma = jnp.log(spectrum)  # -inf where sigma is 0: such blocks always merge forward
    lse_z, lse_sigma = _pav(
        z,
        log_sigma,
        lambda n1, d1, n2, d2: (jnp.logaddexp(n1, n2), jnp.logaddexp(d1, d2)),
        lambda num, den: num - den - math.log(n),
    )
    # Σ_B σ · softmax_B(z): exactly σ_i on singleton blocks.
    return jnp.exp(lse_sigma + (z - lse_z))


def worst_case_weights(
    losses: ArrayLike,
    spectrum: ArrayLike,
    shift_cost: ArrayLike = 1.0,
    penalty: str = "chi2",
    *,
    chi2_convention: str = "code",
) -> jax.Array:
    """The maximising distribution `q* = argmax_{q ∈ P(σ)} <q, ℓ> − ν Ω(q)`.

    χ² penalty: with `c = n ν` ("code" convention) or `2 n ν` ("readme"), `q*` is the Euclidean
    projection of `1/n + ℓ/c` onto the permutahedron `P(σ)`. Sort the losses ascending, fit
    `a_i = ℓ̃_i/c + 1/n − σ_i` by a non-decreasing isotonic regression `v` (PAV), and set
    `q̃_i = ℓ̃_i/c + 1/n − v_i`.

    KL penalty: inside each PAV block `B`, `q_i ∝ exp(ℓ_i/ν)` with total mass `Σ_B σ`; blocks
    are pooled while their values `logsumexp(ℓ̃_B/ν) − log Σ_B σ − log n` decrease.

    Either way every block carries exactly its σ-mass, so `q*` sums to 1 and lies in `P(σ)`.
    With `ν < 1e-16` the result is `σ` by rank (ties broken by position, as a stable sort).

    Args:
      losses: the n losses, shape `(n,)`.
      spectrum: the spectrum `σ`, shape `(n,)`, non-negative, non-decreasing, summing to 1.
      shift_cost: `ν >= 0`.
      penalty: "chi2" or "kl".
      chi2_convention: "code" (`(nν/2)‖q − 1/n‖²`, default) or "readme" (`nν‖q − 1/n‖²`).

    Returns:
      `q*`, shape `(n,)`, in the order of `losses`.

    >>> import jax.numpy as jnp, optlib
    >>> losses = jnp.array([0.3, 2.0, 0.1, 1.5])
    >>> optlib.spectral.worst_case_weights(losses, optlib.spectral.cvar(4, 0.5), 0.0).tolist()
    [0.0, 0.5, 0.0, 0.5]
    >>> q = optlib.spectral.worst_case_weights(losses, optlib.spectral.cvar(4, 0.5), 1.0)
    >>> [round(x, 4) for x in q.tolist()]
    [0.0833, 0.5, 0.0333, 0.3833]
    """
    _check_penalty(penalty, chi2_convention)
    _validation.check_non_negative("shift_cost", shift_cost)
    losses = jnp.asarray(losses)
    if losses.ndim != 1:
        raise ValueError(f"losses must be a 1-D array, got shape {losses.shape}")
    n = losses.shape[0]
    check_spectrum(spectrum, n)
    if not jnp.issubdtype(losses.dtype, jnp.floating):
        losses = losses.astype(_float_dtype())
    dtype = losses.dtype
    spectrum = jnp.asarray(spectrum, dtype)
    nu = jnp.asarray(shift_cost, dtype)

    order = jnp.argsort(losses, stable=True)
    sorted_losses = losses[order]
    tiny = nu < _NU_ZERO
    nu_safe = jnp.where(tiny, 1.0, nu)
    if penalty == "chi2":
        c = chi2_coefficient(n, nu_safe, chi2_convention)
        q_sorted = _sorted_chi2(sorted_losses, spectrum, c)
    else:
        q_sorted = _sorted_kl(sorted_losses, spectrum, nu_safe)
    q_sorted = jnp.where(tiny, spectrum, q_sorted)
    return jnp.zeros_like(q_sorted).at[order].set(q_sorted)


def spectral_risk(
    losses: ArrayLike,
    spectrum: ArrayLike,
    shift_cost: ArrayLike = 1.0,
    penalty: str = "chi2",
    *,
    chi2_convention: str = "code",
) -> jax.Array:
    """The penalised spectral risk `max_{q ∈ P(σ)} <q, ℓ> − ν Ω(q)`.

    Differentiable in `losses`: by Danskin's theorem the gradient is `q*`
    (`worst_case_weights`). The weights are held constant under differentiation, so first
    derivatives are exact but higher derivatives are not those of the risk.

    Args: as `worst_case_weights`.

    Returns:
      A scalar.

    >>> import jax, jax.numpy as jnp, optlib
    >>> losses = jnp.array([0.3, 2.0, 0.1, 1.5])
    >>> round(float(optlib.spectral.spectral_risk(losses, optlib.spectral.cvar(4, 0.5), 0.0)), 6)
    1.75
    >>> jax.grad(optlib.spectral.spectral_risk)(losses, optlib.spectral.cvar(4, 0.5), 0.0).tolist()
    [0.0, 0.5, 0.0, 0.5]
    """
    losses = jnp.asarray(losses)
    q = jax.lax.stop_gradient(
        worst_case_weights(losses, spectrum, shift_cost, penalty, chi2_convention=chi2_convention)
    )
    n = losses.shape[0]
    nu = jnp.asarray(shift_cost, q.dtype)
    if penalty == "chi2":
        c = chi2_coefficient(n, nu, chi2_convention)
        pen = 0.5 * c * jnp.sum((q - 1.0 / n) ** 2)
    else:
        pen = nu * jnp.sum(jnp.where(q > 0, q * jnp.log(jnp.where(q > 0, n * q, 1.0)), 0.0))
    return jnp.dot(q, losses) - pen


# ---------------------------------------------------------------------------------------------
# One weight from sorted losses, without the serial PAV (used by Prospect at every step).


def _lower_hull_bridge(x: jax.Array, y: jax.Array, p: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The edge `(lo, hi)` of the lower convex hull of points `(x_k, y_k)` spanning `(p, p+1)`.

    The points are the cumulative sums of a PAV problem (`x` non-decreasing), so the hull's
    slopes are the isotonic fit and `[lo, hi)` is the PAV block holding element `p`. Start from
    the chord `(0, n)`; the point farthest below the current chord is a hull vertex, and it
    replaces the endpoint on its side of `p`. Every round is one vectorised pass, the interval
    shrinks strictly, and on sorted losses a handful of rounds suffice.
    """
    ks = jnp.arange(x.shape[0])

    def body(carry):
        lo, hi, _ = carry
        slope = (y[hi] - y[lo]) / (x[hi] - x[lo])
        f = (y - y[lo]) - slope * (x - x[lo])
        f = jnp.where((ks > lo) & (ks < hi), f, jnp.inf)
        f_min = jnp.min(f)
        # Not jnp.argmin: XLA:CPU lowers it to a variadic reduce ~200x slower than two mins.
        k = jnp.min(jnp.where(f <= f_min, ks, ks.shape[0]))
        below = f_min < 0
        lo = jnp.where(below & (k <= p), k, lo)
        hi = jnp.where(below & (k > p), k, hi)
        return lo, hi, below

    lo, hi, _ = jax.lax.while_loop(
        lambda c: c[2], body, (jnp.zeros((), ks.dtype), jnp.full((), x.shape[0] - 1), True)
    )
    return lo, hi


def _cumsum0(a: jax.Array, reverse: bool = False) -> jax.Array:
    """`[0, a_0, a_0 + a_1, ...]` (or the suffix sums `[..., a_{n-1}, 0]` with `reverse`).

    An associative scan, not `jnp.cumsum`: XLA:CPU's cumsum accumulates sequentially, which is
    both 2x slower at n = 1e4 and drifts by O(n ε) (in float32 at n = 1e5 that moves the hull's
    edges by many points); the scan's tree has O(log n) roundings per sum.
    """
    zero = jnp.zeros((1,), a.dtype)
    sums = jax.lax.associative_scan(jnp.add, a, reverse=reverse)
    return jnp.concatenate([sums, zero] if reverse else [zero, sums])


def weight_at_rank(
    sorted_losses: jax.Array,
    spectrum: jax.Array,
    p: jax.Array,
    shift_cost: ArrayLike,
    penalty: str = "chi2",
    chi2_convention: str = "code",
) -> jax.Array:
    """`q*` of the p-th smallest loss (0-based), given the losses sorted ascending.

    Equals `worst_case_weights(sorted_losses, ...)[p]` without the serial PAV: the PAV block of
    `p` is the lower-hull edge over `p` of the cumulative-sum diagram (`_lower_hull_bridge`),
    its edges are then refined with sums centred on the block's value and taken outward from
    `p` (so float32 keeps ~1e-7 relative accuracy at n = 1e5), and its value comes from masked
    reductions over the block. A few `O(n)` vectorised passes, which is what makes a Prospect
    epoch cheap.
    """
    n = sorted_losses.shape[0]
    dtype = sorted_losses.dtype
    spectrum = jnp.asarray(spectrum, dtype)
    nu = jnp.asarray(shift_cost, dtype)
    tiny = nu < _NU_ZERO
    nu = jnp.where(tiny, 1.0, nu)
    ks = jnp.arange(n)
    if penalty == "chi2":
        c = chi2_coefficient(n, nu, chi2_convention)
        e = sorted_losses / c + 1.0 / n - spectrum  # the points' values a_i
        w = jnp.ones_like(e)  # and their weights
        x = jnp.arange(n + 1, dtype=dtype)
    else:
        z = (sorted_losses - sorted_losses[p]) / nu
        # Relative to the queried loss, so p's own term is 1; cap so the cumsum stays finite.
        cap = math.log(float(jnp.finfo(dtype).max)) - math.log(n) - 2.0
        e = jnp.exp(jnp.minimum(z, cap))
        w = n * spectrum
        x = _cumsum0(w)
    lo, hi = _lower_hull_bridge(x, _cumsum0(e), p)
    # The hull of the raw cumulative sums locates the block only to the rounding of sums of
    # O(1) size (in float32 that moves edges by many points). Refine: with the block's value v,
    # the true edges are where F_k = Σ_{i<k} (e_i − v w_i) is smallest left and right of p.
    # F is summed outward from p, so near the edges it is small and resolves them to the
    # precision of the data.
    kp = jnp.arange(n + 1)

    def refine(carry):
        lo, hi, _, rounds = carry
        block = (ks >= lo) & (ks < hi)
        v = jnp.sum(jnp.where(block, e, 0.0)) / jnp.sum(jnp.where(block, w, 0.0))
        d = e - v * w
        # F_k − F_p, summed outward from p: forward for k > p, backward for k <= p.
        right = _cumsum0(jnp.where(ks >= p, d, 0.0))
        left = -_cumsum0(jnp.where(ks < p, d, 0.0), reverse=True)
        right = jnp.where(kp > p, right, jnp.inf)
        left = jnp.where(kp <= p, left, jnp.inf)
        new_lo = jnp.max(jnp.where(left <= jnp.min(left), kp, -1))
        new_hi = jnp.min(jnp.where(right <= jnp.min(right), kp, n + 1))
        moved = (new_lo != lo) | (new_hi != hi)
        return new_lo, new_hi, moved, rounds + 1

    lo, hi, _, _ = jax.lax.while_loop(
        lambda c: c[2] & (c[3] < _REFINE_ROUNDS), refine, (lo, hi, True, 0)
    )
    block = (ks >= lo) & (ks < hi)
    if penalty == "chi2":
        fit = jnp.sum(jnp.where(block, e, 0.0)) / (hi - lo).astype(dtype)
        q = spectrum[p] + (e[p] - fit)
    else:
        lse = jax.nn.logsumexp(jnp.where(block, z, -jnp.inf))
        q = jnp.sum(jnp.where(block, spectrum, 0.0)) * jnp.exp(-lse)
    return jnp.where(tiny, spectrum[p], q)
