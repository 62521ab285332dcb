"""Schedule-free SGD/AdamW: golden trajectories, an independent x/y/z reference, eval params."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optlib
from tests import golden

RUNS = {run["name"]: run["traj"] for run in golden.load("golden_optimizers.json")}
SGD_KEY = "SGDScheduleFreeReference(lr=0.1, momentum=0.9)"
ADAMW_KEY = "AdamWScheduleFreeReference(lr=0.05, warmup_steps=5, wd=0.01)"
PAPER_KEY = "AdamWScheduleFreePaper(lr=0.05, warmup_steps=5, wd=0.01)"


def replay_schedule_free(opt, trajectory):
    """Checks y (the params), x (the eval point) and the losses at both, every step.

    The recorded `p1`/`p2` are the training point y (the loss before step k + 1 is the loss
    at them) and `x_eval_*` the average x; `loss_at_x` is the toy loss at x.
    """
    params = golden.toy_params()
    state = opt.init(params)
    step = jax.jit(
        lambda params, state: (lambda lg: (lg[0], opt.update(lg[1], state, params)))(
            jax.value_and_grad(golden.toy_loss)(params)
        )
    )
    for record in trajectory:
        loss, (updates, state) = step(params, state)
        params = optax.apply_updates(params, updates)
        x = optlib.schedule_free_eval_params(state, params)
        k = record["k"]
        check = dict(rtol=golden.RTOL, atol=golden.ATOL)
        np.testing.assert_allclose(float(loss), record["loss_before_step"], **check, err_msg=k)
        np.testing.assert_allclose(
            float(golden.toy_loss(x)), record["loss_at_x"], **check, err_msg=f"loss at x {k}"
        )
        for leaf in ("p1", "p2"):
            np.testing.assert_allclose(
                np.ravel(params[leaf]), record[leaf], **check, err_msg=f"y {leaf} {k}"
            )
            np.testing.assert_allclose(
                np.ravel(x[leaf]), record[f"x_eval_{leaf}"], **check, err_msg=f"x {leaf} {k}"
            )


def test_sgd_matches_reference(x64):
    replay_schedule_free(optlib.schedule_free_sgd(0.1, b1=0.9), RUNS[SGD_KEY])


def test_adamw_matches_reference(x64):
    opt = optlib.schedule_free_adamw(0.05, warmup_steps=5, weight_decay=0.01)
    replay_schedule_free(opt, RUNS[ADAMW_KEY])


def test_adamw_paper_variant_matches_paper_class(x64):
    opt = optlib.schedule_free_adamw(0.05, warmup_steps=5, weight_decay=0.01, variant="paper")
    replay_schedule_free(opt, RUNS[PAPER_KEY])


def test_variants_are_told_apart(x64):
    # The harness can fail: each AdamW variant misses the other's trajectory, and so does
    # optax.contrib's schedule_free_adamw with warm-up (its off-by-one, ALGORITHMS.md §11a).
    ref = optlib.schedule_free_adamw(0.05, warmup_steps=5, weight_decay=0.01)
    with pytest.raises(AssertionError):
        replay_schedule_free(ref, RUNS[PAPER_KEY])
    contrib = optax.contrib.schedule_free_adamw(0.05, warmup_steps=5, weight_decay=0.01)
    params = golden.toy_params()
    ours, theirs = ref.init(params), contrib.init(params)
    g = jax.grad(golden.toy_loss)(params)
    u_ours, _ = ref.update(g, ours, params)
    u_theirs, _ = contrib.update(g, theirs, params)
    assert float(jnp.max(jnp.abs(u_theirs["p1"]))) == 0.0  # contrib: lr 0 at its first step
    np.testing.assert_allclose(
        np.ravel(params["p1"] + u_ours["p1"]), RUNS[ADAMW_KEY][0]["p1"], rtol=1e-12
    )


# --- an independent reference: the paper's x, y, z sequences in numpy ----------------------


def reference_run(grad, w0, steps, *, lr, b1, warmup, wd, r, power, adam=None):
    """Schedule-free with explicit x, y, z (the reference package's `...Reference` classes)."""
    z = np.array(w0, float)
    x = z.copy()
    y = z.copy()
    v = np.zeros_like(z)
    weight_sum, lr_max = 0.0, 0.0
    ys, xs = [], []
    for k in range(steps):
        g = grad(y)
        lr_k = lr * (min(1.0, (k + 1) / warmup) if warmup else 1.0)
        if adam is None:
            d = g + wd * y
        else:
            b2, eps = adam
            v = b2 * v + (1 - b2) * g * g
            d = g / (np.sqrt(v / (1 - b2 ** (k + 1))) + eps) + wd * y
        lr_max = max(lr_max, lr_k)
        weight = (k + 1) ** r * lr_max**power
        weight_sum += weight
        c = weight / weight_sum
        z = z - lr_k * d
        x = (1 - c) * x + c * z
        y = b1 * x + (1 - b1) * z
        ys.append(y.copy())
        xs.append(x.copy())
    return np.array(ys), np.array(xs)


H = np.array([1.0, 3.0, 0.2, 5.0])
TARGET = np.array([0.5, -1.0, 2.0, 0.0])


def quad(w):
    return 0.5 * jnp.sum(jnp.asarray(H) * (w - jnp.asarray(TARGET)) ** 2)


def quad_grad(w):
    return H * (w - TARGET)


def our_run(opt, w0, steps):
    w = jnp.asarray(w0)
    state = opt.init(w)
    ys, xs = [], []
    for _ in range(steps):
        updates, state = opt.update(jax.grad(quad)(w), state, w)
        w = optax.apply_updates(w, updates)
        ys.append(np.asarray(w))
        xs.append(np.asarray(optlib.schedule_free_eval_params(state, w)))
    return np.array(ys), np.array(xs)


W0 = np.array([1.0, 2.0, -1.0, 0.5])


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(lr=0.3, b1=0.9, warmup=4, wd=0.05, r=1.0, power=1.0),
        dict(lr=0.1, b1=0.5, warmup=0, wd=0.0, r=0.5, power=0.0),
    ],
)
def test_sgd_matches_an_explicit_xyz_reference_with_r_and_power(x64, kwargs):
    ours = optlib.schedule_free_sgd(
        kwargs["lr"],
        b1=kwargs["b1"],
        warmup_steps=kwargs["warmup"],
        weight_decay=kwargs["wd"],
        r=kwargs["r"],
        weight_lr_power=kwargs["power"],
    )
    ys, xs = our_run(ours, W0, 12)
    ref_ys, ref_xs = reference_run(quad_grad, W0, 12, **kwargs)
    np.testing.assert_allclose(ys, ref_ys, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(xs, ref_xs, rtol=1e-12, atol=1e-14)


def test_adamw_matches_an_explicit_xyz_reference_with_r(x64):
    kwargs = dict(lr=0.05, b1=0.9, warmup=3, wd=0.01, r=2.0, power=2.0)
    ours = optlib.schedule_free_adamw(
        0.05, b2=0.99, eps=1e-8, warmup_steps=3, weight_decay=0.01, r=2.0
    )
    ys, xs = our_run(ours, W0, 12)
    ref_ys, ref_xs = reference_run(quad_grad, W0, 12, adam=(0.99, 1e-8), **kwargs)
    np.testing.assert_allclose(ys, ref_ys, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(xs, ref_xs, rtol=1e-12, atol=1e-14)


def test_wrapper_around_optax_equals_the_aliases(x64):
    # One step convention: optax's own schedules count from 0, and so does the wrapper.
    warm = lambda k: 0.2 * jnp.minimum(1.0, (k + 1.0) / 4)  # noqa: E731
    wrapped = optlib.schedule_free(optax.sgd(warm), warm, b1=0.9)
    alias = optlib.schedule_free_sgd(0.2, b1=0.9, warmup_steps=4)
    np.testing.assert_allclose(our_run(wrapped, W0, 10), our_run(alias, W0, 10), rtol=1e-13)

    wrapped = optlib.schedule_free(optax.adam(warm, b1=0.0, b2=0.99, eps=1e-8), warm, b1=0.9)
    alias = optlib.schedule_free_adamw(0.2, b2=0.99, eps=1e-8, warmup_steps=4)
    np.testing.assert_allclose(our_run(wrapped, W0, 10), our_run(alias, W0, 10), rtol=1e-12)


# --- eval params wherever the state sits ---------------------------------------------------


def _train(opt, params, steps=4):
    state = opt.init(params)
    for _ in range(steps):
        grads = jax.grad(lambda p: sum(jnp.sum((x - 1.0) ** 2) for x in jax.tree.leaves(p)))(params)
        updates, state = opt.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params, state


TREE = {"w": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array([0.3])}


@pytest.mark.parametrize(
    "wrap",
    [
        lambda o: optax.chain(optax.clip_by_global_norm(1e9), o, optax.identity()),
        lambda o: optax.MultiSteps(o, every_k_schedule=1),
        lambda o: optax.chain(optax.masked(o, {"w": True, "b": True})),
    ],
    ids=["chain", "multisteps", "masked"],
)
def test_eval_params_found_inside_wrappers(wrap):
    plain_params, plain_state = _train(optlib.schedule_free_sgd(0.1), TREE)
    params, state = _train(wrap(optlib.schedule_free_sgd(0.1)), TREE)
    expected = optlib.schedule_free_eval_params(plain_state, plain_params)
    got = optlib.schedule_free_eval_params(state, params)
    for k in TREE:
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-6)
        assert not np.allclose(got[k], params[k])  # x is not y


def test_eval_params_inside_inject_hyperparams_and_jit():
    injected = optax.inject_hyperparams(optlib.schedule_free_adamw)(learning_rate=0.1, b1=0.8)
    params, state = _train(injected, TREE)
    plain_params, plain_state = _train(optlib.schedule_free_adamw(0.1, b1=0.8), TREE)
    got = jax.jit(optlib.schedule_free_eval_params)(state, params)
    expected = optlib.schedule_free_eval_params(plain_state, plain_params)
    for k in TREE:
        # float32: traced b1 and lr round differently from constants folded at compile time.
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-5)


def test_eval_params_leaves_masked_out_leaves_alone():
    opt = optax.masked(optlib.schedule_free_sgd(0.1), {"w": True, "b": False})
    params, state = _train(opt, TREE)
    x = optlib.schedule_free_eval_params(state, params)
    np.testing.assert_array_equal(x["b"], params["b"])
    assert not np.allclose(x["w"], params["w"])


def test_eval_params_errors():
    params, state = _train(optax.sgd(0.1), TREE, steps=1)
    with pytest.raises(ValueError, match="no ScheduleFreeState"):
        optlib.schedule_free_eval_params(state, params)
    two = optax.chain(optlib.schedule_free_sgd(0.1), optlib.schedule_free_sgd(0.1))
    with pytest.raises(ValueError, match="2 ScheduleFreeStates"):
        optlib.schedule_free_eval_params(two.init(TREE), TREE)
    zero = optlib.schedule_free_sgd(0.1, b1=0.0)
    with pytest.raises(ValueError, match="b1 > 0"):
        optlib.schedule_free_eval_params(zero.init(TREE), TREE)


def test_bfloat16_params_keep_float32_state():
    params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), TREE)
    params, state = _train(optlib.schedule_free_adamw(0.1), params)
    assert state.b1.dtype == state.weight_sum.dtype == state.lr_max.dtype == jnp.float32
    for leaf in jax.tree.leaves((state.z, state.base_state.nu)):
        assert leaf.dtype == jnp.float32
    x = optlib.schedule_free_eval_params(state, params)
    for leaf in jax.tree.leaves((params, x)):
        assert leaf.dtype == jnp.bfloat16
        assert bool(jnp.all(jnp.isfinite(leaf)))


@pytest.mark.parametrize(
    "factory, kwargs, name",
    [
        (optlib.schedule_free_sgd, dict(b1=1.0), "b1"),
        (optlib.schedule_free_sgd, dict(b1=-0.1), "b1"),
        (optlib.schedule_free_sgd, dict(weight_lr_power=-1.0), "weight_lr_power"),
        (optlib.schedule_free_sgd, dict(r=-1.0), "r"),
        (optlib.schedule_free_sgd, dict(warmup_steps=-1), "warmup_steps"),
        (optlib.schedule_free_sgd, dict(learning_rate=-1.0), "learning_rate"),
        (optlib.schedule_free_sgd, dict(weight_decay=-1.0), "weight_decay"),
        (optlib.schedule_free_adamw, dict(variant="v1.2"), "variant"),
        (optlib.schedule_free_adamw, dict(b2=1.0), "b2"),
        (optlib.schedule_free_adamw, dict(eps=-1.0), "eps"),
        (optlib.schedule_free_adamw, dict(warmup_steps=-5), "warmup_steps"),
        (lambda **kw: optlib.schedule_free(optax.sgd(0.1), 0.1, **kw), dict(b1=1.5), "b1"),
        (
            lambda **kw: optlib.schedule_free(optax.sgd(0.1), 0.1, **kw),
            dict(weight_lr_power=-2.0),
            "weight_lr_power",
        ),
    ],
)
def test_bad_hyperparameters_name_the_argument(factory, kwargs, name):
    with pytest.raises(ValueError, match=name):
        factory(**kwargs)


# --- BatchNorm statistics at the eval point --------------------------------------------------


class BatchNormNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        h = nn.Dense(4)(x)
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9)(h)
        return nn.Dense(1)(nn.relu(h))[:, 0]


def test_recompute_batch_stats_at_the_eval_point():
    net = BatchNormNet()
    key = jax.random.PRNGKey(0)
    xs = jax.random.normal(key, (6, 8, 3))  # 6 batches of 8
    ys = jnp.sin(xs.sum(-1))
    variables = net.init(key, xs[0], train=False)
    params, stats = variables["params"], variables["batch_stats"]
    opt = optlib.schedule_free_adamw(0.05, warmup_steps=2)
    state = opt.init(params)

    def loss_fn(params, stats, x, y):
        pred, updated = net.apply(
            {"params": params, "batch_stats": stats}, x, train=True, mutable=["batch_stats"]
        )
        return jnp.mean((pred - y) ** 2), updated["batch_stats"]

    @jax.jit
    def train_step(params, stats, state, x, y):
        (_, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, stats, x, y)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), stats, state

    for i in range(6):
        params, stats, state = train_step(params, stats, state, xs[i], ys[i])

    x_params = optlib.schedule_free_eval_params(state, params)
    recomputed = optlib.recompute_batch_stats(net.apply, x_params, stats, list(xs[:3]))

    # The statistics BatchNorm sees at x: mean and (biased) variance of the first Dense layer's
    # output, per batch, averaged over the batches.
    dense = x_params["Dense_0"]
    h = jnp.einsum("bnd,df->bnf", xs[:3], dense["kernel"]) + dense["bias"]
    bn = recomputed["BatchNorm_0"]
    np.testing.assert_allclose(bn["mean"], h.mean(axis=1).mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn["var"], h.var(axis=1).mean(axis=0), rtol=1e-4, atol=1e-6)
    # The running statistics from training (at y, with momentum) are not these.
    assert not np.allclose(stats["BatchNorm_0"]["mean"], bn["mean"], rtol=1e-3)
    with pytest.raises(ValueError, match="batches"):
        optlib.recompute_batch_stats(net.apply, x_params, stats, [])


NESTED = {
    "enc": {"w": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array([0.3])},
    "head": jnp.array([0.5, 2.0]),
}


@pytest.mark.parametrize(
    "make, alone",
    [
        (
            lambda: optax.masked(optlib.schedule_free_adamw(0.1), {"enc": False, "head": True}),
            lambda: optlib.schedule_free_adamw(0.1),
        ),
        (
            lambda: optax.multi_transform(
                {"sf": optlib.schedule_free_sgd(0.1), "sgd": optax.sgd(0.1)},
                {"enc": "sgd", "head": "sf"},
            ),
            lambda: optlib.schedule_free_sgd(0.1),
        ),
    ],
    ids=["masked_prefix", "multi_transform_prefix_labels"],
)
def test_eval_params_under_prefix_masks(make, alone):
    # optax puts one MaskedNode in place of the whole "enc" subtree.
    params, state = _train(make(), NESTED)
    x = optlib.schedule_free_eval_params(state, params)
    assert jax.tree.structure(x) == jax.tree.structure(params)
    jax.tree.map(np.testing.assert_array_equal, x["enc"], params["enc"])  # not acted on
    # The loss is separable, so "head" moves as it would alone.
    head_params, head_state = _train(alone(), {"head": NESTED["head"]})
    expected = optlib.schedule_free_eval_params(head_state, head_params)["head"]
    np.testing.assert_allclose(x["head"], expected, rtol=1e-6)
    assert not np.allclose(x["head"], params["head"])


def test_eval_params_of_two_schedule_free_groups():
    opt = optax.multi_transform(
        {"a": optlib.schedule_free_sgd(0.1, b1=0.9), "b": optlib.schedule_free_adamw(0.05, b1=0.5)},
        {"enc": "a", "head": "b"},
    )
    params, state = _train(opt, NESTED)
    x = optlib.schedule_free_eval_params(state, params)
    enc_params, enc_state = _train(optlib.schedule_free_sgd(0.1, b1=0.9), {"enc": NESTED["enc"]})
    head_params, head_state = _train(
        optlib.schedule_free_adamw(0.05, b1=0.5), {"head": NESTED["head"]}
    )
    expected = {
        **optlib.schedule_free_eval_params(enc_state, enc_params),
        **optlib.schedule_free_eval_params(head_state, head_params),
    }
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), x, expected)


def test_eval_params_with_nnx_state():
    from flax import nnx

    model = nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(0)), nnx.Linear(4, 1, rngs=nnx.Rngs(1)))
    optimizer = nnx.Optimizer(model, optlib.schedule_free_adamw(0.05), wrt=nnx.Param)
    x_in = jnp.linspace(-1.0, 1.0, 12).reshape(4, 3)

    def loss(model):
        return jnp.mean(model(x_in) ** 2)

    for _ in range(3):
        optimizer.update(model, nnx.grad(loss)(model))
    params = nnx.state(model, nnx.Param)
    x = optlib.schedule_free_eval_params(optimizer.opt_state, params)
    assert jax.tree.structure(x) == jax.tree.structure(params)  # Param variables, like params
    # The same numbers as from plain arrays.
    plain = jax.tree.map(lambda v: v, nnx.to_pure_dict(params))
    z = nnx.to_pure_dict(optimizer.opt_state.z)
    b1 = float(optimizer.opt_state.b1[...])
    expected = jax.tree.map(lambda y, z: (y - (1 - b1) * z) / b1, plain, z)
    got = nnx.to_pure_dict(x)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), got, expected)


def test_recompute_batch_stats_nnx_at_the_eval_point():
    from flax import nnx

    model = nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(0)), nnx.BatchNorm(4, rngs=nnx.Rngs(0)))
    optimizer = nnx.Optimizer(model, optlib.schedule_free_adamw(0.05), wrt=nnx.Param)
    xs = jax.random.normal(jax.random.PRNGKey(0), (5, 8, 3))

    def loss(model, x):
        return jnp.mean(model(x) ** 2)

    for i in range(5):
        optimizer.update(model, nnx.grad(loss)(model, xs[i]))
    trained_mean = model.layers[1].mean[...]
    own_kernel = model.layers[0].kernel[...]
    x_params = optlib.schedule_free_eval_params(optimizer.opt_state, nnx.state(model, nnx.Param))
    stats = optlib.recompute_batch_stats_nnx(model, list(xs[:3]), x_params)
    dense = nnx.to_pure_dict(x_params)["layers"][0]
    h = jnp.einsum("bnd,df->bnf", xs[:3], dense["kernel"]) + dense["bias"]
    np.testing.assert_allclose(model.layers[1].mean[...], h.mean(1).mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.layers[1].var[...], h.var(1).mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stats["layers"][1]["mean"][...], h.mean(1).mean(0), rtol=1e-5)
    assert not np.allclose(trained_mean, model.layers[1].mean[...], rtol=1e-3)
    np.testing.assert_array_equal(model.layers[0].kernel[...], own_kernel)  # params untouched
