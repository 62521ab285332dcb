"""Tests for the `schedules` package: golden values, properties, bad input, optax use.

Golden values come from ALGORITHMS.md section 10 and tests/testdata/golden_refinement.json
(produced with the authors' own refinement code). Property tests evaluate schedules eagerly
on a fixed grid of steps (fixed shapes keep the op cache warm); jit is compared on a fixed
table of schedules whose jitted versions are built once.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import schedules
from tests import golden

GOLDEN = golden.load("golden_refinement.json")
# The authors' recorded norm sequences (facebookresearch/adaptive_scheduling @ 76a4288,
# norm_sequences_l1/*.csv). Only rcnn_gnorm.csv (187 KB) is vendored; vit, roberta and
# imagenet (1.7-3.5 MB each) are not, and their golden rows skip unless copied here (see the
# README there).
NORM_SEQUENCES = golden.TESTDATA / "refinement_norms"

GRID = jnp.arange(512, dtype=jnp.int32)  # every property test evaluates on this grid
_POSITIVE_FLOOR = ("exponential", "inverse-proportional")  # shapes that need end_value > 0
HORIZON = 400  # schedule lengths drawn below stay under this, so the grid sees the tail
DELTA = 2.0**-10  # left limits are taken at b - DELTA (exact in float32 for b < 2**13)
B = 2**24 + 1  # the first integer float32 cannot represent
PAD = 2048  # every eager evaluation uses this shape
PROPS = settings(max_examples=20, deadline=None)


def values(schedule, steps=GRID) -> np.ndarray:
    """Evaluates eagerly on a zero-padded array of fixed length, so eager ops compile once."""
    steps = np.asarray(steps)
    padded = np.zeros(PAD, np.float32 if steps.dtype.kind == "f" else np.int32)
    padded[: steps.size] = steps
    return np.asarray(schedule(jnp.asarray(padded)), dtype=np.float64)[: steps.size]


# ------------------------------------------------------------------------------------------
# Golden values.
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_refined_constant_norms_give_exact_linear_decay(kind):
    raw = schedules.refined_values(np.ones(10), kind, normalize=False)  # the authors' units
    np.testing.assert_allclose(raw, GOLDEN["const_norms_T10_raw"], rtol=1e-12, atol=1e-12)
    norms = np.full(10, 3.7)  # the normalised schedule does not depend on the scale
    normalized = schedules.refined_values(norms, kind)
    np.testing.assert_allclose(normalized, GOLDEN["const_norms_T10_normalized"], rtol=1e-12)
    lr = schedules.refined(norms, kind, peak=2.0)
    expected = 2.0 * np.asarray(GOLDEN["const_norms_T10_normalized"])
    np.testing.assert_allclose(values(lr, jnp.arange(12)), np.r_[expected, 0, 0], atol=1e-6)


def _synthetic_profile(n=2000):
    from scipy.ndimage import gaussian_filter1d  # scipy is a dependency of jax

    knots, heights = [0, 0.003, 0.02, 0.03, 0.1, 1], [15, 6, 4, 2, 1, 1]
    profile = np.interp(np.linspace(0, 1, n), knots, heights)
    return gaussian_filter1d(profile, sigma=40, mode="nearest")


def test_refined_synthetic_profile_golden():
    gold = GOLDEN["synthetic_profile2"]
    norms = _synthetic_profile()
    n = len(norms)
    table = schedules.refined_values(norms, "sgd", smoothing=0.1)
    assert np.argmax(table) / n == gold["argmax_frac"]  # 13.5% automatic warm-up
    lr = schedules.refined(norms, "sgd", smoothing=0.1, peak=0.5)
    for frac, expected in gold["value_at"].items():
        t = int(float(frac) * n)
        assert table[t] == pytest.approx(expected, rel=1e-12, abs=1e-15)
        assert float(lr(t)) == pytest.approx(0.5 * expected, rel=1e-6)


def test_refined_median_smoothing_matches_authors_recipe():
    """The running median equals scipy's median_filter under the authors' end padding."""
    from scipy.ndimage import median_filter

    rng = np.random.default_rng(0)

    def reference(norms, resolution, kind):
        n = resolution or len(norms)
        x = np.linspace(0, 1, n)
        if len(norms) < n:
            norms = np.interp(x, np.linspace(0, 1, len(norms)), norms)
        width = 2 * (int(0.1 * n) // 2) + 1
        pad = 2 * width
        smooth = median_filter(np.pad(norms, (0, pad), mode="reflect"), width, mode="nearest")
        smooth = np.interp(x, np.linspace(0, 1, len(norms)), smooth[:-pad])
        w = smooth**-2.0 if kind == "sgd" else 1.0 / smooth
        tail = np.cumsum(w[::-1])[::-1]
        out = np.r_[w[:-1] * tail[1:] / w[-1], 0.0]
        return out / out.max()

    for length, resolution, kind in [(300, None, "sgd"), (120, 700, "adam"), (3000, 500, "sgd")]:
        norms = rng.lognormal(size=length) * np.linspace(3, 1, length)
        got = schedules.refined_values(norms, kind, 0.1, resolution)
        np.testing.assert_allclose(got, reference(norms, resolution, kind), rtol=1e-12)


def test_refined_rising_tail_anneals_faster():
    flat = _synthetic_profile()
    rising = flat * np.interp(np.linspace(0, 1, len(flat)), [0, 0.6, 1], [1, 1, 4])
    a = schedules.refined_values(flat, "sgd")
    b = schedules.refined_values(rising, "sgd")
    assert b[int(0.9 * len(b))] < 0.5 * a[int(0.9 * len(a))]


_RECORDED = [k for k in GOLDEN if k.startswith("repo_")]


@pytest.mark.parametrize("name", _RECORDED)
def test_refined_recorded_profiles_golden(name):
    path = NORM_SEQUENCES / name.removeprefix("repo_")
    if not path.exists():
        pytest.skip(
            f"the authors' recorded norm sequence {path.name} (1.7-3.5 MB, facebookresearch/"
            f"adaptive_scheduling norm_sequences_l1/) is not vendored; copy it to {path} to run"
        )
    with path.open() as f:
        rows = list(csv.reader(f))[1:]
    norms = np.array([float(r[1]) for r in rows])
    norms = norms[~np.isinf(norms)][2:-2]  # the authors' clean-up of wandb exports
    gold = GOLDEN[name]
    kind = "adam" if "_1" in gold["weights"] else "sgd"
    table = schedules.refined_values(norms, kind, smoothing=0.1, resolution=10_000)
    n = len(table)
    assert np.argmax(table) / n == pytest.approx(gold["argmax_frac"], abs=1.5e-4)
    for frac, expected in gold["value_at"].items():
        assert table[int(float(frac) * n)] == pytest.approx(expected, abs=6e-5)


def test_uba_phi_two_is_cosine_and_midpoint():
    for warmup in (0, 7):
        u = schedules.uba(0.3, 97, phi=2.0, end_value=0.01, warmup_steps=warmup)
        c = schedules.cosine(0.3, 97, end_value=0.01, warmup_steps=warmup)
        np.testing.assert_allclose(values(u), values(c), atol=2e-7)
    for phi in (0.25, 1.0, 2.0, 4.0, 10.0):
        u = values(schedules.uba(1.0, 100, phi=phi), jnp.array([0, 50, 100]))
        np.testing.assert_allclose(u, [1.0, 2.0 / (phi + 2.0), 0.0], atol=1e-6)
    # phi > 2 decays faster than cosine early, phi < 2 stays higher.
    cos = values(schedules.cosine(1.0, 100))
    assert (values(schedules.uba(1.0, 100, phi=4.0))[1:100] < cos[1:100]).all()
    assert (values(schedules.uba(1.0, 100, phi=1.0))[1:100] > cos[1:100]).all()


def test_rex_closed_form():
    t = np.arange(0, 101)
    z = np.minimum(t / 100.0, 1.0)
    np.testing.assert_allclose(
        values(schedules.rex(1.0, 100), jnp.asarray(t)), 2 * (1 - z) / (2 - z), atol=1e-6
    )
    got = values(schedules.rex(2.0, 10, end_value=0.5), jnp.array([5, 9, 10, 11]))
    np.testing.assert_allclose(got, 0.5 + 1.5 * np.array([2 / 3, 1 / 5.5, 0, 0]), atol=1e-6)
    np.testing.assert_allclose(
        values(schedules.rex(1.0, 50, alpha=0.0)), values(schedules.linear_decay(1.0, 50))
    )


_MIDPOINT = {  # value at half the decay with peak 1 and end_value 0.1
    "linear": 0.55,
    "cosine": 0.55,
    "1-sqrt": 0.1 + 0.9 * (1 - math.sqrt(0.5)),
    "1-square": 0.1 + 0.9 * 0.75,
    "rex": 0.1 + 0.9 * (2 / 3),
    "exponential": math.sqrt(0.1),
    "inverse-proportional": 1 / 5.5,  # 1 / (1 + p (1/m - 1)) at p = 1/2, m = 0.1
}


@pytest.mark.parametrize("shape", schedules.DECAY_SHAPES)
def test_wsd_shapes_at_phase_boundaries(shape):
    w, t_total, d = 10, 100, 20
    s = t_total - d
    lr = schedules.wsd(
        1.0, t_total, warmup_steps=w, decay_steps=d, decay_shape=shape, end_value=0.1
    )
    steps = jnp.array([0, w - 1, w, s - 1, s, s + d // 2, t_total, t_total + 50])
    expected = [0.0, (w - 1) / w, 1.0, 1.0, 1.0, _MIDPOINT[shape], 0.1, 0.1]
    np.testing.assert_allclose(values(lr, steps), expected, atol=1e-6)


def test_wsd_decay_fraction_and_known_values():
    one_minus_sqrt = schedules.wsd(1.0, 1000, decay_fraction=0.2, decay_shape="1-sqrt")
    assert float(one_minus_sqrt(900)) == pytest.approx(0.2929, abs=1e-4)  # half the decay
    assert float(one_minus_sqrt(799)) == 1.0
    default = schedules.wsd(1.0, 1000)  # 10% decay by default
    assert float(default(900)) == 1.0 and float(default(901)) < 1.0
    # MiniCPM's half-life decay: geometric to end = 0.5 ** (D / T_half) halves every T_half.
    half_life, d = 10, 40
    exp = schedules.wsd(
        1.0, 200, decay_steps=d, decay_shape="exponential", end_value=0.5 ** (d / half_life)
    )
    steps = jnp.array([160 + k * half_life for k in range(5)])
    np.testing.assert_allclose(values(exp, steps), 0.5 ** np.arange(5), rtol=1e-6)


def test_wsd_equals_branch_from_warmup():
    for shape in schedules.DECAY_SHAPES:
        wsd = schedules.wsd(
            2.0, 300, warmup_steps=20, decay_steps=70, decay_shape=shape, end_value=0.2
        )
        br = schedules.branch(schedules.warmup(2.0, 20), 230, 70, shape, end_value=0.2)
        np.testing.assert_allclose(values(wsd), values(br), rtol=1e-6, atol=1e-7)


def test_wsd_s_checkpoints():
    checkpoints = [100, 250, 400]
    lr = schedules.wsd_s(1.0, checkpoints, warmup_steps=10, decay_fraction=0.1)
    v = values(lr)
    for c in checkpoints[:-1]:
        assert v[c] == 1.0 and v[c - 1] < 1.0  # back to the peak at once, no re-warm-up
    assert v[400:].max() == 0.0
    for c, d in zip(checkpoints, [10, 15, 15], strict=True):  # 10% of each cycle
        assert v[c - d] == 1.0 and v[c - d + 1] < 1.0  # so 10% of the final compute
    cumulative = schedules.wsd_s(1.0, checkpoints, decay_fraction=0.1, decay_of="cumulative")
    vc = values(cumulative)
    for c, d in zip(checkpoints, [10, 25, 40], strict=True):  # 10% of the compute so far
        assert vc[c - d] == 1.0 and vc[c - d + 1] < 1.0
    single = schedules.wsd_s(1.0, [300], warmup_steps=10, decay_steps=30, decay_shape="cosine")
    wsd = schedules.wsd(1.0, 300, warmup_steps=10, decay_steps=30, decay_shape="cosine")
    np.testing.assert_allclose(values(single), values(wsd), atol=1e-7)
    inverse = schedules.wsd_s(
        1.0, [100, 200], decay_steps=[10, 20], decay_shape="inverse", end_value=0.1
    )
    assert float(inverse(190)) == pytest.approx(1 / 5.5, rel=1e-6)
    canonical = schedules.wsd_s(
        1.0, [100, 200], decay_steps=[10, 20], decay_shape="inverse-proportional", end_value=0.1
    )
    np.testing.assert_array_equal(values(inverse), values(canonical))  # "inverse" is an alias


@pytest.mark.parametrize("k", [0, 137, B + 5])
def test_branch_as_the_wsd_experiments_call_it(k):
    """`branch(base, at_step=k, decay_steps=D, shape="1-sqrt", end_value=0.0)` off a run."""
    d = 300
    base = schedules.cosine(1.0, total_steps=2**30, warmup_steps=100)  # still near its peak
    lr = schedules.branch(base, at_step=k, decay_steps=d, shape="1-sqrt", end_value=0.0)
    steps = np.array([k - 1, k, k + 1, k + d // 4, k + d - 1, k + d, k + d + 1, k + 10 * d])
    steps = steps[steps >= 0]
    got = values(lr, steps.astype(np.int32))
    at_k = float(base(k))
    # The base before k, continuous at k (starts from base(k)), 1-sqrt over D steps.
    expected = [float(base(t)) if t < k else at_k * (1 - math.sqrt((t - k) / d)) for t in steps]
    expected = np.where(steps >= k + d, 0.0, expected)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    assert float(lr(k)) == at_k  # exactly continuous at the branch point
    assert float(lr(k + d)) == 0.0 and float(lr(k + 10 * d)) == 0.0  # end_value, and stays
    assert np.all(np.diff(got[steps >= k]) <= 0.0)
    np.testing.assert_allclose(values(jax.jit(lr), steps.astype(np.int32)), got, rtol=1e-6)


def test_infinite_mae_defaults_and_anneal_on_demand():
    t = 1000
    lr = schedules.infinite(
        1.0,
        warmup_steps=50,
        cooldown_steps=250,
        constant_value=0.25,
        anneal_start=800,
        anneal_steps=200,
    )
    steps = jnp.array([0, 25, 50, 175, 300, 799, 900, 1000, 5000])
    expected = [0.0, 0.5, 1.0, 0.625, 0.25, 0.25, 0.25 * 0.04**0.5, 0.01, 0.01]
    np.testing.assert_allclose(values(lr, steps), expected, rtol=1e-5, atol=1e-7)
    rs = schedules.infinite(1.0, 50, 250, 0.25, cooldown_shape="rsqrt", alpha=10.0)
    v = values(rs, jnp.arange(t))
    assert v[50] == 1.0 and v[300] == pytest.approx(0.25) and v[999] == pytest.approx(0.25)
    assert np.all(np.diff(v[50:]) <= 1e-7)
    h = lambda x: 1 / math.sqrt(1 + 10 * x) - 1
    assert v[175] == pytest.approx(1 - 0.75 * h(0.5) / h(1.0), rel=1e-6)
    on_demand = schedules.branch(
        rs, at_step=600, decay_steps=100, shape="exponential", end_value=0.0025
    )
    np.testing.assert_allclose(
        values(on_demand, jnp.array([599, 600, 650, 700])),
        [0.25, 0.25, 0.025, 0.0025],
        rtol=1e-5,
    )


def test_power_scheduler():
    lr = schedules.power(batch_size=1024, seq_len=4096, a=4.6, b=-0.51, max_lr=0.02)
    tokens = 1e11
    t = round(tokens / (1024 * 4096))
    expected = 1024 * 4.6 * (t * 1024 * 4096) ** -0.51
    assert float(lr(t)) == pytest.approx(expected, rel=1e-5)
    assert float(lr(t)) == pytest.approx(0.0116, abs=2e-4)
    # Scale covariance at equal token counts: twice the batch, twice the rate (below the cap).
    small = schedules.power(batch_size=64, seq_len=512, max_lr=1.0)
    large = schedules.power(batch_size=128, seq_len=512, max_lr=1.0)
    ts = jnp.arange(2000, 4000, 2)
    np.testing.assert_allclose(values(large, ts // 2), 2 * values(small, ts), rtol=1e-5)
    capped = schedules.power(batch_size=64, seq_len=512, max_lr=0.01)
    assert float(capped(1)) == pytest.approx(0.01, rel=1e-7)
    decayed = schedules.power(
        64,
        512,
        max_lr=1.0,
        warmup_steps=100,
        total_steps=1000,
        decay_steps=200,
        decay_shape="exponential",
        end_value=1e-4,
    )
    v = values(decayed, jnp.arange(1200))
    assert v[0] == 0.0 and v[100] == pytest.approx(values(small, jnp.array([100]))[0])
    assert v[800] == pytest.approx(values(small, jnp.array([800]))[0], rel=1e-6)
    assert v[1000] == pytest.approx(1e-4) and np.all(np.diff(v[100:]) <= 1e-9)


def test_linear_scaling_gradual_warmup():
    lr = schedules.linear_scaling(
        0.1, batch_size=8192, warmup_steps=500, decay_boundaries=[3000, 6000, 8000]
    )
    steps = jnp.array([0, 250, 500, 2999, 3000, 6000, 8000])
    expected = [0.1, 1.65, 3.2, 3.2, 0.32, 0.032, 0.0032]
    np.testing.assert_allclose(values(lr, steps), expected, rtol=1e-5)


def test_rewarm_cycles():
    lr = schedules.rewarm(3e-4, task_steps=[1000, 2000], warmup_fraction=0.01)
    steps = jnp.array([0, 10, 1000, 1010, 1020, 3000, 4000])
    expected = [3e-5, 3e-4, 3e-5, 1.65e-4, 3e-4, 3e-5, 3e-5]
    np.testing.assert_allclose(values(lr, steps), expected, rtol=1e-5)


def test_join_offset_stretch():
    lr = schedules.join(
        [schedules.constant(1.0), schedules.linear_decay(1.0, 10), schedules.constant(0.5)],
        boundaries=[5, 20],
    )
    np.testing.assert_allclose(
        values(lr, jnp.array([0, 4, 5, 10, 15, 19, 20, 100])),
        [1.0, 1.0, 1.0, 0.5, 0.0, 0.0, 0.5, 0.5],
    )
    late = schedules.offset(schedules.linear_decay(1.0, 10), 100)
    np.testing.assert_allclose(values(late, jnp.array([0, 100, 105, 110])), [1, 1, 0.5, 0])
    slow = schedules.stretch(schedules.cosine(1.0, 100), 3.0)
    np.testing.assert_allclose(values(slow), values(schedules.cosine(1.0, 300)), atol=1e-6)


def test_dtypes_and_shapes(x64):
    lr = schedules.wsd(1.0, 100)
    assert lr(5).dtype == jnp.float64
    assert lr(jnp.arange(4)).shape == (4,)


def test_float32_by_default():
    for lr in (schedules.constant(1.0), schedules.wsd(1.0, 10), schedules.refined([1.0, 2.0])):
        assert lr(3).dtype == jnp.float32 and lr(3).shape == ()


# ------------------------------------------------------------------------------------------
# Steps past 2**24 (int32) land in the right phase.
# ------------------------------------------------------------------------------------------


def test_relative_precision_at_the_end_of_long_decays():
    t = 10_000_000
    steps = jnp.array([t - 1, t - 2], jnp.int32)
    lin = values(schedules.linear_decay(1.0, t), steps)
    np.testing.assert_allclose(lin, [1e-7, 2e-7], rtol=1e-6)
    cos = values(schedules.cosine(1.0, t), steps)
    np.testing.assert_allclose(cos, np.sin(0.5 * np.pi * np.array([1e-7, 2e-7])) ** 2, rtol=1e-5)
    rex = values(schedules.wsd(1.0, 2 * t, decay_steps=t, decay_shape="rex"), steps + t)
    np.testing.assert_allclose(rex, [2e-7 / (1 + 1e-7), 4e-7 / (1 + 2e-7)], rtol=1e-6)


def test_int32_steps_past_2_pow_24():
    steps = jnp.array([B - 1, B, B + 1, B + 2, B + 3, B + 4, B + 10], dtype=jnp.int32)
    ramp = [1.0, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    cases = {
        "wsd": schedules.wsd(1.0, B + 4, decay_steps=4),
        "wsd_s": schedules.wsd_s(1.0, [B + 4], decay_steps=4),
        "branch": schedules.branch(schedules.constant(1.0), B, 4),
        "join": schedules.join([schedules.constant(1.0), schedules.linear_decay(1.0, 4)], [B]),
        "offset": schedules.offset(schedules.linear_decay(1.0, 4), B),
    }
    for name, lr in cases.items():
        np.testing.assert_allclose(values(lr, steps), ramp, atol=1e-7, err_msg=name)
        np.testing.assert_allclose(values(jax.jit(lr), steps), ramp, atol=1e-7, err_msg=name)
        assert float(lr(B + 1)) == 0.75, name  # a Python int step
    scaling = schedules.linear_scaling(1.0, 256, decay_boundaries=[B])
    np.testing.assert_allclose(values(scaling, steps[:2]), [1.0, 0.1], rtol=1e-7)
    anneal = schedules.infinite(0.5, 0, 0, 0.5, anneal_start=B, anneal_steps=4, end_value=0.5 / 16)
    np.testing.assert_allclose(values(anneal, steps[:4]), [0.5, 0.5, 0.25, 0.125], rtol=1e-6)


def _shifted_pair(data, far: int):
    """The same schedule twice, with every phase boundary moved later by `far` in the second."""
    peak = _peak(data)
    total = data.draw(st.integers(2, HORIZON), label="total_steps")
    w = data.draw(st.integers(0, total - 1), label="warmup_steps")  # moved into the far run
    end = peak * _frac(data, 0.01, 1.0, "end")
    shape = data.draw(st.sampled_from(schedules.DECAY_SHAPES), label="shape")
    family = data.draw(
        st.sampled_from(["linear_decay", "cosine", "rex", "uba", "wsd", "wsd_s", "branch"]),
        label="family",
    )
    if family in ("linear_decay", "cosine", "rex", "uba"):
        extra = {"phi": 3.0} if family == "uba" else {}
        make = getattr(schedules, family)
        near = make(peak, total, end_value=end, warmup_steps=w, **extra)
        far_lr = make(peak, total + far, end_value=end, warmup_steps=w + far, **extra)
        return near, far_lr, w
    d = data.draw(st.integers(1, total - w), label="decay_steps")
    if family == "wsd":
        kw = dict(decay_steps=d, decay_shape=shape, end_value=end)
        near = schedules.wsd(peak, total, w, **kw)
        return near, schedules.wsd(peak, total + far, w + far, **kw), w
    if family == "wsd_s":
        kw = dict(decay_steps=d, decay_shape=shape, end_value=end)
        near = schedules.wsd_s(peak, [total, total + HORIZON], w, **kw)
        return near, schedules.wsd_s(peak, [total + far, total + far + HORIZON], w + far, **kw), w
    near = schedules.branch(schedules.constant(peak), w, d, shape, end_value=end)
    return near, schedules.branch(schedules.constant(peak), w + far, d, shape, end_value=end), w


@PROPS
@given(data=st.data(), far=st.integers(2**24, 2**30))
def test_int32_steps_past_2_pow_24_match_the_same_schedule_near_zero(data, far):
    """Past 2**24 an int32 step lands in the right phase with the right progress.

    Moving every boundary (the end of warm-up, the decay window, checkpoints, branch point)
    later by `far` must move the schedule after the first boundary by exactly `far` steps:
    progress is computed from integer step counts, never from the float32 step itself.
    """
    near, far_lr, w = _shifted_pair(data, far)
    steps = GRID[GRID >= w]
    got = values(far_lr, steps + far)
    np.testing.assert_allclose(got, values(near, steps), rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------------------------------
# Properties (hypothesis): bounds, monotonicity, continuity.
# ------------------------------------------------------------------------------------------


class Case(NamedTuple):
    schedule: object
    lo: float  # all values lie in [lo, hi]
    hi: float
    rise: int | None  # non-decreasing on [0, rise], non-increasing after; None: no claim
    boundaries: tuple  # phase boundaries where the schedule must be continuous


def _peak(data):
    return data.draw(st.floats(0.01, 10.0), label="peak")


def _frac(data, lo=0.0, hi=1.0, label=None):
    return data.draw(st.floats(lo, hi), label=label)


def _warmup_kwargs(data, peak, max_steps):
    shape = data.draw(st.sampled_from(schedules.WARMUP_SHAPES), label="warmup_shape")
    init = peak * _frac(data, 0.01 if shape == "exponential" else 0.0, 1.0, "init")
    steps = data.draw(st.integers(0, max_steps), label="warmup_steps")
    return dict(warmup_steps=steps, init_value=init, warmup_shape=shape)


def _budget_case(factory, **extra):
    def build(data):
        peak = _peak(data)
        total = data.draw(st.integers(2, HORIZON), label="total_steps")
        end = peak * _frac(data, label="end")
        kw = _warmup_kwargs(data, peak, total - 1)
        lr = factory(peak, total, end_value=end, **kw, **{k: f(data) for k, f in extra.items()})
        w = kw["warmup_steps"]
        lo = min(end, kw["init_value"]) if w else end
        return Case(lr, lo, peak, w, (w, total))

    return build


def _wsd_case(data):
    peak = _peak(data)
    total = data.draw(st.integers(2, HORIZON), label="total_steps")
    decay = data.draw(st.integers(1, total), label="decay_steps")
    shape = data.draw(st.sampled_from(schedules.DECAY_SHAPES), label="shape")
    end = peak * _frac(data, 0.01 if shape in _POSITIVE_FLOOR else 0.0, 1.0, "end")
    kw = _warmup_kwargs(data, peak, total - decay)
    lr = schedules.wsd(peak, total, decay_steps=decay, decay_shape=shape, end_value=end, **kw)
    w = kw["warmup_steps"]
    lo = min(end, kw["init_value"]) if w else end
    return Case(lr, lo, peak, w, (w, total - decay, total))


def _wsd_s_case(data):
    peak = _peak(data)
    cycles = data.draw(st.lists(st.integers(10, 130), min_size=1, max_size=3), label="cycles")
    checkpoints = np.cumsum(cycles).tolist()
    shape = data.draw(st.sampled_from(schedules.DECAY_SHAPES), label="shape")
    end = peak * _frac(data, 0.01 if shape in _POSITIVE_FLOOR else 0.0, 1.0, "end")
    kw = _warmup_kwargs(data, peak, 5)
    decay_of = data.draw(st.sampled_from(["cycle", "cumulative"]), label="decay_of")
    try:
        lr = schedules.wsd_s(
            peak,
            checkpoints,
            decay_fraction=_frac(data, 0.05, 0.5),
            decay_of=decay_of,
            decay_shape=shape,
            end_value=end,
            **kw,
        )
    except ValueError:
        assume(False)
    w = kw["warmup_steps"]
    return Case(lr, min(end, kw["init_value"]) if w else end, peak, None, (w,))


def _branch_case(data):
    peak = _peak(data)
    total = data.draw(st.integers(2, HORIZON), label="total_steps")
    end0 = peak * _frac(data, 0.01, 1.0, "base_end")
    kw = _warmup_kwargs(data, peak, total - 1)
    base = schedules.cosine(peak, total, end_value=end0, **kw)
    at = data.draw(st.integers(0, 450), label="at_step")
    decay = data.draw(st.integers(1, 100), label="decay_steps")
    shape = data.draw(st.sampled_from(schedules.DECAY_SHAPES), label="shape")
    end = min(end0, float(base(at))) * _frac(data, 0.01, 1.0, "end")
    assume(end > 0 or shape not in _POSITIVE_FLOOR)
    lr = schedules.branch(base, at, decay, shape, end_value=end)
    w = kw["warmup_steps"]
    lo = min(end, kw["init_value"]) if w else end
    return Case(lr, lo, peak, min(w, at), (w, at, at + decay) if w < at else (at, at + decay))


def _infinite_case(data):
    peak = _peak(data)
    kw = _warmup_kwargs(data, peak, 50)
    w = kw["warmup_steps"]
    cool = data.draw(st.integers(0, 100), label="cooldown_steps")
    const = peak * _frac(data, 0.0, 1.0, "constant") if cool else peak
    anneal = data.draw(st.none() | st.integers(w + cool, w + cool + 100), label="anneal_start")
    steps = data.draw(st.integers(1, 100), label="anneal_steps")
    anneal_shape = data.draw(st.sampled_from(schedules.DECAY_SHAPES), label="anneal_shape")
    end = max(const, 1e-3) * _frac(data, 0.01, 1.0, "end")
    assume(anneal is None or end <= const)
    lr = schedules.infinite(
        peak,
        w,
        cool,
        const,
        anneal_start=anneal,
        anneal_steps=steps,
        end_value=end,
        cooldown_shape=data.draw(st.sampled_from(["cosine", "rsqrt"]), label="cooldown_shape"),
        anneal_shape=anneal_shape,
        init_value=kw["init_value"],
        warmup_shape=kw["warmup_shape"],
    )
    floor = end if anneal is not None else const
    lo = min(floor, kw["init_value"]) if w else floor
    bounds = (w, w + cool) + (() if anneal is None else (anneal, anneal + steps))
    return Case(lr, lo, peak, w, bounds)


def _rewarm_case(data):
    peak = _peak(data)
    tasks = data.draw(st.lists(st.integers(20, 150), min_size=1, max_size=3), label="tasks")
    end = peak * _frac(data, label="end")
    lr = schedules.rewarm(peak, tasks, end, warmup_fraction=_frac(data, 0.01, 0.5))
    return Case(lr, end, peak, None, tuple(np.cumsum(tasks).tolist()))


def _power_case(data):
    batch = data.draw(st.integers(1, 4096), label="batch")
    seq = data.draw(st.integers(1, 4096), label="seq_len")
    max_lr = _frac(data, 1e-3, 0.1, "max_lr")
    w = data.draw(st.integers(0, 50), label="warmup_steps")
    total = data.draw(st.integers(w + 1, HORIZON), label="total_steps")
    decay = data.draw(st.integers(0, total - w), label="decay_steps")
    shape = data.draw(st.sampled_from(["linear", "cosine", "1-sqrt", "1-square", "rex"]))
    lr = schedules.power(
        batch,
        seq,
        a=_frac(data, 1.0, 10.0),
        b=_frac(data, -1.0, 0.0),
        max_lr=max_lr,
        warmup_steps=w,
        total_steps=total,
        decay_steps=decay,
        decay_shape=shape,
    )
    return Case(lr, 0.0, max_lr, w, (w, total - decay) if decay else (w,))


def _simple_case(kind):
    def build(data):
        peak = _peak(data)
        if kind == "exponential":
            end = peak * _frac(data, label="end")
            kw = _warmup_kwargs(data, peak, 100)
            half = _frac(data, 1.0, 200.0, "half_life")
            lr = schedules.exponential(peak, half, end_value=end, **kw)
        elif kind == "rsqrt":
            kw = _warmup_kwargs(data, peak, 100)
            kw["warmup_steps"] = max(1, kw["warmup_steps"])
            lr, end = schedules.rsqrt(peak, **kw), 0.0
        else:  # warmup
            kw = _warmup_kwargs(data, peak, HORIZON)
            lr = schedules.warmup(peak, kw["warmup_steps"], kw["init_value"], kw["warmup_shape"])
            end = peak
        w = kw["warmup_steps"]
        return Case(lr, min(end, kw["init_value"]) if w else end, peak, w, (w,))

    return build


def _linear_scaling_case(data):
    base = _frac(data, 1e-3, 1.0, "base_lr")
    batch, ref = data.draw(st.integers(1, 8192)), data.draw(st.integers(1, 1024))
    w = data.draw(st.integers(0, 200), label="warmup_steps")
    bounds = data.draw(st.lists(st.integers(1, 500), max_size=3, unique=True).map(sorted))
    factor = _frac(data, 0.01, 1.0, "decay_factor")
    lr = schedules.linear_scaling(base, batch, ref, w, bounds, factor)
    target = base * batch / ref
    lo = min(base, target) * factor ** len(bounds)
    return Case(lr, lo, max(base, target), None, () if w in bounds else (w,))  # steps jump


def _refined_case(data):
    n = data.draw(st.integers(2, 300), label="n")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    peak = _peak(data)
    kind = data.draw(st.sampled_from(["sgd", "adam"]), label="kind")
    total = data.draw(st.none() | st.integers(2, HORIZON), label="total_steps")
    lr = schedules.refined(
        rng.lognormal(size=n) + 1e-3, kind, _frac(data, 0.0, 0.5), peak, total_steps=total
    )
    return Case(lr, 0.0, peak, None, ())


FAMILIES = {
    "linear_decay": _budget_case(schedules.linear_decay),
    "cosine": _budget_case(schedules.cosine),
    "polynomial": _budget_case(schedules.polynomial, power=lambda d: _frac(d, 0.5, 3.0)),
    "rex": _budget_case(schedules.rex, alpha=lambda d: _frac(d, -2.0, 0.95)),
    "uba": _budget_case(schedules.uba, phi=lambda d: _frac(d, 0.1, 10.0)),
    "wsd": _wsd_case,
    "wsd_s": _wsd_s_case,
    "branch": _branch_case,
    "infinite": _infinite_case,
    "rewarm": _rewarm_case,
    "power": _power_case,
    "exponential": _simple_case("exponential"),
    "rsqrt": _simple_case("rsqrt"),
    "warmup": _simple_case("warmup"),
    "linear_scaling": _linear_scaling_case,
    "refined": _refined_case,
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
@PROPS
@given(data=st.data())
def test_properties(family, data):
    case = FAMILIES[family](data)
    v = values(case.schedule)
    scale = max(case.hi, 1e-12)
    tol = 2e-6 * scale
    # Values within [lo, hi] (end and peak, or the warm-up start).
    assert np.all(v >= case.lo - tol) and np.all(v <= case.hi + tol), (v.min(), v.max())
    # Monotone where the formula is.
    if case.rise is not None:
        assert np.all(np.diff(v[: case.rise + 1]) >= -tol)
        assert np.all(np.diff(v[case.rise :]) <= tol)
    # Continuous at phase boundaries: the left limit (float step b - DELTA) equals s(b).
    points = [b for b in case.boundaries if 0 < b < 2**13]
    if points:
        b = jnp.asarray((points * 8)[:8], jnp.float32)  # fixed shape: one compiled op each
        left, right = values(case.schedule, b - DELTA), values(case.schedule, b)
        assert np.all(np.abs(left - right) <= 0.05 * scale), (points, left, right)
        # At integer steps a float step gives the same value as the int step.
        ints = values(case.schedule, b.astype(jnp.int32))
        np.testing.assert_allclose(right, ints, rtol=1e-6, atol=tol)


# ------------------------------------------------------------------------------------------
# jit equals no-jit, on a fixed table (jitted once).
# ------------------------------------------------------------------------------------------

_NORMS = np.linspace(4.0, 1.0, 50) ** 2
TABLE = {
    "constant": schedules.constant(0.3),
    "warmup": schedules.warmup(1.0, 100, 0.01, "exponential"),
    "linear_decay": schedules.linear_decay(1.0, 1000, 0.1, 100),
    "cosine": schedules.cosine(1.0, 1000, 0.0, 100, warmup_shape="cosine"),
    "polynomial": schedules.polynomial(1.0, 1000, 2.0),
    "rsqrt": schedules.rsqrt(1.0, 100),
    "exponential": schedules.exponential(1.0, 50.0, 0.01, 10),
    "wsd": schedules.wsd(1.0, 1000, 50, decay_shape="1-sqrt"),
    "wsd_s": schedules.wsd_s(
        1.0, [300, 600, 900], 20, decay_shape="inverse-proportional", end_value=0.1
    ),
    "rex": schedules.rex(1.0, 1000, warmup_steps=10),
    "uba": schedules.uba(1.0, 1000, 3.0),
    "linear_scaling": schedules.linear_scaling(
        0.1, 4096, warmup_steps=50, decay_boundaries=[300, 600]
    ),
    "power": schedules.power(256, 1024, warmup_steps=10, total_steps=1000, decay_steps=100),
    "infinite": schedules.infinite(1.0, 50, 250, 0.25, 800, 200),
    "rewarm": schedules.rewarm(1.0, [300, 700]),
    "refined": schedules.refined(_NORMS, "adam", total_steps=997),
    "refined_exact": schedules.refined(_NORMS, "sgd"),
    "branch": schedules.branch(schedules.cosine(1.0, 1000), 400, 100, "cosine"),
    "join": schedules.join([schedules.warmup(1.0, 10), schedules.cosine(1.0, 900)], [10]),
    "offset": schedules.offset(schedules.cosine(1.0, 500), 20),
    "stretch": schedules.stretch(schedules.rex(1.0, 100), 7.5),
}
JITTED = {name: jax.jit(s) for name, s in TABLE.items()}


@settings(max_examples=50, deadline=None)
@given(
    name=st.sampled_from(sorted(TABLE)),
    step=st.integers(0, 1200) | st.integers(0, 2**31 - 1),
)
def test_jit_equals_no_jit(name, step):
    eager = np.asarray(TABLE[name](jnp.int32(step)))
    jitted = np.asarray(JITTED[name](jnp.int32(step)))
    np.testing.assert_allclose(jitted, eager, rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(TABLE[name](step)), eager, rtol=1e-7)


def test_vectorised_steps_match_scalar_steps():
    steps = np.array([0, 1, 9, 10, 99, 100, 399, 400, 777, 1000, 5000])
    for name, lr in TABLE.items():
        vec = values(lr, steps)
        scalar = [float(JITTED[name](jnp.int32(t))) for t in steps]
        np.testing.assert_allclose(vec, scalar, rtol=2e-6, atol=1e-7, err_msg=name)


# ------------------------------------------------------------------------------------------
# Use from optax.
# ------------------------------------------------------------------------------------------


def test_optax_learning_rate_and_inject_hyperparams():
    lr = schedules.wsd(0.1, total_steps=8, warmup_steps=2, decay_steps=4)
    opt = optax.sgd(lr)
    params = jnp.zeros(3)
    state = opt.init(params)
    update = jax.jit(opt.update)
    for t in range(10):
        updates, state = update(jnp.ones(3), state)
        np.testing.assert_allclose(updates, -float(lr(t)) * np.ones(3), rtol=1e-6)
    injected = optax.inject_hyperparams(optax.adam)(learning_rate=lr)
    state = injected.init(params)
    update = jax.jit(injected.update)
    for t in range(4):
        _, state = update(jnp.ones(3), state)
        assert float(state.hyperparams["learning_rate"]) == pytest.approx(float(lr(t)))


# ------------------------------------------------------------------------------------------
# Bad input: a ValueError at construction that names the argument.
# ------------------------------------------------------------------------------------------

_C = schedules.constant(1.0)
BAD = [
    ("total_steps", lambda: schedules.linear_decay(1.0, total_steps=0)),
    ("total_steps", lambda: schedules.cosine(1.0, -5)),
    ("total_steps", lambda: schedules.wsd(1.0, 10.5)),
    ("total_steps", lambda: schedules.wsd(1.0, True)),
    ("warmup_steps + decay_steps", lambda: schedules.wsd(1.0, 100, 50, decay_steps=60)),
    ("warmup_steps + decay_steps", lambda: schedules.wsd(1.0, 100, 95, decay_fraction=0.1)),
    ("decay_steps", lambda: schedules.wsd(1.0, 100, decay_steps=10, decay_fraction=0.1)),
    ("decay_fraction", lambda: schedules.wsd(1.0, 100, decay_fraction=1.5)),
    ("decay_shape", lambda: schedules.wsd(1.0, 100, decay_shape="sqrt")),
    ("end_value", lambda: schedules.wsd(1.0, 100, decay_shape="exponential")),
    ("end_value", lambda: schedules.wsd(1.0, 100, end_value=-0.1)),
    ("end_value", lambda: schedules.cosine(1.0, 100, end_value=2.0)),
    ("peak", lambda: schedules.wsd(-1.0, 100)),
    ("peak", lambda: schedules.linear_decay(float("nan"), 10)),
    ("value", lambda: schedules.constant(-0.1)),
    ("warmup_steps", lambda: schedules.cosine(1.0, 100, warmup_steps=100)),
    ("warmup_steps", lambda: schedules.linear_decay(1.0, 100, warmup_steps=-1)),
    ("warmup_shape", lambda: schedules.cosine(1.0, 100, warmup_shape="quadratic")),
    ("init_value", lambda: schedules.warmup(1.0, 10, shape="exponential")),
    ("init_value", lambda: schedules.warmup(1.0, 10, init_value=2.0)),
    ("timescale", lambda: schedules.rsqrt(1.0)),
    ("half_life", lambda: schedules.exponential(1.0, 0)),
    ("power", lambda: schedules.polynomial(1.0, 10, power=0.0)),
    ("alpha", lambda: schedules.rex(1.0, 10, alpha=1.0)),
    ("phi", lambda: schedules.uba(1.0, 10, phi=0.0)),
    ("phi", lambda: schedules.uba(1.0, 10, phi=-2.0)),
    ("grad_norms", lambda: schedules.refined([])),
    ("grad_norms", lambda: schedules.refined([1.0])),
    ("grad_norms", lambda: schedules.refined([1.0, float("nan"), 2.0])),
    ("grad_norms", lambda: schedules.refined([1.0, float("inf")])),
    ("grad_norms", lambda: schedules.refined([1.0, 0.0, 2.0])),
    ("grad_norms", lambda: schedules.refined([1.0, -1.0])),
    ("grad_norms", lambda: schedules.refined([[1.0, 2.0], [3.0, 4.0]])),
    ("grad_norms", lambda: schedules.refined(["a", "b"])),
    ("kind", lambda: schedules.refined([1.0, 2.0], kind="sgdm")),
    ("smoothing", lambda: schedules.refined([1.0, 2.0], smoothing=-0.1)),
    ("peak", lambda: schedules.refined([1.0, 2.0], peak=-1.0)),
    ("total_steps", lambda: schedules.refined([1.0, 2.0], total_steps=1)),
    ("resolution", lambda: schedules.refined([1.0, 2.0], resolution=1)),
    ("batch_size", lambda: schedules.power(0, 1)),
    ("b", lambda: schedules.power(4, 4, b=0.5)),
    ("total_steps", lambda: schedules.power(4, 4, decay_steps=10)),
    ("warmup_steps + decay_steps", lambda: schedules.power(4, 4, 0.1, -0.5, 0.02, 10, 15, 10)),
    ("constant_value", lambda: schedules.infinite(1.0, 10, 10, constant_value=2.0)),
    ("anneal_start", lambda: schedules.infinite(1.0, 10, 10, 0.5, anneal_start=5)),
    ("anneal_steps", lambda: schedules.infinite(1.0, 10, 10, 0.5, 30, anneal_steps=0)),
    ("end_value", lambda: schedules.infinite(1.0, 10, 10, 0.5, 30, 10, end_value=0.0)),
    ("cooldown_steps", lambda: schedules.infinite(1.0, 10, 0, constant_value=0.5)),
    ("cooldown_shape", lambda: schedules.infinite(1.0, 10, 10, 0.5, cooldown_shape="lin")),
    ("task_steps", lambda: schedules.rewarm(1.0, [])),
    ("task_steps[1]", lambda: schedules.rewarm(1.0, [100, 1])),
    ("warmup_fraction", lambda: schedules.rewarm(1.0, [100], warmup_fraction=1.0)),
    ("batch_size", lambda: schedules.linear_scaling(0.1, 0)),
    ("decay_boundaries", lambda: schedules.linear_scaling(0.1, 512, decay_boundaries=[10, 5])),
    ("decay_factor", lambda: schedules.linear_scaling(0.1, 512, decay_factor=0.0)),
    ("boundaries", lambda: schedules.join([_C], [10])),
    ("boundaries[0]", lambda: schedules.join([_C, _C], [0])),
    ("schedules[1]", lambda: schedules.join([_C, 3.0], [10])),
    ("schedules", lambda: schedules.join([], [])),
    ("at_step", lambda: schedules.branch(_C, -1, 10)),
    ("decay_steps", lambda: schedules.branch(_C, 10, 0)),
    ("shape", lambda: schedules.branch(_C, 10, 10, shape="step")),
    ("end_value", lambda: schedules.branch(_C, 10, 10, shape="inverse")),
    ("end_value", lambda: schedules.branch(schedules.warmup(1.0, 10), 5, 10, end_value=0.6)),
    ("base", lambda: schedules.branch(1.0, 10, 10)),
    ("steps", lambda: schedules.offset(_C, 1.5)),
    ("factor", lambda: schedules.stretch(_C, 0.0)),
    ("checkpoints", lambda: schedules.wsd_s(1.0, [100, 50])),
    ("checkpoints", lambda: schedules.wsd_s(1.0, [])),
    (
        "decay_fraction",
        lambda: schedules.wsd_s(1.0, [100, 150], decay_fraction=0.5, decay_of="cumulative"),
    ),
    ("decay_steps", lambda: schedules.wsd_s(1.0, [100, 150], decay_steps=[10])),
    ("decay_of", lambda: schedules.wsd_s(1.0, [100], decay_of="total")),
]


@pytest.mark.parametrize("name, make", BAD, ids=[f"{i}-{n}" for i, (n, _) in enumerate(BAD)])
def test_bad_input_raises_value_error_naming_the_argument(name, make):
    with pytest.raises(ValueError, match=re.escape(f"`{name}`")):
        make()


def test_gallery_covers_every_family():
    from schedules import gallery

    grid = gallery.panels()
    source = Path(gallery.__file__).read_text()
    factories = [n for n in schedules.__all__ if n.islower() and n != "refined_values"]
    missing = [n for n in factories if f"s.{n}(" not in source]
    assert not missing and len(grid) >= 15
