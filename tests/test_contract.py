"""The optimizer contract: every optimizer in `optlib.registry` joins this table.

Each `Case` names a registry entry, keyword arguments, and the learning rates with which it
must converge on the two toy problems (with a cosine decay over `STEPS` steps). The entry says
which extra arguments its update takes (`entry.update_kwargs`), as it does for every loop.
Every test below runs for every case; `test_every_registered_optimizer_has_a_case` keeps the
table complete.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import optlib
import optlib.registry

STEPS = 500
# optax's own optimizers, registered as baselines: optax's tests cover them.
OPTAX_BASELINES = ("adamw", "nadamw", "sgd")


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    optimizer: str  # an optlib.registry name
    kwargs: dict[str, Any]
    parabola_lr: float
    rosenbrock_lr: float
    # Steps (and cosine length) for Rosenbrock. Methods without momentum or preconditioning
    # (DoG is SGD with a tuned step) need ~10x more than STEPS, as plain SGD does.
    rosenbrock_steps: int = STEPS

    @property
    def entry(self) -> optlib.registry.OptimizerEntry:
        return optlib.registry.get(self.optimizer)

    @property
    def factory(self):
        return self.entry.factory

    def make(self, learning_rate: optax.ScalarOrSchedule = 1e-2) -> optax.GradientTransformation:
        return self.entry.build(learning_rate, **self.kwargs)


CASES = [
    Case("lamb", "lamb", dict(weight_decay=1e-4), 0.1, 0.1),
    Case(
        "lamb_1d_excluded",
        "lamb",
        dict(weight_decay=1e-4, weight_decay_mask=optlib.masks.exclude_1d, trust_clip=10.0),
        0.1,
        0.1,
    ),
    Case("lars", "lars", dict(trust_coefficient=1.0), 0.01, 0.03),
    Case(
        "lars_combined_nesterov",
        "lars",
        dict(trust_coefficient=1.0, weight_decay=1e-5, denominator="combined", nesterov=True),
        0.01,
        0.03,
    ),
    Case(
        "tvlars",
        "tvlars",
        dict(
            trust_coefficient=1.0,
            weight_decay=0.0,
            alpha=1.0,
            decay_rate=1e-2,
            delay_steps=10.0,
            min_factor=0.1,
        ),
        0.1,
        0.1,
    ),
    Case(
        "tvlars_repo",
        "tvlars",
        dict(trust_coefficient=1.0, weight_decay=0.0, decay_rate=1e-2, repo_compat=True),
        0.01,
        0.01,
    ),
    # DoG's c multiplies its own step size; c = 2 under the cosine decay of the harness.
    Case("dog", "dog", {}, 2.0, 2.0, rosenbrock_steps=5000),
    Case("ldog", "ldog", {}, 2.0, 2.0, rosenbrock_steps=5000),
    Case("dog_averaged", "dog_averaged", dict(gamma=8.0), 2.0, 2.0, rosenbrock_steps=5000),
    Case("ldog_averaged", "ldog_averaged", dict(gamma=8.0), 2.0, 2.0, rosenbrock_steps=5000),
    Case("momo", "momo", {}, 1.0, 1.0),
    # MoMo* with momentum stalls on these toys (its bound estimate halves the gap to the loss
    # at each step between resets); beta = 0 keeps the estimator and the proximal decay tested.
    Case(
        "momo_wd_adaptive_lb",
        "momo",
        dict(beta=0.0, weight_decay=1e-4, adapt_lower_bound=True),
        0.3,
        0.1,
    ),
    Case("momo_adam", "momo_adam", dict(weight_decay=1e-4), 1.0, 1.0),
    # SAM's iterates circle the minimum at a radius ~rho while the lr decays: a small rho
    # reaches Rosenbrock's 1e-2 in the harness' 500 steps.
    Case("sam_momentum", "sam", dict(rho=0.005), 0.3, 2e-3),
    Case("asam", "sam", dict(rho=0.005, adaptive=True), 0.3, 2e-3),
    Case("sgd_momentum_l2", "sgd_momentum", dict(weight_decay=1e-6), 0.3, 2e-3),
    Case(
        "schedule_free_sgd",
        "schedule_free_sgd",
        dict(warmup_steps=50, weight_decay=1e-6),
        1.0,
        0.015,
    ),
    Case(
        "schedule_free_adamw",
        "schedule_free_adamw",
        dict(warmup_steps=10, weight_decay=1e-6),
        1.0,
        1.0,
    ),
    Case(
        "schedule_free_adamw_paper",
        "schedule_free_adamw",
        dict(warmup_steps=10, weight_decay=1e-6, variant="paper"),
        1.0,
        0.5,
    ),
    # Plain SGD-HD explodes on Rosenbrock (its first |g|^2 ~ 5e4 sends alpha to infinity, the
    # known failure the safeguard bounds): the SGD rows run safeguarded, Adam-HD both ways.
    Case("sgd_hd_safeguard", "sgd_hd", dict(safeguard=True), 0.1, 1e-3, rosenbrock_steps=5000),
    Case(
        "sgdn_hd_safeguard",
        "sgd_hd",
        dict(momentum=0.9, nesterov=True, weight_decay=1e-4, safeguard=True),
        2e-3,
        2e-3,
    ),
    Case("adam_hd", "adam_hd", {}, 0.1, 1.0),
    Case("adam_hd_safeguard", "adam_hd", dict(beta=1e-3, safeguard=True), 0.1, 1.0),
    # optlib.schedule_free around any registered optimizer (adam: AdamW without decay, b1 = 0).
    Case("schedule_free_wrapping_sgd", "schedule_free", dict(warmup_steps=50), 1.0, 0.015),
    Case(
        "schedule_free_wrapping_adam",
        "schedule_free",
        dict(warmup_steps=50, base="adamw", base_kwargs={"b1": 0.0, "weight_decay": 0.0}),
        1.0,
        1.0,
    ),
]


def test_every_registered_optimizer_has_a_case():
    covered = {case.optimizer for case in CASES}
    assert covered == set(optlib.registry.names()) - set(OPTAX_BASELINES)


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        metafunc.parametrize("case", CASES, ids=lambda c: c.name)
    if "sam_case" in metafunc.fixturenames:  # rows that only SAM's registry entries have
        sam_cases = [c for c in CASES if "grad_fn" in c.entry.needs]
        metafunc.parametrize("sam_case", sam_cases, ids=lambda c: c.name)


# --- problems -----------------------------------------------------------------------------


def parabola(params):
    a = jnp.arange(1.0, 13.0).reshape(4, 3) / 4
    target = jnp.linspace(-1.0, 1.0, 12).reshape(4, 3) + 0.5
    return 0.5 * jnp.sum(a * (params["w"] - target) ** 2) + 0.5 * jnp.sum(
        (params["b"] - jnp.array([1.0, -2.0, 0.5])) ** 2
    )


def rosenbrock(params):
    x, y = params["xy"][0, 0], params["xy"][0, 1]
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def parabola_start(dtype=jnp.float32):
    return {
        "w": jnp.full((4, 3), 0.3, dtype),
        "b": jnp.array([0.2, 0.4, -0.3], dtype),
    }


# A (1, 2) leaf, so masks that exclude 1-D leaves still adapt it.
ROSENBROCK_START = {"xy": jnp.array([[-1.2, 1.0]])}


def conj_complex(tree):
    """Complex leaves conjugated, real leaves as they are."""
    return jax.tree.map(lambda x: jnp.conj(x) if jnp.iscomplexobj(x) else x, tree)


def descent_grad(loss_fn):
    """`jax.grad(loss_fn)` in optax's convention for complex params: conjugated.

    For a real loss of complex params jax.grad returns the conjugate of the ascent direction;
    optax's optimizers (and optlib's) step along minus the conjugated gradient. Real params
    get jax.grad unchanged.
    """
    grad = jax.grad(loss_fn)
    return lambda params: conj_complex(grad(params))


def update_step(opt, loss_fn, entry, params, state, **extra):
    """One `update` + `apply_updates`, with the extra arguments the registry entry names."""
    loss, grads = jax.value_and_grad(loss_fn)(params)
    extra = {**entry.update_kwargs(loss=loss, grad_fn=descent_grad(loss_fn)), **extra}
    updates, state = opt.update(conj_complex(grads), state, params, **extra)
    return optax.apply_updates(params, updates), state


def train(opt, loss_fn, params, steps, entry):
    """`steps` updates inside one compiled loop; returns the final params."""

    def body(_, carry):
        return update_step(opt, loss_fn, entry, *carry)

    return jax.lax.fori_loop(0, steps, body, (params, opt.init(params)))[0]


train_jit = jax.jit(train, static_argnums=(0, 1, 3, 4))


def run_steps(opt, params, entry, steps=3, loss_fn=parabola, **extra):
    state = opt.init(params)
    for _ in range(steps):
        params, state = update_step(opt, loss_fn, entry, params, state, **extra)
    return params, state


def assert_trees_close(a, b, rtol=1e-6, atol=1e-6):
    chex.assert_trees_all_close(a, b, rtol=rtol, atol=atol)  # structures must match too


# --- the contract ---------------------------------------------------------------------------


def test_converges_on_parabola(case):
    opt = case.make(optax.cosine_decay_schedule(case.parabola_lr, STEPS))
    final = train_jit(opt, parabola, parabola_start(), STEPS, case.entry)
    assert float(parabola(final)) < 1e-5, f"{case.name}: {float(parabola(final))}"


def test_converges_on_rosenbrock(case):
    steps = case.rosenbrock_steps
    opt = case.make(optax.cosine_decay_schedule(case.rosenbrock_lr, steps))
    final = train_jit(opt, rosenbrock, ROSENBROCK_START, steps, case.entry)
    assert float(rosenbrock(final)) < 1e-2, f"{case.name}: {float(rosenbrock(final))}"


def test_jit_does_not_recompile(case):
    chex.clear_trace_counter()  # chex counts traces per function body, across cases
    opt = case.make()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, state):
        return update_step(opt, parabola, case.entry, params, state)

    params = parabola_start()
    state = opt.init(params)
    for _ in range(3):
        params, state = step(params, state)
    jax.block_until_ready(params)


def test_inside_chain(case):
    # A clip that never binds must leave the trajectory unchanged.
    plain, _ = run_steps(case.make(), parabola_start(), entry=case.entry)
    chained, _ = run_steps(
        optax.chain(optax.clip_by_global_norm(1e9), case.make()),
        parabola_start(),
        entry=case.entry,
    )
    assert_trees_close(plain, chained)


def test_inject_hyperparams_matches_plain(case):
    # optax treats every callable argument as a schedule unless it is named in static_args.
    static = tuple(k for k, v in case.kwargs.items() if callable(v))
    injected = optax.inject_hyperparams(case.factory, static_args=static)(
        learning_rate=1e-2, **case.kwargs
    )
    plain, _ = run_steps(case.make(1e-2), parabola_start(), entry=case.entry)
    via_inject, state = run_steps(injected, parabola_start(), entry=case.entry)
    assert_trees_close(plain, via_inject)
    assert float(state.hyperparams["learning_rate"]) == pytest.approx(1e-2)


# Micro-batches of a data-driven parabola: each example pulls the params to its own target,
# so every micro-batch has its own loss and gradient, and the full batch's are their means.
MICROBATCHES = 3
EXAMPLES_PER_MICROBATCH = 2


def example_targets(n=MICROBATCHES * EXAMPLES_PER_MICROBATCH):
    ramp = jnp.linspace(-1.0, 1.0, n)
    return {
        "w": ramp[:, None, None] + jnp.linspace(-1.0, 1.0, 12).reshape(1, 4, 3) + 0.5,
        "b": ramp[:, None] * jnp.array([1.0, -2.0, 0.5]) + jnp.array([1.0, -2.0, 0.5]),
    }


def batch_loss(params, targets):
    """Mean over the examples of the parabola pulled to each example's target."""
    a = jnp.arange(1.0, 13.0).reshape(4, 3) / 4

    def one(t):
        return 0.5 * jnp.sum(a * (params["w"] - t["w"]) ** 2) + 0.5 * jnp.sum(
            (params["b"] - t["b"]) ** 2
        )

    return jnp.mean(jax.vmap(one)(targets))


def microbatch(targets, i):
    m = EXAMPLES_PER_MICROBATCH
    return jax.tree.map(lambda t: t[i * m : (i + 1) * m], targets)


def sam_base_and_rho(case):
    """For a SAM case: its base optimizer (as the registry builds it) and its SAM arguments."""
    kwargs = dict(case.kwargs)
    base = optlib.registry.build(kwargs.pop("base", "sgd_momentum"), 1e-2)
    return base, kwargs


def test_accumulation_over_different_microbatches(case):
    """k different micro-batches accumulated = one step on their union (issue 17, item 7).

    optax.MultiSteps gives MoMo the last micro-batch's loss and runs SAM's grad_fn (the last
    micro-batch's) on every micro-batch; optlib.multi_steps averages the loss, and SAM is
    accumulated as the documented recipe: each micro-batch's SAM gradient from
    sam_value_and_grad, around the base optimizer, which equals m-sharpness on the union.
    """
    targets = example_targets()
    if "grad_fn" in case.entry.needs:
        base, sam_kwargs = sam_base_and_rho(case)
        opt = optlib.multi_steps(case.make(), MICROBATCHES)
        start = parabola_start()
        with pytest.raises(ValueError, match="grad_fn"):
            opt.update(start, opt.init(start), start, grad_fn=jax.grad(parabola))
        per_microbatch = jax.jit(optlib.sam_value_and_grad(batch_loss, **sam_kwargs))
        grouped = jax.jit(
            optlib.sam_value_and_grad(batch_loss, group_size=EXAMPLES_PER_MICROBATCH, **sam_kwargs)
        )
        accumulated = optlib.multi_steps(base, MICROBATCHES)

        @functools.partial(jax.jit, static_argnums=0)
        def apply(opt, g, state, params):
            updates, state = opt.update(g, state, params)
            return optax.apply_updates(params, updates), state

        params, state = parabola_start(), accumulated.init(parabola_start())
        expected, expected_state = parabola_start(), base.init(parabola_start())
        for _ in range(2):
            for i in range(MICROBATCHES):
                _, g = per_microbatch(params, microbatch(targets, i))
                params, state = apply(accumulated, g, state, params)
            _, g = grouped(expected, targets)
            expected, expected_state = apply(base, g, expected_state, expected)
        assert_trees_close(expected, params, rtol=1e-5, atol=1e-6)
        return

    @functools.partial(jax.jit, static_argnums=0)
    def step_on(opt, params, state, batch):
        loss, grads = jax.value_and_grad(batch_loss)(params, batch)
        extra = case.entry.update_kwargs(loss=loss, grad_fn=None)
        updates, state = opt.update(grads, state, params, **extra)
        return optax.apply_updates(params, updates), state

    wrappers = {"optlib.multi_steps": optlib.multi_steps(case.make(), MICROBATCHES)}
    if not case.entry.needs:  # optax.MultiSteps is right where the update takes only grads
        wrappers["optax.MultiSteps"] = optax.MultiSteps(case.make(), MICROBATCHES)
    plain = case.make()
    expected, expected_state = parabola_start(), plain.init(parabola_start())
    for _ in range(2):
        expected, expected_state = step_on(plain, expected, expected_state, targets)
    for name, opt in wrappers.items():
        params, state = parabola_start(), opt.init(parabola_start())
        for _ in range(2):
            for i in range(MICROBATCHES):
                params, state = step_on(opt, params, state, microbatch(targets, i))
        chex.assert_trees_all_close(expected, params, rtol=1e-5, atol=1e-6, custom_message=name)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_dtypes_are_kept(case, dtype):
    opt = case.make()
    params = parabola_start(dtype)
    state = opt.init(params)
    loss, grads = jax.value_and_grad(parabola)(params)
    extra = case.entry.update_kwargs(loss=loss, grad_fn=jax.grad(parabola))
    updates, state = opt.update(grads, state, params, **extra)
    new_params = optax.apply_updates(params, updates)
    for tree in (updates, new_params):
        for leaf in jax.tree.leaves(tree):
            assert leaf.dtype == dtype
            assert bool(jnp.all(jnp.isfinite(leaf)))
    # Param-shaped state keeps the params' dtype unless the optimizer documents a wider
    # accumulator (bf16 sums of squares stall), in which case it is float32.
    for leaf in jax.tree.leaves(state):
        if leaf.ndim > 0:
            assert leaf.dtype in (dtype, jnp.float32), leaf.dtype


@pytest.mark.parametrize("zero_params", [False, True])
def test_zero_gradient_is_finite(case, zero_params):
    opt = case.make()
    params = parabola_start()
    if zero_params:
        params = jax.tree.map(jnp.zeros_like, params)
    state = opt.init(params)
    zeros = jax.tree.map(jnp.zeros_like, params)
    # A zero gradient of a constant loss: the loss value (for MoMo) is the parabola's, the
    # gradient function (for SAM) returns zeros too.
    extra = case.entry.update_kwargs(
        loss=parabola(params), grad_fn=jax.grad(lambda p: 0.0 * parabola(p))
    )
    for _ in range(2):
        updates, state = opt.update(zeros, state, params, **extra)
        params = optax.apply_updates(params, updates)
    for leaf in jax.tree.leaves((params, state)):
        assert bool(jnp.all(jnp.isfinite(leaf)))


def test_unknown_extra_args_are_accepted(case):
    plain, _ = run_steps(case.make(), parabola_start(), steps=2, entry=case.entry)
    extra, _ = run_steps(
        case.make(), parabola_start(), steps=2, entry=case.entry, unknown_flag=True
    )
    assert_trees_close(plain, extra)


def test_init_on_abstract_params(case):
    opt = case.make()
    params = parabola_start()
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    abstract = jax.eval_shape(opt.init, shapes)
    concrete = opt.init(params)
    chex.assert_trees_all_equal_structs(abstract, concrete)
    chex.assert_trees_all_equal_shapes_and_dtypes(abstract, concrete)


def test_donated_jitted_step(case):
    opt = case.make()

    def step(params, state):
        return update_step(opt, parabola, case.entry, params, state)

    donating = jax.jit(step, donate_argnums=(0, 1))
    params = parabola_start()
    state = opt.init(params)
    for _ in range(3):
        params, state = donating(params, state)
        jax.block_until_ready(params)
    expected, _ = run_steps(opt, parabola_start(), steps=3, entry=case.entry)
    assert_trees_close(expected, params)


@pytest.mark.parametrize(
    "axis_type", [jax.sharding.AxisType.Auto, jax.sharding.AxisType.Explicit], ids=str
)
def test_sharded_state_and_step_match_single_device(case, axis_type):
    # Explicit is the default axis type of jax.make_mesh: the optimizers' reductions, reshapes
    # and casts must all type-check with explicit shardings too.
    devices = jax.devices()
    assert len(devices) == 8
    mesh = jax.make_mesh((8,), ("data",), devices=devices, axis_types=(axis_type,))
    # Distinct shapes so each state leaf can be matched to its param by shape.
    single = {
        "w": jnp.linspace(-1.0, 1.0, 8 * 6).reshape(8, 6),
        "stack": jnp.linspace(0.5, 2.0, 4 * 8 * 2).reshape(4, 8, 2),
        "b": jnp.linspace(0.1, 0.5, 5),
    }
    specs = {"w": P("data", None), "stack": P(None, "data", None), "b": P()}
    shardings = {k: NamedSharding(mesh, s) for k, s in specs.items()}
    sharded = {k: jax.device_put(v, shardings[k]) for k, v in single.items()}
    by_shape = {v.shape: shardings[k] for k, v in single.items()}

    def loss_fn(params):
        return sum(
            0.5 * jnp.sum((leaf - 0.3) ** 2 * (1 + jnp.abs(leaf)))
            for leaf in jax.tree.leaves(params)
        )

    opt = case.make()

    def check_state_shardings(state):
        for leaf in jax.tree.leaves(state):
            if leaf.ndim > 0:
                assert leaf.sharding.is_equivalent_to(by_shape[leaf.shape], leaf.ndim), (
                    leaf.shape,
                    leaf.sharding,
                )

    @jax.jit
    def step(params, state):
        return update_step(opt, loss_fn, case.entry, params, state)

    # Eager init places zeros like the params; a jitted init needs out_shardings (the
    # training loop derives them from the params' shardings).
    with jax.set_mesh(mesh):
        state = opt.init(sharded)
        check_state_shardings(state)
        params = sharded
        for _ in range(3):
            params, state = step(params, state)
            jax.block_until_ready(params)  # XLA:CPU collectives deadlock if steps pile up
        check_state_shardings(state)
        for k, leaf in params.items():
            assert leaf.sharding.is_equivalent_to(shardings[k], leaf.ndim)
        evaluated = jax.jit(case.entry.eval_params)(state, params)
        chex.assert_trees_all_equal_structs(evaluated, params)

    expected = jax.device_put(single, devices[0])
    expected_state = opt.init(expected)
    for _ in range(3):
        expected, expected_state = step(expected, expected_state)
        jax.block_until_ready(expected)
    assert_trees_close(expected, params, rtol=1e-6, atol=1e-6)


class UpdateWithAndWithoutJit(chex.TestCase):
    """One update is the same traced under jit and run op by op (chex variants)."""

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters((case.name, case) for case in CASES)
    def test_update(self, case):
        opt = case.make()
        params = parabola_start()
        state = opt.init(params)

        def step(params, state):
            return update_step(opt, parabola, case.entry, params, state)

        expected, _ = update_step(opt, parabola, case.entry, params, state)
        got, _ = self.variant(step)(params, state)
        assert_trees_close(expected, got)


# --- what optax's own harness checks on every optimizer (issue 20) ------------------------
# optax runs these on its aliases and contrib optimizers; they are written here for this
# table: schedules accepted wherever the annotation says so, optax.tree.map_params on the
# state, more targets, the state through a lax.cond of update-or-not in every float dtype,
# MultiSteps' zero mini-steps and complex parameters.

SCHEDULE_ANNOTATIONS = (optax.ScalarOrSchedule, optax.Schedule)


def check_learning_rate_annotation(factory) -> bool:
    """Whether `factory` says it takes a schedule; fails on a string (postponed) annotation.

    optax's harness and documentation tools read `inspect.signature(f).parameters[...]
    .annotation`; under `from __future__ import annotations` that is a string, and a tool
    that compares it with `optax.ScalarOrSchedule` concludes that schedules are not accepted.
    """
    parameter = inspect.signature(factory).parameters.get("learning_rate")
    if parameter is None:
        return False
    annotation = parameter.annotation
    assert not isinstance(annotation, str), (
        f"{getattr(factory, '__qualname__', factory)}: learning_rate's annotation is the "
        f"string {annotation!r}, not a type; drop `from __future__ import annotations`"
    )
    return annotation in SCHEDULE_ANNOTATIONS


def public_factories():
    """Every public function of optlib (and of its public submodules)."""
    modules = [optlib, optlib.masks, optlib.spectral, optlib.registry]
    found = {}
    for module in modules:
        for name in getattr(module, "__all__", dir(module)):
            value = getattr(module, name)
            if inspect.isfunction(value) and not name.startswith("_"):
                found[f"{module.__name__}.{name}"] = value
    return found


def test_public_signatures_hold_real_annotations():
    strings = {
        f"{name}({parameter.name})": parameter.annotation
        for name, function in public_factories().items()
        for parameter in inspect.signature(function).parameters.values()
        if isinstance(parameter.annotation, str)
    }
    assert not strings, f"string annotations: {strings}"
    takes_lr = [f for f in public_factories().values() if "learning_rate" in signature_of(f)]
    assert takes_lr and all(check_learning_rate_annotation(f) for f in takes_lr)


def signature_of(function):
    return inspect.signature(function).parameters


def test_the_annotation_check_can_fail():
    def stringly(learning_rate: "optax.ScalarOrSchedule", b1: float = 0.9):  # noqa: UP037
        return optax.sgd(learning_rate)

    with pytest.raises(AssertionError, match="string"):
        check_learning_rate_annotation(stringly)


def test_schedule_accepted_where_annotated(case):
    assert check_learning_rate_annotation(case.factory), (
        f"{case.optimizer}: learning_rate is not annotated optax.ScalarOrSchedule"
    )
    constant, _ = run_steps(case.make(1e-2), parabola_start(), entry=case.entry)
    scheduled, _ = run_steps(
        case.make(optax.constant_schedule(1e-2)), parabola_start(), entry=case.entry
    )
    assert_trees_close(constant, scheduled)


def test_tree_map_params_on_state(case):
    opt = case.make()
    params = parabola_start()
    _, state = run_steps(opt, params, entry=case.entry, steps=1)
    same = optax.tree.map_params(opt, lambda v: v, state)
    chex.assert_trees_all_equal(same, state)
    # The use optax documents: specs for the param-shaped parts, None elsewhere.
    specs = jax.tree.map(lambda x: P(*[None] * x.ndim), params)
    mapped = optax.tree.map_params(
        opt, lambda _, spec: spec, state, specs, transform_non_params=lambda _: None
    )
    found = [x for x in jax.tree.leaves(mapped, is_leaf=lambda x: isinstance(x, P))]
    assert all(isinstance(x, P) for x in found)


def matrix_parabola(params):
    return jnp.sum(jnp.abs(params - jnp.array([[2.0, -1.0], [0.5, 3.0]])) ** 2)


def mixed_target(params):
    vector, matrix = params
    return jnp.sum(jnp.abs(vector - jnp.array([0.5, -1.5, 1.0])) ** 2) + jnp.sum(
        jnp.abs(matrix - jnp.array([[-1.0, 0.5], [1.0, 2.0]])) ** 2
    )


COMPLEX_TARGET = jnp.array([1.0 - 0.5j, -1.0 + 1.0j, 0.5 + 0.5j], jnp.complex64)


def complex_parabola(params):
    return jnp.sum(jnp.abs(params["z"] - COMPLEX_TARGET) ** 2)


OPTAX_TARGETS = {
    # Start at zero, as optax's targets do: trust ratios fall back to 1 on the first step.
    "matrix_parabola": (matrix_parabola, jnp.zeros((2, 2))),
    "mixed_1d_2d": (mixed_target, (jnp.zeros(3), jnp.zeros((2, 2)))),
    # Complex64 params with conjugated gradients, as optax's alias tests feed them.
    "complex_parabola": (
        complex_parabola,
        {"z": jnp.array([-1.0, 2.0 + 1.0j, 0.5j], jnp.complex64)},
    ),
}


@pytest.mark.parametrize("target", sorted(OPTAX_TARGETS))
def test_converges_on_optax_targets(case, target):
    loss_fn, start = OPTAX_TARGETS[target]
    opt = case.make(optax.cosine_decay_schedule(case.parabola_lr, STEPS))
    final = train_jit(opt, loss_fn, start, STEPS, case.entry)
    chex.assert_trees_all_equal_shapes_and_dtypes(final, start)
    assert float(loss_fn(final)) < 1e-4, f"{case.name} on {target}: {float(loss_fn(final))}"


def cond_step(opt, entry, loss_fn):
    """optax's stability check: update or keep, chosen by a value the compiler cannot see.

    Both branches of `lax.cond` must return the same shapes and dtypes, so the updates must
    have the params' and the new state the old state's.
    """

    def step(params, state, key):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        grads = conj_complex(grads)
        # A loss in another float type than the params, as optax's check passes it.
        loss = loss.astype(jnp.bfloat16 if loss.dtype == jnp.float16 else jnp.float16)
        extra = entry.update_kwargs(loss=loss, grad_fn=descent_grad(loss_fn))
        take = jax.random.bernoulli(key)
        updates, new_state = jax.lax.cond(
            take,
            lambda: opt.update(grads, state, params, **extra),
            lambda: (jax.tree.map(jnp.zeros_like, params), state),
        )
        return optax.apply_updates(params, updates), new_state

    return jax.jit(step)


def stability_params(dtypes):
    return {jnp.dtype(d).name: jnp.linspace(-1.0, 1.0, 6).reshape(3, 2).astype(d) for d in dtypes}


def stability_loss(params):
    return sum(
        jnp.sum(jnp.abs(leaf.astype(jnp.promote_types(leaf.dtype, jnp.float32)) - 0.25) ** 2)
        for leaf in jax.tree.leaves(params)
    ).real


# float16 to complex128 in one tree (under x64): each leaf is its own problem for the per-leaf
# parts, and the tree-wide scalars must be typed for the widest dtype in the tree.
STABILITY_DTYPES = (
    jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64, jnp.complex64, jnp.complex128
)  # fmt: skip


def test_state_keeps_shapes_and_dtypes_through_cond(case, x64):
    opt = case.make()
    params = stability_params(STABILITY_DTYPES)
    state = opt.init(params)
    step = cond_step(opt, case.entry, stability_loss)
    for i in range(2):
        new_params, new_state = step(params, state, jax.random.key(i))
        chex.assert_trees_all_equal_shapes_and_dtypes(new_params, params)
        chex.assert_trees_all_equal_shapes_and_dtypes(new_state, state)
        params, state = new_params, new_state
    for leaf in jax.tree.leaves((params, state)):
        assert bool(jnp.all(jnp.isfinite(leaf)))


def test_state_keeps_shardings_through_cond(case):
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    shardings = {"w": NamedSharding(mesh, P("data", None)), "b": NamedSharding(mesh, P())}
    params = jax.device_put(
        {"w": jnp.linspace(-1.0, 1.0, 16).reshape(8, 2), "b": jnp.ones(3)}, shardings
    )
    opt = case.make()
    step = cond_step(opt, case.entry, stability_loss)
    # After one step every leaf has the sharding the compiled step gives it (eager init
    # leaves scalars on one device); from then on the state must keep them.
    params, state = step(params, opt.init(params), jax.random.key(0))
    for i in range(1, 3):
        jax.block_until_ready(params)  # XLA:CPU collectives deadlock if steps pile up
        new_params, new_state = step(params, state, jax.random.key(i))
        jax.block_until_ready(new_params)
        for old, new in zip(jax.tree.leaves(state), jax.tree.leaves(new_state), strict=True):
            assert new.sharding.is_equivalent_to(old.sharding, new.ndim), (old.shape, new)
        for name, leaf in new_params.items():
            assert leaf.sharding.is_equivalent_to(shardings[name], leaf.ndim)
        params, state = new_params, new_state


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_multi_steps_mini_steps_are_zero(case, dtype):
    opt = optax.MultiSteps(case.make(), every_k_schedule=4)
    params = parabola_start(dtype)
    state = opt.init(params)
    loss, grads = jax.value_and_grad(parabola)(params)
    extra = case.entry.update_kwargs(loss=loss, grad_fn=jax.grad(parabola))
    updates, _ = jax.jit(lambda g, s, p: opt.update(g, s, p, **extra))(grads, state, params)
    chex.assert_trees_all_equal(updates, jax.tree.map(jnp.zeros_like, params))


# --- rows from a researcher's first week (issue 17) -----------------------------------------


def nested_start():
    return {
        "enc": {"w": jnp.full((2, 3), 0.5), "b": jnp.array([0.2, -0.1, 0.3])},
        "head": jnp.ones(2),
    }


def nested_loss(params):
    return sum(jnp.sum((leaf - 1.5) ** 2) for leaf in jax.tree.leaves(params))


def loss_of_leaves(params):
    return sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(params)) + 0.0


EMPTY_TREES = {
    "empty_dict": lambda make: (make(), {}),
    "all_false_mask": lambda make: (
        optax.masked(make(), jax.tree.map(lambda _: False, nested_start())),
        nested_start(),
    ),
    "empty_multi_transform_group": lambda make: (
        optax.multi_transform(
            {"case": make(), "rest": optax.sgd(0.1)},
            jax.tree.map(lambda _: "rest", nested_start()),
        ),
        nested_start(),
    ),
}


@pytest.mark.parametrize("kind", sorted(EMPTY_TREES))
def test_empty_leaf_sets(case, kind):
    opt, params = EMPTY_TREES[kind](case.make)
    state = opt.init(params)
    step = jax.jit(lambda p, s: update_step(opt, loss_of_leaves, case.entry, p, s))
    for _ in range(2):
        params, state = step(params, state)
    evaluated = case.entry.eval_params(state, params)
    chex.assert_trees_all_equal_structs(evaluated, params)


PREFIX_MASKS = {
    # optax puts one MaskedNode in place of the whole "enc" subtree.
    "masked": lambda make: optax.masked(make(), {"enc": False, "head": True}),
    "multi_transform": lambda make: optax.multi_transform(
        {"case": make(), "rest": optax.sgd(0.1)}, {"enc": "rest", "head": "case"}
    ),
}


@pytest.mark.parametrize("wrapper", sorted(PREFIX_MASKS))
def test_prefix_masks(case, wrapper):
    opt = PREFIX_MASKS[wrapper](case.make)
    params = nested_start()
    state = opt.init(params)
    if "grad_fn" in case.entry.needs:
        # grad_fn needs the whole params; sam says how to mask instead of passing MaskedNodes.
        with pytest.raises(ValueError, match="mask="):
            update_step(opt, nested_loss, case.entry, params, state)
        return
    for _ in range(3):
        params, state = update_step(opt, nested_loss, case.entry, params, state)
    evaluated = case.entry.eval_params(state, params)
    chex.assert_trees_all_equal_structs(evaluated, params)
    chex.assert_trees_all_equal_shapes_and_dtypes(evaluated, params)
    # Where the optimizer did not act, the eval params are the params themselves.
    chex.assert_trees_all_equal(evaluated["enc"], params["enc"])


def test_sam_mask_is_the_way_to_perturb_part_of_the_params(sam_case):
    # The recipe sam's error gives: sam outside, the groups inside its base, mask= for the
    # perturbed leaves.
    _, sam_kwargs = sam_base_and_rho(sam_case)
    labels = {"enc": "rest", "head": "sam"}
    prefix = {"enc": False, "head": True}
    base = optax.multi_transform({"sam": optax.sgd(0.1), "rest": optax.adam(0.1)}, labels)
    opt = optlib.sam(base, mask=prefix, **sam_kwargs)
    start = nested_start()
    params, _ = update_step(opt, nested_loss, sam_case.entry, start, opt.init(start))
    g = jax.grad(nested_loss)(start)
    eps = optlib.sam_perturbation(g, start, mask=prefix, **sam_kwargs)
    chex.assert_trees_all_equal(eps["enc"], jax.tree.map(jnp.zeros_like, start["enc"]))
    g_sam = jax.grad(nested_loss)(jax.tree.map(jnp.add, start, eps))
    np.testing.assert_allclose(params["head"], start["head"] - 0.1 * g_sam["head"], rtol=1e-6)
    adam_step = jax.tree.map(lambda x: -0.1 * jnp.sign(x), g_sam["enc"])  # Adam's first step
    jax.tree.map(
        lambda p, s, u: np.testing.assert_allclose(p, s + u, rtol=1e-4, atol=1e-5),
        params["enc"],
        start["enc"],
        adam_step,
    )


def test_weight_decay_schedule_matches_the_constant(case):
    accepted = optlib.registry.get(case.optimizer).accepted_kwargs()
    if "weight_decay" not in accepted:
        pytest.skip("no weight_decay")
    value = case.kwargs.get("weight_decay") or 1e-3
    kwargs = {**case.kwargs, "weight_decay": value}
    constant, _ = run_steps(case.entry.build(1e-2, **kwargs), parabola_start(), entry=case.entry)
    kwargs["weight_decay"] = optax.constant_schedule(value)
    scheduled, _ = run_steps(case.entry.build(1e-2, **kwargs), parabola_start(), entry=case.entry)
    assert_trees_close(constant, scheduled)
    # ... and a decaying one is used: 0 from the first step on is no decay at all.
    kwargs["weight_decay"] = lambda count: value * (count < 0)
    off, _ = run_steps(case.entry.build(1e-2, **kwargs), parabola_start(), entry=case.entry)
    kwargs["weight_decay"] = 0.0
    none, _ = run_steps(case.entry.build(1e-2, **kwargs), parabola_start(), entry=case.entry)
    assert_trees_close(none, off)


def test_rho_schedule_matches_the_constant(sam_case):
    case = sam_case
    constant, _ = run_steps(case.make(), parabola_start(), entry=case.entry)
    kwargs = {**case.kwargs, "rho": optax.constant_schedule(case.kwargs["rho"])}
    scheduled, _ = run_steps(case.entry.build(1e-2, **kwargs), parabola_start(), entry=case.entry)
    assert_trees_close(constant, scheduled)
