"""schedules.laws: annealing areas, the annealing and multi-power laws, their fits, optima.

Reference data: tests/testdata/loss_curves/<size>/ holds the public loss curves of the
multi-power law's authors (thu-yao-01-luo/MultiPowerLaw, MIT), copied unchanged; the README there
gives the schedules, rebuilt here per step. The reported targets:

* annealing law, fitted on constant_24000 + cosine_24000, predicts the other seven curves of the
  25M model with a mean relative error <= 0.25% (the issue's target);
* multi-power law, fitted on cosine_24000 + constant_24000 + wsdcon_9 by the authors' two stages,
  predicts the other six with a mean error of 0.110% (25M), 0.142% (100M), 0.168% (400M).

To keep the file fast, the multi-power fits use every 4th recorded point of the training curves
and group the rate changes of 16 consecutive steps (`block=16`, shown below to move predictions
by < 1e-5); held-out errors average every recorded point except where a test says otherwise.
"""

import functools
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize as _minimize
from threadpoolctl import threadpool_limits

import schedules
from schedules import laws

DATA = pathlib.Path(__file__).parent / "testdata" / "loss_curves"
PEAK, END, WARMUP = 3e-4, 3e-5, 2160
NAMES = (
    "constant_24000",
    "cosine_24000",
    "wsdcon_9",
    "constant_72000",
    "cosine_72000",
    "wsd_20000_24000",
    "wsdld_20000_24000",
    "wsdcon_3",
    "wsdcon_18",
)
ANNEALING_TRAIN = ("constant_24000", "cosine_24000")
AUTHORS_TRAIN = ("cosine_24000", "constant_24000", "wsdcon_9")
# The authors' published 25M parameters (their README and src/config.py).
AUTHORS_25M = dict(
    L0=3.04045406,
    A=0.52468604,
    alpha=0.50786857,
    B=363.78751622,
    C=2.06560812,
    beta=0.58279013,
    gamma=0.64142257,
)
# Their per-curve mean relative errors with those parameters (logs/25.log of their repository).
AUTHORS_25M_ERRORS = {
    "cosine_24000": 0.0012760125319758468,
    "constant_24000": 0.0010536477890784137,
    "wsdcon_9": 0.000831644912161068,
    "constant_72000": 0.00046889913094910995,
    "cosine_72000": 0.002239722609597285,
    "wsd_20000_24000": 0.000998797970943345,
    "wsdld_20000_24000": 0.0009152438097478043,
    "wsdcon_3": 0.0012851551383490619,
    "wsdcon_18": 0.000705571986662838,
}
AUTHORS_PRED_E = {"25M": 0.00110, "100M": 0.00142, "400M": 0.00168}


def _rates(name: str) -> np.ndarray:
    """The per-step rates of a reference run (README of the data: the authors' definitions)."""
    warm = np.linspace(0.0, PEAK, WARMUP)  # lr[k] = peak k / 2159 for k < 2160
    if name.startswith("constant"):
        total = int(name.split("_")[1])
        rest = np.full(total - WARMUP, PEAK)
    elif name.startswith("cosine"):
        total = int(name.split("_")[1])
        k = np.arange(WARMUP, total)
        rest = END + (PEAK - END) / 2 * (1 + np.cos(np.pi * (k - WARMUP) / (total - WARMUP)))
    elif name.startswith("wsdcon"):
        low = int(name.split("_")[1]) * 1e-5
        rest = np.r_[np.full(8000 - WARMUP, PEAK), np.full(16000 - 8000, low)]
    else:  # wsd_20000_24000 (geometric) and wsdld_20000_24000 (linear)
        total, start = 24000, 20000
        k = np.arange(start, total)
        p = (k - start) / (total - start)
        decay = PEAK ** (1 - p) * END**p if name.startswith("wsd_") else PEAK * (1 - p) + END * p
        rest = np.r_[np.full(start - WARMUP, PEAK), decay]
    return np.r_[warm, rest]


@functools.cache
def _curve(size: str, name: str, every: int = 1):
    table = np.genfromtxt(DATA / size / f"{name}.csv", delimiter=",", skip_header=1)
    steps, lr, loss = table[:, 0].astype(np.int64), table[:, 1], table[:, 2]
    keep = steps != 24000  # the authors drop a point at step 24000 (none of these files has one)
    steps, lr, loss = steps[keep], lr[keep], loss[keep]
    rates = _rates(name)
    np.testing.assert_allclose(rates[steps], lr, rtol=1e-12)  # the rebuilt schedule is theirs
    return rates, steps[::every], loss[::every]


def _curves(names, size="25M", every=1):
    return {n: _curve(size, n, every) for n in names}


def _held_out(train, every=1, size="25M"):
    return _curves([n for n in NAMES if n not in train], size, every)


def minimize(*args, **kwargs):
    """scipy.optimize.minimize with one BLAS thread: L-BFGS-B's tiny linear algebra is ~10x
    slower with threaded BLAS on a busy machine (the library's fits do the same)."""
    with threadpool_limits(limits=1, user_api="blas"):
        return _minimize(*args, **kwargs)


def _mean(errors: dict) -> float:
    return float(np.mean(list(errors.values())))


# ----------------------------------------------------------------------------------------
# Areas
# ----------------------------------------------------------------------------------------


def test_annealing_area_of_a_constant_schedule_is_zero():
    s1, s2 = laws.annealing_areas(np.full(50, 0.3))
    np.testing.assert_allclose(np.asarray(s1), 0.3 * np.arange(1, 51), rtol=1e-6)
    assert np.all(np.asarray(s2) == 0.0)


def test_annealing_area_after_one_drop_approaches_d_over_one_minus_decay(x64):
    decay, d = 0.99, 0.25
    lrs = np.r_[np.full(10, 1.0), np.full(5000, 1.0 - d)]
    _, s2 = laws.annealing_areas(lrs, decay)
    s2 = np.asarray(s2)
    assert s2[9] == 0.0
    np.testing.assert_allclose(s2[10 + 99], d * (1 - decay**100) / (1 - decay), rtol=1e-12)
    np.testing.assert_allclose(s2[-1], d / (1 - decay), rtol=1e-12)


def test_annealing_areas_match_the_recurrence_and_differentiate(x64):
    rng = np.random.default_rng(0)
    lrs = np.abs(rng.normal(1.0, 0.3, 300))
    decay = 0.97
    m = np.zeros(lrs.size)
    for k in range(1, lrs.size):
        m[k] = decay * m[k - 1] + (lrs[k - 1] - lrs[k])
    s1, s2 = jax.jit(laws.annealing_areas, static_argnums=1)(jnp.asarray(lrs), decay)
    assert s2.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(s1), np.cumsum(lrs), rtol=1e-13)
    np.testing.assert_allclose(np.asarray(s2), np.cumsum(m), rtol=1e-10, atol=1e-12)
    grad = jax.jit(jax.grad(lambda x: laws.annealing_areas(x, decay)[1][-1]))(jnp.asarray(lrs))
    # S2(T) = sum_k d_k (1 - decay^(T - k)) / (1 - decay): linear in the rates.
    w = (1 - decay ** (lrs.size - np.arange(lrs.size))) / (1 - decay)
    expected = np.r_[w[1:], 0.0] - np.r_[0.0, w[1:]]
    np.testing.assert_allclose(np.asarray(grad), expected, rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------------------
# The multi-power law's definition against the authors' own numbers
# ----------------------------------------------------------------------------------------


def test_published_multipower_parameters_reproduce_the_authors_errors():
    """Their S1 + S_W, S_k and warm-up terms: per-curve errors as in their log to 2e-5.

    cosine_72000 (39M exact terms) is left out for time. The residual differences come from
    their arrays counting the rate of the recorded step too (a one-step shift).
    """
    law = laws.MultiPowerLaw(**AUTHORS_25M)
    names = [n for n in NAMES if n != "cosine_72000"]
    errors = law.errors(_curves(names))
    for name in names:
        assert errors[name] == pytest.approx(AUTHORS_25M_ERRORS[name], abs=2e-5), name


def test_grouped_rate_changes_move_predictions_by_under_1e_5():
    law = laws.MultiPowerLaw(**AUTHORS_25M)
    p = np.array([AUTHORS_25M[n] for n in laws.PARAM_NAMES["multipower"]])
    for name in ("cosine_24000", "wsd_20000_24000", "wsdcon_3"):
        lrs, steps, _ = _curve("25M", name, 4)
        grouped = laws._multipower_pred(p, laws._multipower_features(lrs, steps, 16))
        np.testing.assert_allclose(grouped, law.predict(lrs, steps), rtol=1e-5, err_msg=name)


# ----------------------------------------------------------------------------------------
# Reference fits
# ----------------------------------------------------------------------------------------

# Two of Tissue et al.'s 54 starting points (every one of the 54 reaches the same optimum on
# these curves; the default grid is exercised on synthetic data below).
SMALL_ANNEALING_GRID = [
    dict(L0=2.1, A=11.5, C=11.5, alpha=0.4),
    dict(L0=0.1, A=22.0, C=22.0, alpha=0.0),
]


@functools.cache
def _annealing_fit(warmup_as_peak: bool, size: str = "25M"):
    return laws.fit(
        "annealing",
        _curves(ANNEALING_TRAIN, size),
        warmup_as_peak=warmup_as_peak,
        grid=SMALL_ANNEALING_GRID,
    )


@pytest.mark.parametrize("warmup_as_peak", [False, True])
def test_annealing_law_predicts_seven_held_out_curves_within_025_percent(warmup_as_peak):
    law = _annealing_fit(warmup_as_peak)
    assert law.fit_info.converged == len(SMALL_ANNEALING_GRID)
    errors = law.errors(_held_out(ANNEALING_TRAIN))
    assert len(errors) == 7
    assert _mean(errors) <= 0.0025, errors
    # Measured: 0.161% with the true warm-up, 0.210% with Tissue et al.'s warm-up-at-peak.
    assert law.fit_error < _mean(errors)


@pytest.mark.parametrize("size", ["100M", "400M"])
def test_annealing_law_same_quality_on_other_model_sizes(size):
    law = _annealing_fit(False, size)
    assert _mean(law.errors(_held_out(ANNEALING_TRAIN, size=size))) <= 0.0025


def _plain_huber_sum(r, delta=1e-3):
    a = np.abs(r)
    return float(np.sum(np.where(a < delta, 0.5 * r * r, delta * (a - 0.5 * delta))))


def test_annealing_fit_finds_the_optimum_of_plain_scipy_from_the_same_starts():
    """A NumPy objective from the formula, finite-difference gradients, scipy's L-BFGS-B."""
    law = _annealing_fit(False)
    data = []
    for lrs, steps, losses in _curves(ANNEALING_TRAIN).values():
        m = np.zeros(lrs.size)
        for k in range(1, lrs.size):
            m[k] = 0.999 * m[k - 1] + (lrs[k - 1] - lrs[k])
        data.append((np.cumsum(lrs)[steps - 1], np.cumsum(m)[steps - 1], np.log(losses)))

    def objective(p):  # in units of delta^2 (the same optimum), so ftol is relative
        L0, A, alpha, C = p
        return (
            sum(
                _plain_huber_sum(y - np.log(np.maximum(L0 + A * s1**-alpha - C * s2, 1e-10)))
                for s1, s2, y in data
            )
            / 1e-6
        )

    best = min(
        (
            minimize(
                objective,
                [g["L0"], g["A"], g["alpha"], g["C"]],
                method="L-BFGS-B",
                bounds=[(0, None)] * 4,
                options={"ftol": 1e-13, "gtol": 1e-7, "maxiter": 10_000},
            )
            for g in SMALL_ANNEALING_GRID
        ),
        key=lambda r: r.fun,
    )
    ours = np.array(list(law.params.values()))
    assert law.fit_info.objective == pytest.approx(best.fun * 1e-6, rel=1e-6)
    np.testing.assert_allclose(ours, best.x, rtol=2e-3)


@functools.cache
def _multipower_fit(stage2: str, size: str = "25M"):
    # One stage-1 start: on these curves (all three sizes) it reaches the same stage-1 optimum
    # as the default 135-point grid (measured), for a tenth of the time.
    return laws.fit(
        "multipower",
        _curves(AUTHORS_TRAIN, size, every=4),
        block=16,
        stage2=stage2,
        grid={"L0": [3.2], "A": [0.55], "alpha": [0.45], "B": [550.0]},
    )


def test_multipower_authors_procedure_reproduces_their_0110_percent():
    """Their training set and two stages (L-BFGS-B surrogate, then 200-step AdamW)."""
    law = _multipower_fit("adamw")
    assert "stopped early by design" in law.fit_info.message
    errors = law.errors(_held_out(AUTHORS_TRAIN, every=4))
    assert len(errors) == 6
    assert _mean(errors) <= AUTHORS_PRED_E["25M"], errors
    for name, value in law.params.items():
        assert value == pytest.approx(AUTHORS_25M[name], rel=0.05), name


def test_multipower_default_stage2_is_the_authors_early_stop():
    """The default is "adamw" (it predicts held-out curves better than the converged fit)."""
    curves = _curves(AUTHORS_TRAIN, every=4)
    start = [{**AUTHORS_25M, "L0": 3.1}]  # a full start: stage 2 only, a few seconds
    default = laws.fit("multipower", curves, block=16, grid=start)
    adamw = laws.fit("multipower", curves, block=16, grid=start, stage2="adamw")
    assert "stopped early by design" in default.fit_info.message
    assert default.params == adamw.params


@pytest.mark.parametrize("size", ["100M", "400M"])
def test_multipower_same_quality_on_other_model_sizes(size):
    """The authors report 0.142% (100M) and 0.168% (400M); measured here (all points, block 16)
    0.133% and 0.202%: the 400M early stop lands near their parameters but not at their error
    (their published 400M parameters give 0.168% with this code). Both within 0.25%."""
    law = _multipower_fit("adamw", size)
    assert _mean(law.errors(_held_out(AUTHORS_TRAIN, every=4, size=size))) <= 0.0025


def _objective(law, curves, block=16):
    """The fit's objective (summed Huber on log losses) at `law`'s parameters."""
    p = np.array(list(law.params.values()))
    return sum(
        _plain_huber_sum(
            np.log(y) - np.log(laws._multipower_pred(p, laws._multipower_features(r, s, block)))
        )
        for r, s, y in curves.values()
    )


def test_multipower_lbfgsb_reaches_the_optimum_the_early_stop_misses():
    """Stage 2 to convergence: a lower training objective than AdamW and than the published
    parameters. It predicts the held-out curves worse than AdamW's early stop (measured 0.14%
    against 0.10%), but still within the annealing law's 0.25%."""
    adamw, lbfgsb = _multipower_fit("adamw"), _multipower_fit("lbfgsb")
    assert lbfgsb.fit_info.converged == lbfgsb.fit_info.starts == 1
    train = _curves(AUTHORS_TRAIN, every=4)
    assert lbfgsb.fit_info.objective == pytest.approx(_objective(lbfgsb, train), rel=1e-9)
    assert lbfgsb.fit_info.objective < 0.8 * adamw.fit_info.objective
    assert lbfgsb.fit_info.objective < 0.8 * _objective(laws.MultiPowerLaw(**AUTHORS_25M), train)
    assert _mean(lbfgsb.errors(_held_out(AUTHORS_TRAIN, every=4))) <= 0.0025


def test_multipower_fit_finds_the_optimum_of_plain_scipy_from_the_same_start():
    """Synthetic curves; NumPy objective and gradient written here from the definition (every
    (s, k) term, no grouping); scipy's L-BFGS-B on the raw parameters from the same start.

    Finite-difference gradients are not used here: on this problem they stall in the valley
    C -> 0, beta -> inf (G -> 1 - exp(-beta C x)) far above the optimum (measured).
    """
    truth = laws.MultiPowerLaw(L0=2.5, A=0.6, alpha=0.45, B=300.0, C=1.5, beta=0.6, gamma=0.6)
    total, warm, peak = 300, 30, 1e-3
    base = np.r_[np.linspace(0, peak, warm), np.full(total - warm, peak)]
    k = np.arange(total - warm)
    shapes = {
        "constant": base,
        "cosine": np.r_[base[:warm], 1e-4 + (peak - 1e-4) / 2 * (1 + np.cos(np.pi * k / k.size))],
        "drop": np.r_[base[:150], np.full(total - 150, 3e-4)],
    }
    rng = np.random.default_rng(1)
    steps = np.arange(40, total + 1, 20)
    curves = {
        name: (lrs, steps, truth.predict(lrs, steps) * (1 + 2e-4 * rng.standard_normal(steps.size)))
        for name, lrs in shapes.items()
    }
    start = dict(L0=2.7, A=0.6, alpha=0.45, B=250.0, C=1.0, beta=0.5, gamma=0.5)
    # A full start: stage 2 only, run to convergence (the default stops early by design).
    law = laws.fit("multipower", curves, block=1, grid=[start], stage2="lbfgsb")
    terms = []
    for lrs, st, losses in curves.values():
        kk = np.arange(1, total)
        area = np.array([[lrs[j:s].sum() for j in kk] for s in st])  # S_k(s) = sum(lrs[k:s])
        mask = kk[None, :] < st[:, None]
        s1 = np.array([lrs[:s].sum() for s in st])
        terms.append((s1, lrs[kk - 1] - lrs[kk], lrs[kk], area, mask, np.log(losses)))

    def objective(p):  # value and gradient, in units of delta^2 (the same optimum)
        L0, A, alpha, B, C, beta, gamma = p
        value, grad = 0.0, np.zeros(7)
        for s1, d, eta, area, mask, y in terms:
            x = eta**-gamma * area
            u = 1 + C * x
            g = np.where(mask, 1 - u**-beta, 0.0)
            pred = L0 + A * s1**-alpha - B * (g @ d)
            r = y - np.log(pred)
            value += _plain_huber_sum(r)
            dpred = -np.where(np.abs(r) < 1e-3, r, 1e-3 * np.sign(r)) / pred
            jac = np.stack(
                [
                    np.ones_like(s1),
                    s1**-alpha,
                    -A * s1**-alpha * np.log(s1),
                    -(g @ d),
                    -B * (np.where(mask, beta * u ** (-beta - 1) * x, 0.0) @ d),
                    -B * (np.where(mask, u**-beta * np.log(u), 0.0) @ d),
                    -B * (np.where(mask, beta * u ** (-beta - 1) * C * x * -np.log(eta), 0.0) @ d),
                ],
                1,
            )
            grad += dpred @ jac
        return value / 1e-6, grad / 1e-6

    assert law.fit_info.start == start
    plain = minimize(
        objective,
        [start[n] for n in laws.PARAM_NAMES["multipower"]],
        jac=True,
        method="L-BFGS-B",
        bounds=[(0, None)] * 7,
        options={"ftol": 1e-13, "gtol": 1e-7, "maxiter": 10_000},
    )
    # (scipy may end on "ABNORMAL": no decrease left at float64 precision.)
    assert law.fit_info.objective == pytest.approx(plain.fun * 1e-6, rel=1e-9)
    np.testing.assert_allclose(list(law.params.values()), plain.x, rtol=1e-5)


@pytest.mark.parametrize("kind", laws.KINDS)
def test_fit_recovers_a_law_from_its_own_curves_at_another_rate_scale(kind):
    """Noise-free curves of a known law, rates ~1e-2 (the default grids were written for
    ~3e-4): the default grid finds the parameters back."""
    if kind == "annealing":
        truth = laws.AnnealingLaw(L0=1.5, A=0.8, alpha=0.4, C=0.05, decay=0.99)
    else:
        truth = laws.MultiPowerLaw(L0=1.5, A=0.8, alpha=0.4, B=20.0, C=0.5, beta=0.5, gamma=0.5)
    peak, total = 1e-2, 800
    steps = np.arange(20, total + 1, 20)
    shapes = [
        np.asarray(schedules.cosine(peak, total, warmup_steps=40)(np.arange(total)), np.float64),
        np.asarray(
            schedules.wsd(peak, total, warmup_steps=40, decay_fraction=0.3)(np.arange(total)),
            np.float64,
        ),
    ]
    curves = [(lrs, steps, truth.predict(lrs, steps)) for lrs in shapes]
    options = {"decay": 0.99} if kind == "annealing" else {"block": 1, "stage2": "lbfgsb"}
    fitted = laws.fit(kind, curves, **options)
    assert fitted.fit_error < 1e-5
    for name, value in fitted.params.items():
        assert value == pytest.approx(truth.params[name], rel=2e-3), name


def test_a_fit_that_does_not_converge_says_so():
    with pytest.raises(laws.FitError, match="none of the 2 starting points converged"):
        laws.fit(
            "annealing", _curves(ANNEALING_TRAIN, every=8), grid=SMALL_ANNEALING_GRID, maxiter=2
        )


def test_fit_error_is_the_mean_of_the_per_curve_errors_on_the_fitted_curves():
    law = _annealing_fit(False)
    errors = law.errors(_curves(ANNEALING_TRAIN))
    assert law.fit_info.curves == ANNEALING_TRAIN
    assert law.fit_error == pytest.approx(_mean(errors), rel=1e-12)


# ----------------------------------------------------------------------------------------
# Law-optimal schedules
# ----------------------------------------------------------------------------------------


OPT_T, OPT_W, OPT_PEAK, OPT_MIN = 4000, 400, 3e-4, 3e-6


@functools.cache
def _rivals() -> dict:
    steps = np.arange(OPT_T)
    rivals = {
        "cosine": schedules.cosine(OPT_PEAK, OPT_T, warmup_steps=OPT_W, end_value=OPT_MIN),
        "linear": schedules.linear_decay(OPT_PEAK, OPT_T, warmup_steps=OPT_W, end_value=OPT_MIN),
        **{
            f"wsd {f}": schedules.wsd(
                OPT_PEAK, OPT_T, warmup_steps=OPT_W, decay_fraction=f, end_value=OPT_MIN
            )
            for f in (0.1, 0.2, 0.4)
        },
    }
    return {name: np.asarray(jax.jit(fn)(steps), np.float64) for name, fn in rivals.items()}


@pytest.mark.parametrize("kind", laws.KINDS)
def test_law_optimal_schedule_is_feasible_and_beats_cosine_and_wsd_under_the_law(kind):
    if kind == "multipower":
        law = laws.MultiPowerLaw(**AUTHORS_25M)
    else:
        law = laws.AnnealingLaw(L0=3.07, A=0.49, alpha=0.57, C=0.40)
    lr = laws.optimal_schedule(
        law, OPT_T, OPT_PEAK, warmup_steps=OPT_W, min_lr=OPT_MIN, iterations=1000
    )
    lrs = np.asarray(jax.jit(lr)(np.arange(OPT_T)), np.float64)
    np.testing.assert_allclose(lrs[:OPT_W], OPT_PEAK * np.arange(OPT_W) / OPT_W, rtol=1e-6)
    tail = lrs[OPT_W:]
    assert np.all(np.diff(tail) <= 1e-12) and tail.max() <= OPT_PEAK * (1 + 1e-6)
    assert tail.min() >= OPT_MIN * (1 - 1e-6)
    ours = law.predict(lrs, [OPT_T])[0]
    for name, rival in _rivals().items():
        assert ours < law.predict(rival, [OPT_T])[0], name
    if kind == "multipower":  # Luo et al.'s optimum: WSD-like, the decay late and long.
        assert lrs[OPT_T // 2] == pytest.approx(OPT_PEAK, rel=1e-3)
        assert lrs[-1] < 0.1 * OPT_PEAK


@pytest.mark.parametrize("warmup_as_peak", [False, True])
def test_final_loss_is_the_prediction_at_the_last_step(x64, warmup_as_peak):
    """final_loss (closed forms, used by optimal_schedule) against predict (scan, groups)."""
    lrs = np.asarray(
        schedules.wsd(3e-4, 3000, warmup_steps=300, decay_fraction=0.3, decay_shape="1-sqrt")(
            np.arange(3000)
        ),
        np.float64,
    )
    for law in (
        laws.MultiPowerLaw(**AUTHORS_25M, warmup_as_peak=warmup_as_peak),
        laws.AnnealingLaw(L0=3.07, A=0.49, alpha=0.57, C=0.40, warmup_as_peak=warmup_as_peak),
    ):
        final = float(law.final_loss(jnp.asarray(lrs)))
        assert final == pytest.approx(law.predict(lrs, [3000])[0], rel=1e-12), law.kind


def test_plot_optimal_draws_three_schedules(tmp_path):
    pytest.importorskip("matplotlib")
    law = laws.MultiPowerLaw(**AUTHORS_25M)
    path = tmp_path / "optimal.png"
    fig = laws.plot_optimal(  # the settings of the test above: its compiled descent is reused
        law, OPT_T, OPT_PEAK, warmup_steps=OPT_W, min_lr=OPT_MIN, path=str(path), iterations=1000
    )
    assert path.stat().st_size > 0
    assert len(fig.axes[0].lines) == 3


# ----------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------


def _good():
    lrs = np.r_[np.linspace(0.0, 1e-3, 10), np.full(90, 1e-3)]
    steps = np.arange(10, 101, 10)
    return lrs, steps, 3.0 - 0.01 * np.arange(steps.size)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r, s, y: (r, s, np.r_[y[:3], np.nan, y[4:]]), r"run-a: loss nan at step 40"),
        (lambda r, s, y: (r, s, np.r_[y[:3], 0.0, y[4:]]), r"run-a: loss 0.0 at step 40 .*> 0"),
        (lambda r, s, y: (r, s, -y), r"run-a: loss .* not > 0"),
        (lambda r, s, y: (r, np.r_[s[:3], s[2], s[4:]], y), r"run-a: steps must be strictly"),
        (lambda r, s, y: (r, np.r_[s[:-1], 101], y), r"run-a: step 101 goes past the schedule"),
        (lambda r, s, y: (r, np.r_[0, s[1:]], y), r"run-a: steps must be >= 1"),
        (lambda r, s, y: (r, s + 0.5, y), r"run-a: steps must be integers"),
        (
            lambda r, s, y: (np.r_[r[:50], -1e-4, r[51:]], s, y),
            r"run-a: lrs must be finite and >= 0, got -0.0001 at step 50",
        ),
        (
            lambda r, s, y: (np.r_[r[:50], np.inf, r[51:]], s, y),
            r"run-a: lrs must be finite and >= 0, got inf at step 50",
        ),
        (lambda r, s, y: (r, s, y[:-1]), r"run-a: losses must have one value per step"),
    ],
)
def test_bad_curves_name_the_curve_and_the_problem(change, message):
    curves = {"run-ok": _good(), "run-a": change(*_good())}
    for kind in laws.KINDS:
        with pytest.raises(ValueError, match=message):
            laws.fit(kind, curves)


def test_fewer_points_than_parameters_is_refused():
    lrs, steps, losses = _good()
    curves = {"run-a": (lrs, steps[:2], losses[:2]), "run-b": (lrs, steps[:3], losses[:3])}
    with pytest.raises(ValueError, match=r"4 parameters .* only 3 points \(run-a: 3\)"):
        laws.fit("annealing", {"run-a": (lrs, steps[:3], losses[:3])})
    with pytest.raises(ValueError, match=r"7 parameters .* only 5 points \(run-a: 2, run-b: 3\)"):
        laws.fit("multipower", curves)


def test_unknown_kind_and_misplaced_options_are_refused():
    curves = [_good()]
    with pytest.raises(ValueError, match=r"unknown law kind 'power'.*'annealing', 'multipower'"):
        laws.fit("power", curves)
    with pytest.raises(ValueError, match=r"unknown law kind"):
        laws.law("chinchilla", L0=1.0)
    with pytest.raises(ValueError, match=r"`decay` applies to kind='annealing' only"):
        laws.fit("multipower", curves, decay=0.99)
    with pytest.raises(ValueError, match=r"`block` applies to kind='multipower' only"):
        laws.fit("annealing", curves, block=4)
    with pytest.raises(ValueError, match=r"`stage2` must be one of 'lbfgsb', 'adamw'"):
        laws.fit("multipower", curves, stage2="sgd")
    with pytest.raises(ValueError, match=r"`stage2` applies to kind='multipower' only"):
        laws.fit("annealing", curves, stage2="lbfgsb")
    with pytest.raises(ValueError, match=r"`decay` must be a number in \[0, 1\)"):
        laws.fit("annealing", curves, decay=1.0)
    with pytest.raises(ValueError, match=r"`grid` has unknown parameters \['D'\]"):
        laws.fit("annealing", curves, grid={"D": [1.0]})
    with pytest.raises(ValueError, match=r"`curves` is empty"):
        laws.fit("annealing", [])
    with pytest.raises(ValueError, match=r"curves\[0\] must be a tuple \(lrs, steps, losses\)"):
        laws.fit("annealing", [(1, 2)])
    with pytest.raises(ValueError, match=r"forward area sum\(lrs\[:s\]\) is 0 at step 1"):
        laws.fit("annealing", [(np.r_[0.0, np.ones(9)], [1, 5, 9, 10], [3.0, 2.0, 2.0, 1.0])])


def test_bad_law_parameters_and_schedule_options_are_refused():
    with pytest.raises(ValueError, match=r"parameter `alpha` must be a finite number >= 0"):
        laws.AnnealingLaw(L0=1.0, A=1.0, alpha=-0.5, C=1.0)
    with pytest.raises(ValueError, match=r"`decay` must be a number in \[0, 1\)"):
        laws.AnnealingLaw(L0=1.0, A=1.0, alpha=0.5, C=1.0, decay=1.5)
    law = laws.MultiPowerLaw(**AUTHORS_25M)
    with pytest.raises(ValueError, match=r"`warmup_steps` must be < `total_steps` = 100"):
        laws.optimal_schedule(law, 100, 1e-3, warmup_steps=100)
    with pytest.raises(ValueError, match=r"`min_lr` must be in \[0, peak\)"):
        laws.optimal_schedule(law, 100, 1e-3, min_lr=1e-3)
    with pytest.raises(ValueError, match=r"`peak` must be a finite number > 0"):
        laws.optimal_schedule(law, 100, 0.0)
    with pytest.raises(ValueError, match=r"`lrs` must be finite and >= 0, got -.* at step"):
        laws.annealing_areas([1.0, -1.0])
    with pytest.raises(ValueError, match=r"curve: step 5 goes past the schedule"):
        law.predict(np.ones(4), [1, 5])
    assert math.isfinite(law.predict(np.ones(4), [1, 4])[-1])
