"""Properties of the layer-wise family beyond the contract: the papers' checkable facts,
stacked layers, masks, and bad input."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optlib

PARAMS = {
    "dense": {"kernel": jnp.linspace(-1.0, 2.0, 12).reshape(4, 3), "bias": jnp.ones(3) * 0.1},
    "out": jnp.linspace(0.5, 1.5, 6).reshape(3, 2),
}
GRADS = jax.tree.map(lambda x: jnp.cos(3.0 * x) + 0.2, PARAMS)


def one_step(opt, params=PARAMS, grads=GRADS):
    updates, _ = opt.update(grads, opt.init(params), params)
    return updates


def test_lamb_moves_each_layer_by_lr_times_weight_norm():
    lr = 0.01
    updates = one_step(optlib.lamb(lr, weight_decay=0.1))
    for u, w in zip(jax.tree.leaves(updates), jax.tree.leaves(PARAMS), strict=True):
        np.testing.assert_allclose(jnp.linalg.norm(u), lr * jnp.linalg.norm(w), rtol=1e-5)


def test_lars_without_decay_moves_each_layer_by_the_same_fraction():
    lr, eta = 0.5, 0.02
    updates = one_step(optlib.lars(lr, momentum=0.0, trust_coefficient=eta))
    for u, w in zip(jax.tree.leaves(updates), jax.tree.leaves(PARAMS), strict=True):
        np.testing.assert_allclose(jnp.linalg.norm(u) / jnp.linalg.norm(w), lr * eta, rtol=1e-5)


@pytest.mark.parametrize("denominator", ["paper", "combined"])
def test_lars_denominators(denominator):
    lr, eta, wd = 1.0, 0.1, 0.3
    params, grads = {"w": PARAMS["out"]}, {"w": GRADS["out"]}
    opt = optlib.lars(
        lr, momentum=0.0, trust_coefficient=eta, weight_decay=wd, denominator=denominator
    )
    u = one_step(opt, params, grads)["w"]
    w, g = params["w"], grads["w"]
    direction = g + wd * w
    if denominator == "paper":
        den = jnp.linalg.norm(g) + wd * jnp.linalg.norm(w)
    else:
        den = jnp.linalg.norm(direction)
    np.testing.assert_allclose(u, -lr * eta * jnp.linalg.norm(w) / den * direction, rtol=1e-5)


def test_lars_matches_optax_with_combined_denominator():
    kwargs = dict(weight_decay=1e-2, trust_coefficient=1e-3, momentum=0.9)
    ours = optlib.lars(0.1, denominator="combined", **kwargs)
    theirs = optax.lars(0.1, **kwargs)
    params, s1, s2 = PARAMS, ours.init(PARAMS), theirs.init(PARAMS)
    p2 = PARAMS
    for _ in range(3):
        u1, s1 = ours.update(GRADS, s1, params)
        u2, s2 = theirs.update(GRADS, s2, p2)
        params, p2 = optax.apply_updates(params, u1), optax.apply_updates(p2, u2)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), params, p2)


def test_lamb_matches_optax_lamb():
    ours, theirs = optlib.lamb(1e-2, weight_decay=0.01), optax.lamb(1e-2, weight_decay=0.01)
    s1, s2, p1, p2 = ours.init(PARAMS), theirs.init(PARAMS), PARAMS, PARAMS
    for _ in range(3):
        u1, s1 = ours.update(GRADS, s1, p1)
        u2, s2 = theirs.update(GRADS, s2, p2)
        p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), p1, p2)


@pytest.mark.parametrize(
    "factory",
    [
        lambda axes: optlib.lamb(1e-2, weight_decay=0.01, layer_axes=axes),
        lambda axes: optlib.lars(0.1, weight_decay=1e-3, layer_axes=axes),
        lambda axes: optlib.tvlars(0.1, decay_rate=0.01, layer_axes=axes),
    ],
    ids=["lamb", "lars", "tvlars"],
)
def test_stacked_layers_equal_separate_leaves(factory):
    # A (3, 4, 2) stack with one trust ratio per layer must equal three separate leaves.
    stack = jnp.linspace(-1.0, 2.0, 24).reshape(3, 4, 2) * jnp.array([1.0, 5.0, 0.1])[:, None, None]
    grads = jnp.sin(stack * 2.0)
    stacked_params = {"layers": {"w": stack}, "head": jnp.ones((2, 2))}
    stacked_grads = {"layers": {"w": grads}, "head": jnp.full((2, 2), 0.5)}
    separate_params = {"layers": {"w": list(stack)}, "head": jnp.ones((2, 2))}
    separate_grads = {"layers": {"w": list(grads)}, "head": jnp.full((2, 2), 0.5)}

    stacked = one_step(
        factory(optlib.masks.stacked_layers("layers")), stacked_params, stacked_grads
    )
    separate = one_step(factory(None), separate_params, separate_grads)
    np.testing.assert_allclose(
        stacked["layers"]["w"], jnp.stack(separate["layers"]["w"]), rtol=1e-6
    )
    np.testing.assert_allclose(stacked["head"], separate["head"], rtol=1e-6)
    # ... and differ from one ratio for the whole stack.
    whole = one_step(factory(None), stacked_params, stacked_grads)
    assert not np.allclose(whole["layers"]["w"], stacked["layers"]["w"], rtol=1e-3)


def test_adaptation_mask_gives_plain_direction():
    mask = {"dense": {"kernel": True, "bias": False}, "out": True}
    updates = one_step(optlib.lars(1.0, momentum=0.0, trust_coefficient=0.01, adaptation_mask=mask))
    np.testing.assert_allclose(updates["dense"]["bias"], -GRADS["dense"]["bias"])


def test_lamb_adaptation_mask_defaults_to_decay_mask():
    # TF-Addons: exclude_from_layer_adaptation defaults to exclude_from_weight_decay.
    default = one_step(
        optlib.lamb(1e-2, weight_decay=0.1, weight_decay_mask=optlib.masks.exclude_1d)
    )
    explicit = one_step(
        optlib.lamb(
            1e-2,
            weight_decay=0.1,
            weight_decay_mask=optlib.masks.exclude_1d,
            adaptation_mask=optlib.masks.exclude_1d,
        )
    )
    jax.tree.map(np.testing.assert_array_equal, default, explicit)


def test_trust_clip_bounds_the_ratio():
    params = {"w": jnp.full((2, 2), 100.0)}
    grads = {"w": jnp.ones((2, 2))}
    clipped = one_step(optlib.lamb(1.0, trust_clip=1.0), params, grads)["w"]
    adam_like = one_step(optlib.lamb(1.0, adaptation_mask={"w": False}), params, grads)["w"]
    np.testing.assert_allclose(clipped, adam_like, rtol=1e-6)


def test_tvlars_factor():
    # phi(t) = 1 / (alpha + exp(lambda (t - d))) + gamma_min
    for t in (1, 10, 100):
        expected = 1 / (2.0 + math.exp(0.05 * (t - 20))) + 0.1
        assert float(optlib.tvlars_factor(t, 2.0, 0.05, 20, 0.1)) == pytest.approx(expected)


def test_mask_helpers():
    assert optlib.masks.exclude_1d(PARAMS) == {
        "dense": {"kernel": True, "bias": False},
        "out": True,
    }
    assert optlib.masks.exclude_paths("bias")(PARAMS) == {
        "dense": {"kernel": True, "bias": False},
        "out": True,
    }
    assert optlib.masks.only_paths("^out$")(PARAMS) == {
        "dense": {"kernel": False, "bias": False},
        "out": True,
    }
    # A prefix tree is a valid mask.
    updates = one_step(
        optlib.lars(1.0, momentum=0.0, adaptation_mask={"dense": False, "out": True})
    )
    np.testing.assert_allclose(updates["dense"]["kernel"], -GRADS["dense"]["kernel"])


# --- bad input ------------------------------------------------------------------------------

BAD_ARGS = [
    (optlib.lamb, dict(learning_rate=-1.0), "learning_rate"),
    (optlib.lamb, dict(learning_rate=float("nan")), "learning_rate"),
    (optlib.lamb, dict(learning_rate=float("inf")), "learning_rate"),
    (optlib.lamb, dict(learning_rate="fast"), "learning_rate"),
    (optlib.lamb, dict(learning_rate=0.1, b1=1.0), "b1"),
    (optlib.lamb, dict(learning_rate=0.1, b2=-0.1), "b2"),
    (optlib.lamb, dict(learning_rate=0.1, eps=-1e-8), "eps"),
    (optlib.lamb, dict(learning_rate=0.1, weight_decay=-0.1), "weight_decay"),
    (optlib.lamb, dict(learning_rate=0.1, trust_clip=0.0), "trust_clip"),
    (optlib.lars, dict(learning_rate=-0.1), "learning_rate"),
    (optlib.lars, dict(learning_rate=0.1, momentum=1.5), "momentum"),
    (optlib.lars, dict(learning_rate=0.1, weight_decay=-1.0), "weight_decay"),
    (optlib.lars, dict(learning_rate=0.1, eps=-1.0), "eps"),
    (optlib.lars, dict(learning_rate=0.1, trust_coefficient=0.0), "trust_coefficient"),
    (optlib.lars, dict(learning_rate=0.1, denominator="sum"), "denominator"),
    (optlib.tvlars, dict(learning_rate=0.1, alpha=0.0), "alpha"),
    (optlib.tvlars, dict(learning_rate=0.1, decay_rate=-1.0), "decay_rate"),
    (optlib.tvlars, dict(learning_rate=0.1, delay_steps=-5), "delay_steps"),
    (optlib.tvlars, dict(learning_rate=0.1, min_factor=-0.1), "min_factor"),
    (optlib.tvlars, dict(learning_rate=0.1, repo_compat=True, alpha=1.0), "alpha"),
    (optlib.tvlars, dict(learning_rate=0.1, denominator="other"), "denominator"),
]


@pytest.mark.parametrize(
    "factory,kwargs,name",
    BAD_ARGS,
    ids=[f"{f.__name__}-{n}-{i}" for i, (f, _, n) in enumerate(BAD_ARGS)],
)
def test_bad_arguments_fail_at_construction(factory, kwargs, name):
    with pytest.raises(ValueError, match=name):
        factory(**kwargs)


@pytest.mark.parametrize("factory", [optlib.lamb, optlib.lars, optlib.tvlars])
@pytest.mark.parametrize("arg", ["weight_decay_mask", "adaptation_mask", "layer_axes"])
def test_mismatched_trees_fail_at_init(factory, arg):
    bad = {"not_a_param": True} if arg != "layer_axes" else {"not_a_param": 1}
    opt = factory(0.1, **{arg: bad})
    with pytest.raises(ValueError, match=arg):
        opt.init(PARAMS)


def test_non_bool_mask_and_bad_layer_axes_fail_at_init():
    with pytest.raises(ValueError, match="weight_decay_mask"):
        optlib.lamb(0.1, weight_decay_mask=jax.tree.map(lambda _: 1.0, PARAMS)).init(PARAMS)
    with pytest.raises(ValueError, match="layer_axes"):
        optlib.lars(0.1, layer_axes=jax.tree.map(lambda _: 3, PARAMS)).init(PARAMS)


def test_mask_called_as_a_schedule_is_an_error():
    # optax.inject_hyperparams calls every callable argument with the step count unless it
    # is listed in static_args; the mask helpers say so instead of masking everything.
    opt = optax.inject_hyperparams(optlib.lamb)(1e-2, weight_decay_mask=optlib.masks.exclude_1d)
    with pytest.raises(ValueError, match="static_args"):
        opt.init(PARAMS)


# --- issue 17: masks, moment precision, names, documented surprises -------------------------


def test_mask_function_called_with_the_step_count_is_an_error():
    # inject_hyperparams calls callables without static_args as schedules of the count.
    mask = lambda p: jax.tree.map(lambda x: x.ndim > 1, p)  # noqa: E731
    for factory, name in ((optlib.lamb, "weight_decay_mask"), (optlib.lars, "adaptation_mask")):
        injected = optax.inject_hyperparams(factory)(learning_rate=0.1, **{name: mask})
        with pytest.raises(ValueError, match="static_args"):
            injected.init(PARAMS)
        fixed = optax.inject_hyperparams(factory, static_args=(name,))(
            learning_rate=0.1, **{name: mask}
        )
        fixed.update(GRADS, fixed.init(PARAMS), PARAMS)


def test_numpy_and_jax_bool_mask_leaves():
    as_python = jax.tree.map(lambda x: x.ndim > 1, PARAMS)
    expected = one_step(optlib.lamb(0.01, weight_decay=0.1, weight_decay_mask=as_python))
    for convert in (np.bool_, jnp.bool_, lambda b: jnp.asarray(b)):
        mask = jax.tree.map(convert, as_python)
        got = one_step(optlib.lamb(0.01, weight_decay=0.1, weight_decay_mask=mask))
        jax.tree.map(np.testing.assert_array_equal, got, expected)
    with pytest.raises(ValueError, match="bools"):
        optlib.lamb(0.01, weight_decay_mask=jax.tree.map(lambda _: 1, PARAMS)).init(PARAMS)


@pytest.mark.parametrize("factory", [optlib.lamb, optlib.lars, optlib.tvlars])
def test_low_precision_params_keep_float32_moments(factory):
    params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), PARAMS)
    grads = jax.tree.map(lambda x: x.astype(jnp.bfloat16), GRADS)
    opt = factory(0.01, weight_decay=0.01)
    state = opt.init(params)
    updates, state = opt.update(grads, state, params)
    moments = [x for x in jax.tree.leaves(state) if x.ndim > 0]
    assert moments and all(x.dtype == jnp.float32 for x in moments)
    assert all(u.dtype == jnp.bfloat16 for u in jax.tree.leaves(updates))
    narrow = factory(0.01, weight_decay=0.01, moment_dtype=jnp.bfloat16)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(narrow.init(params)) if x.ndim)
    with pytest.raises(ValueError, match="moment_dtype"):
        factory(0.01, moment_dtype=jnp.int32)


def test_lamb_second_moment_keeps_decaying_for_bfloat16():
    # beta2 * v rounds back to v in bfloat16 (1 - 1e-3 is below its resolution near 1).
    params = {"w": jnp.ones((4, 4), jnp.bfloat16)}
    grads = {"w": jnp.full((4, 4), 2.0, jnp.bfloat16)}
    zeros = jax.tree.map(jnp.zeros_like, grads)

    def nu_after(opt, steps=50):
        state = opt.init(params)
        _, state = opt.update(grads, state, params)
        first = state[0].nu["w"][0, 0].astype(jnp.float32)
        for _ in range(steps):
            _, state = opt.update(zeros, state, params)
        return float(state[0].nu["w"][0, 0].astype(jnp.float32) / first)

    np.testing.assert_allclose(nu_after(optlib.lamb(0.01)), 0.999**50, rtol=1e-5)
    assert nu_after(optlib.lamb(0.01, moment_dtype=jnp.bfloat16)) == 1.0  # stalled


def test_arguments_after_the_rate_are_keyword_only():
    # optax.lars(lr, weight_decay, ...) and optlib's order differ: a positional call written
    # for optax must fail, not silently set the momentum to the weight decay.
    for factory in (optlib.lars, optlib.lamb, optlib.tvlars, optlib.dog, optlib.ldog):
        with pytest.raises(TypeError):
            factory(0.1, 1e-4)
    for factory in (optlib.schedule_free_sgd, optlib.schedule_free_adamw):
        with pytest.raises(TypeError):
            factory(0.1, 100)  # optax: warmup_steps second; optlib: b1


def test_lars_keeps_moving_at_learning_rate_zero():
    # Documented: the rate sits inside the momentum, so a rate of 0 does not freeze LARS.
    schedule = lambda count: jnp.where(count < 3, 0.1, 0.0)  # noqa: E731
    opt = optlib.lars(schedule, momentum=0.9, trust_coefficient=1.0)
    params, state = PARAMS, opt.init(PARAMS)
    for _ in range(3):
        updates, state = opt.update(GRADS, state, params)
        params = optax.apply_updates(params, updates)
    before = state[2].trace  # the momentum buffer (an optax.TraceState in the chain)
    updates, state = opt.update(GRADS, state, params)  # rate 0 from here
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, 0.9 * v, rtol=1e-6), updates, before)
    assert all(float(jnp.max(jnp.abs(u))) > 0 for u in jax.tree.leaves(updates))


def test_lamb_with_weight_decay_moves_with_zero_gradients():
    # Documented: r = lambda w, ratio 1 / lambda, so the step is -lr * w whatever lambda is.
    zeros = jax.tree.map(jnp.zeros_like, GRADS)
    for wd in (1e-4, 0.1):
        updates = one_step(optlib.lamb(0.01, weight_decay=wd), grads=zeros)
        jax.tree.map(
            lambda u, w: np.testing.assert_allclose(u, -0.01 * w, rtol=1e-5), updates, PARAMS
        )
