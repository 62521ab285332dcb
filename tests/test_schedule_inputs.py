"""Schedules at the edges of their inputs: steps past int32, and array hyperparameters.

tests/test_schedules.py checks the values; this file checks what issue 17 found broken:

* phase boundaries at or past 2**31 with int32, uint32 and int64 steps, inside a jitted optax
  update (they used to die with an OverflowError in the first update);
* hyperparameters given as jax arrays or tracers: a sweep of 8 peaks vmapped through one
  jitted training step, for every family in `schedules.registry`; concrete arrays are
  validated, and a peak that is not finite in float32 is rejected.
"""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import schedules
import schedules.registry

PARAMS = jnp.array([1.0, -2.0, 0.5])
GRADS = jnp.array([0.3, -0.1, 0.2])
WD = 0.1
I32_MAX, U32_MAX = 2**31 - 1, 2**32 - 1


def _with_count(state, count):
    """The optimizer state with its learning-rate schedule's step counter set to `count`."""

    def put(s):
        return s._replace(count=count) if isinstance(s, optax.ScaleByScheduleState) else s

    return jax.tree.map(put, state, is_leaf=lambda s: isinstance(s, optax.ScaleByScheduleState))


def _unit_update(params=PARAMS, grads=GRADS):
    """adamw's first update at learning rate 1: every update below is lr times this."""
    opt = optax.adamw(1.0, weight_decay=WD)
    return opt.update(grads, opt.init(params), params)[0]


def _lr_applied_by_sgd(lrs, counts) -> np.ndarray:
    """The learning rate each schedule had in a jitted `optax.sgd` update at each step counter.

    Returns an array [len(counts), len(lrs)], read off the updates (-update / gradient).
    """

    @jax.jit
    def updates(counts):
        def at(count):
            out = []
            for lr in lrs:
                opt = optax.sgd(lr)
                state = _with_count(opt.init(PARAMS), count)
                out.append(opt.update(GRADS, state, PARAMS)[0])
            return jnp.stack(out)

        return jax.vmap(at)(counts)

    ratio = -np.asarray(updates(counts), np.float64) / np.asarray(GRADS, np.float64)
    # The same rate on every leaf: the schedule gave one scalar per step.
    np.testing.assert_allclose(ratio, ratio[..., :1].repeat(ratio.shape[-1], -1), rtol=1e-6)
    return ratio[..., 0]


# ------------------------------------------------------------------------------------------
# Steps past int32.
# ------------------------------------------------------------------------------------------

STEP_DTYPES = {
    # dtype name -> (step dtype, needs x64, the largest step it holds)
    "int32": (jnp.int32, False, I32_MAX),
    "uint32": (jnp.uint32, False, U32_MAX),
    "int64": (jnp.int64, True, 2**63 - 1),
}


@pytest.fixture(params=sorted(STEP_DTYPES))
def step_dtype(request):
    """A step dtype, with x64 switched on for the test when it needs it."""
    dtype, wide, top = STEP_DTYPES[request.param]
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", wide)
    try:
        yield dtype, top
    finally:
        jax.config.update("jax_enable_x64", previous)


def _issue_examples():
    return [schedules.cosine(1e-3, 2**31), schedules.wsd(1e-3, 3_000_000_000)]


def _issue_expected(t: np.ndarray) -> np.ndarray:
    """Float64 closed forms of `_issue_examples` (wsd decays over its last 10%, 3e8 steps)."""
    t = t.astype(np.float64)
    cosine = 1e-3 * np.sin(0.5 * np.pi * np.clip(2**31 - t, 0, None) / 2**31) ** 2
    wsd = 1e-3 * np.clip((3e9 - t) / 3e8, 0.0, 1.0)
    return np.stack([cosine, wsd], axis=1)


def test_issue_examples_inside_a_jitted_optax_update(step_dtype):
    dtype, top = step_dtype
    steps = [0, 2**30, 2**31 - 1, 2**31, 2**31 + 5, 2_850_000_000, 2_999_999_999, 3 * 10**9]
    steps += [U32_MAX, 2**40]
    steps = np.array([t for t in steps if t <= top], dtype=dtype)
    got = _lr_applied_by_sgd(_issue_examples(), jnp.asarray(steps))
    np.testing.assert_allclose(got, _issue_expected(steps), rtol=2e-5, atol=1e-30)
    # At int32's last step the cosine has one step left: 1e-3 sin^2(pi / 2**32) ~ 5e-22, not
    # rounded to the floor.
    assert got[2, 0] > 0.0


def _shifted_pairs(far: int):
    """Each schedule twice: near, and with every phase boundary moved `far` steps later.

    With `far` 120 steps short of the step dtype's maximum, the phases that start at near
    steps 100 to 120 end beyond it, and those from 121 on start beyond it.
    """
    w = 20

    def budget(make, **kw):
        return lambda f: make(1.0, 200 + f, end_value=0.1, warmup_steps=w + f, **kw)

    makers = [
        budget(schedules.linear_decay),
        budget(schedules.cosine),
        budget(schedules.polynomial, power=2.0),
        budget(schedules.rex),
        budget(schedules.uba, phi=3.0),
        lambda f: schedules.wsd(1.0, 200 + f, w + f, decay_steps=100, decay_shape="1-sqrt"),
        lambda f: schedules.wsd_s(
            1.0,
            [100 + f, 150 + f, 200 + f],
            w + f,
            decay_steps=20,
            decay_shape="inverse",
            end_value=0.1,
        ),
        lambda f: schedules.infinite(1.0, w + f, 50, 0.25, anneal_start=120 + f, anneal_steps=100),
        lambda f: schedules.branch(schedules.constant(1.0), 100 + f, 100, "cosine"),
        lambda f: schedules.join(
            [schedules.constant(1.0), schedules.linear_decay(1.0, 150)], [50 + f]
        ),
        lambda f: schedules.offset(schedules.cosine(1.0, 150), 50 + f),
        lambda f: schedules.linear_scaling(0.1, 512, decay_boundaries=[50 + f, 150 + f]),
    ]
    return [(make(0), make(far)) for make in makers]


def test_boundaries_past_the_step_dtype_land_in_the_right_phase(step_dtype):
    """Shifted far out, a schedule after its warm-up repeats itself exactly, step for step.

    Progress into a phase that ends beyond the step dtype is counted in the step's own
    integer type; a phase that starts beyond it is never entered.
    """
    dtype, top = step_dtype
    far = 2**40 if top > U32_MAX else top - 120
    near_steps = np.arange(20, 121 if top <= U32_MAX else 260, 4)
    pairs = _shifted_pairs(far)
    got = _lr_applied_by_sgd([f for _, f in pairs], jnp.asarray(near_steps + far, dtype))
    nears = jax.jit(lambda t: jnp.stack([near(t) for near, _ in pairs], axis=1))
    want = np.asarray(nears(jnp.asarray(near_steps, jnp.int32)), np.float64)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-9)


def test_python_and_numpy_integer_steps_past_int32():
    lr = schedules.linear_decay(1.0, 2**33)
    # A Python int or an int64 NumPy array past int32 is read as uint32 where it fits (jax
    # would otherwise wrap an int64 array to int32 without x64), else as a float step.
    for step in (2**31, 2**32 - 1, np.int64(2**31 + 2), np.array([2**31 + 2], np.int64)):
        np.testing.assert_allclose(lr(step), 1.0 - int(np.max(step)) / 2**33, rtol=1e-6)
    assert float(lr(2**32)) == 0.5
    assert float(lr(2**34)) == 0.0


# ------------------------------------------------------------------------------------------
# Array hyperparameters: a vmapped sweep over the peak, every registered family.
# ------------------------------------------------------------------------------------------

TOTAL = 100
SWEEP = {
    "constant": lambda p: dict(value=p),
    "cosine": lambda p: dict(peak=p, warmup_steps=10, end_value=0.1 * p),
    "exponential": lambda p: dict(peak=p, half_life=20.0, warmup_steps=5),
    "infinite": lambda p: dict(
        peak=p,
        warmup_steps=10,
        cooldown_steps=20,
        constant_value=0.25 * p,
        anneal_start=60,
        anneal_steps=30,
    ),
    "linear_decay": lambda p: dict(peak=p, warmup_steps=10),
    "polynomial": lambda p: dict(peak=p, power=2.0),
    "power": lambda p: dict(batch_size=16, seq_len=8, max_lr=p, warmup_steps=5, decay_steps=20),
    "rewarm": lambda p: dict(peak=p, task_steps=[50, 50], warmup_steps=5),
    "rex": lambda p: dict(peak=p, warmup_steps=10),
    "rsqrt": lambda p: dict(peak=p, warmup_steps=10),
    "table": lambda p: dict(peak=p, values=[i % 7 / 6 for i in range(90)]),
    "uba": lambda p: dict(peak=p, phi=3.0),
    "warmup": lambda p: dict(peak=p, warmup_steps=40, init_value=0.01 * p, shape="exponential"),
    "wsd": lambda p: dict(
        peak=p, warmup_steps=10, decay_steps=30, decay_shape="exponential", end_value=0.01 * p
    ),
    "wsd_s": lambda p: dict(peak=p, checkpoints=[50, 100], decay_steps=10),
}
NAMES = sorted(SWEEP)
PEAKS = jnp.geomspace(1e-4, 1e-1, 8)


def _loss(params, batch):
    return 0.5 * jnp.sum((params - batch) ** 2)


@jax.jit
@chex.assert_max_traces(n=1)
def _sweep_step(peaks, params, batch, count):
    """One training step per family, vmapped over the peak: the sweep in one jitted call."""

    def train_step(peak):
        grads = jax.grad(_loss)(params, batch)
        out = {}
        for name in NAMES:
            lr = schedules.registry.build(name, TOTAL, **SWEEP[name](peak))
            opt = optax.adamw(lr, weight_decay=WD)
            state = _with_count(opt.init(params), count)
            updates, _ = opt.update(grads, state, params)
            out[name] = optax.apply_updates(params, updates)
        return out

    return jax.vmap(train_step)(peaks)


def test_every_registered_family_is_in_the_sweep():
    assert NAMES == schedules.registry.names()


def test_vmapped_sweep_of_peaks_through_one_jitted_training_step():
    batch = jnp.array([0.7, -1.5, 0.25])
    unit = np.asarray(_unit_update(PARAMS, PARAMS - batch), np.float64)
    # The same schedules built from each concrete peak (a jax scalar: validated, then a float).
    built = {n: [schedules.registry.build(n, TOTAL, **SWEEP[n](p)) for p in PEAKS] for n in NAMES}
    counts = (7, 55)  # in the warm-up, and past it: one trace for both
    reference = jax.jit(lambda t: {n: jnp.stack([lr(t) for lr in built[n]]) for n in NAMES})
    lrs = {n: np.asarray(v, np.float64) for n, v in reference(jnp.asarray(counts)).items()}
    for i, count in enumerate(counts):
        new = _sweep_step(PEAKS, PARAMS, batch, jnp.asarray(count, jnp.int32))
        chex.assert_tree_shape_prefix(new, (len(PEAKS),))
        for name in NAMES:
            want = np.asarray(PARAMS)[None] + lrs[name][:, i, None] * unit[None]
            np.testing.assert_allclose(new[name], want, rtol=1e-5, atol=1e-9, err_msg=name)
        # The lanes differ: the sweep did sweep.
        assert len({float(v[0]) for v in new["cosine"]}) == len(PEAKS)


def test_concrete_array_hyperparameters_equal_python_floats():
    given, plain = [], []
    for name in NAMES:
        arrays = {
            k: jnp.asarray(v) if isinstance(v, float) else v for k, v in SWEEP[name](0.02).items()
        }
        floats = {k: float(v) if isinstance(v, jax.Array) else v for k, v in arrays.items()}
        given.append(schedules.registry.build(name, TOTAL, **arrays))
        plain.append(schedules.registry.build(name, TOTAL, **floats))
    both = jax.jit(lambda t: [jnp.stack([s(t) for s in fns]) for fns in (given, plain)])
    got, want = both(jnp.arange(0, 120, 7))
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(schedules.cosine(np.float32(1e-3), 100)(50), 5e-4, rtol=1e-6)


BAD = [
    ("peak", "finite", lambda: schedules.cosine(1e39, 100)),
    ("peak", "not finite in float32", lambda: schedules.wsd(np.float64(1e39), 100)),
    ("peak", "finite", lambda: schedules.cosine(jnp.asarray(jnp.inf), 100)),
    ("peak", "finite", lambda: schedules.cosine(np.float32("nan"), 100)),
    ("peak", r"\[0, inf\)", lambda: schedules.cosine(jnp.asarray(-1e-3), 100)),
    ("peak", "scalar", lambda: schedules.cosine(PEAKS, 100)),
    ("peak", "dtype bool", lambda: schedules.cosine(jnp.asarray(True), 100)),
    ("end_value", r"\[0, 1\]", lambda: schedules.cosine(jnp.asarray(1.0), 10, jnp.asarray(2.0))),
    ("max_lr", "finite", lambda: schedules.power(4, 4, max_lr=jnp.asarray(jnp.nan))),
    (
        "total_steps",
        "concrete",
        lambda: jax.vmap(lambda n: schedules.cosine(1.0, n))(jnp.ones(2, int)),
    ),
    (
        "decay_fraction",
        "concrete",
        lambda: jax.vmap(lambda f: schedules.wsd(1.0, 10, decay_fraction=f))(PEAKS),
    ),
    (
        "warmup_steps",
        "concrete",
        lambda: jax.jit(lambda w: schedules.cosine(1.0, 10, warmup_steps=w))(2),
    ),
]


@pytest.mark.parametrize("name, what, make", BAD, ids=[f"{i}-{b[0]}" for i, b in enumerate(BAD)])
def test_bad_array_hyperparameters_raise_naming_the_argument(name, what, make):
    with pytest.raises(ValueError, match=f"`{re.escape(name)}`.*{what}"):
        make()


def test_finite_means_finite_in_the_dtype_the_schedules_compute_in(x64):
    # Under x64 the schedules compute in float64, where 1e39 is finite.
    assert float(schedules.cosine(1e39, 100)(0)) == 1e39


def test_traced_hyperparameters_under_jit():
    lr = jax.jit(lambda p, t: schedules.wsd(p, 100, 10, decay_steps=20)(t))
    assert float(lr(0.5, 90)) == pytest.approx(0.25)
    assert float(lr(jnp.asarray(0.5, jnp.bfloat16), 5)) == pytest.approx(0.25)


def test_traced_values_in_the_families_outside_the_registry():
    pair = jnp.array([0.1, 0.5])
    got = jax.vmap(lambda e: schedules.branch(schedules.constant(1.0), 10, 10, end_value=e)(15))
    np.testing.assert_allclose(got(pair), [0.55, 0.75], rtol=1e-6)
    got = jax.vmap(lambda p: schedules.refined([1.0, 1.0, 1.0], peak=p)(1))
    np.testing.assert_allclose(got(pair), [0.05, 0.25], rtol=1e-6)
    got = jax.vmap(
        lambda p: schedules.linear_scaling(p, 512, decay_boundaries=[20], decay_factor=p)(25)
    )
    np.testing.assert_allclose(got(pair), [0.02, 0.5], rtol=1e-6)
