"""The vmapped runner: every lane (seed x configuration) of one method as one jitted program.

Its own loop, not experiments/train.py: all lanes of a method share one compiled program
(`vmap` over lanes, `lax.scan` over the steps between evaluations) and stop as soon as every
lane has reached the target or spent its budget, which the one-run-per-process loop cannot
do. It drives each optimizer only through its registry entry (`update_kwargs`,
`eval_params`), exactly as the training loop does.

Batches come from `Workload.batch(step)` once per workload and seed (host numpy, stacked), so
every method sees the same data. On the heavy workloads (`SEQUENTIAL_LANES`) the lanes run one
after another under `lax.map` with a `lax.cond` per chunk, so a lane that is done stops
computing.

AutoLRS (methods with schedule "autolrs") cannot share the vmapped program: each of its stages
checkpoints, restores and branches on what its trials forecast. `run_autolrs` therefore runs its
lanes one after another on the real training loop (`experiments.train.build` with the learning
rate in the optimizer state, `experiments.autolrs.run`, Orbax restores from a temporary
directory), with the same data, initial params, evaluation and target as the vmapped lanes.
Its cost counts every gradient evaluation, the trials' included.
"""

from __future__ import annotations

import tempfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import autolrs, checkpointing, train
from experiments import workloads as workloads_lib
from experiments.benchmarks.time_to_target.methods import Lanes, Method, build_optimizer
from experiments.configs import common

# Steps of the tuned track (self-tuning gets 1.5x) and how often to evaluate.
BUDGETS = {
    "quadratic": 1000,
    "logreg": 600,
    "mlp_digits": 500,
    "cnn_mnist1d": 400,
    "dro_regression": 800,
    "rosenbrock": 1000,
    "lm": 600,
}
EVAL_EVERY = {
    "quadratic": 25,
    "logreg": 20,
    "mlp_digits": 25,
    "cnn_mnist1d": 25,
    "dro_regression": 40,
    "rosenbrock": 25,
    "lm": 50,
}
# Workload settings that differ from the workload's defaults, to fit the default run in one CPU
# session: the CNN at batch 32 on the paper's 5,000-sample MNIST-1D (4,000 train, 1,000 test).
WORKLOAD_OVERRIDES: dict[str, dict[str, Any]] = {
    "cnn_mnist1d": {"batch_size": 32, "num_samples": 5000},
}
# Heavy workloads whose lanes run one after another (`lax.map`) instead of under `vmap`, so a
# lane that has reached its target or spent its budget really stops computing (`lax.cond`).
SEQUENTIAL_LANES = frozenset({"cnn_mnist1d", "lm"})
# AutoLRS's stages (`experiments.autolrs.Settings`): the paper's k = 10 and tau' = tau / 10, with
# tau from 100 to 800 steps (the authors': 1000 to 8000) to fit our 400-1500-step budgets.
AUTOLRS_STAGES = {"tau": 100, "tau_prime": 10, "num_candidates": 10, "tau_max": 800}


class Problem:
    """A workload's seeds, their stacked batches, eval set and target, shared by all methods."""

    def __init__(self, name: str, num_seeds: int, length: int, target: dict | None):
        self.name = name
        self.workloads = []
        for seed in range(num_seeds):
            config = workloads_lib.default_config(name)
            config.update(WORKLOAD_OVERRIDES.get(name, {}))
            config.seed = seed
            self.workloads.append(workloads_lib.make(config))
        w = self.workloads[0]
        self.metric = w.target.metric
        self.mode = w.target.mode
        self.target = None if target is None else float(target["value"])
        self.length = length
        stacked = []
        for wl in self.workloads:
            batches = [wl.batch(t) for t in range(length)]
            stacked.append(jax.tree.map(lambda *xs: np.stack(xs), *batches))
        self.data = jax.device_put(jax.tree.map(lambda *xs: np.stack(xs), *stacked))  # [S, T, ...]
        self.eval_batch = jax.device_put(w.eval_batch())
        self.init = [wl.init_params(jax.random.PRNGKey(s)) for s, wl in enumerate(self.workloads)]

    def better(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.where(self.mode == "min", a < b, a > b)

    def reached(self, values: np.ndarray) -> np.ndarray:
        if self.target is None:
            return np.zeros(values.shape, bool)
        ok = values <= self.target if self.mode == "min" else values >= self.target
        return ok & np.isfinite(values)


def compile_runner(method: Method, problem: Problem, eval_every: int):
    """(init, run_chunk): jitted lane-stacked init, and `eval_every` steps of every lane."""
    workload = problem.workloads[0]
    entry = method.entry

    def opt_for(lane):
        lr_values = lane["lr"]

        def lr(count):
            return lr_values[jnp.minimum(count, lr_values.shape[0] - 1)]

        if method.schedule == "own":
            lr = lr_values[0]  # a constant: the optimizer warms up or sets its steps itself
        return build_optimizer(method, lr, lane["weight_decay"], lane["warmup_steps"])

    def init_lane(params, lane):
        return opt_for(lane).init(params)

    def step_lane(params, state, batch, lane):
        opt = opt_for(lane)
        loss_fn = lambda p: workload.loss(p, batch)
        value, grads = jax.value_and_grad(loss_fn)(params)
        extra = entry.update_kwargs(loss=value, grad_fn=jax.grad(loss_fn))
        updates, state = opt.update(grads, state, params, **extra)
        return optax.apply_updates(params, updates), state

    def eval_lane(params, state):
        p = entry.eval_params(state, params)
        return workload.eval_metrics(p, problem.eval_batch)[problem.metric]

    sequential = problem.name in SEQUENTIAL_LANES

    @jax.jit
    def init(params, lanes):
        return jax.vmap(init_lane)(params, lanes)

    def lane_chunk(params, state, lane, start):
        """`eval_every` steps of one lane, then its target metric."""

        def body(carry, i):
            batch = jax.tree.map(lambda x: x[lane["seed_index"], start + i], problem.data)
            return step_lane(*carry, batch, lane), None

        (params, state), _ = jax.lax.scan(body, (params, state), jnp.arange(eval_every))
        return params, state, eval_lane(params, state).astype(jnp.float32)

    @jax.jit
    def run_chunk(params, state, lanes, start):
        if not sequential:
            return jax.vmap(lane_chunk, in_axes=(0, 0, 0, None))(params, state, lanes, start)

        # One lane after another, and a lane that is done (target reached or budget spent)
        # skips its chunk: a real branch here, unlike under vmap.
        def one(args):
            params, state, lane = args
            return jax.lax.cond(
                lane["active"],
                lambda: lane_chunk(params, state, lane, start),
                lambda: (params, state, jnp.float32(jnp.nan)),
            )

        return jax.lax.map(one, (params, state, lanes))

    return init, run_chunk


def run_method(method: Method, problem: Problem, lanes: Lanes, eval_every: int) -> dict:
    """Runs every lane of `method` on `problem`; per lane the steps to target and best metric."""
    if method.schedule == "autolrs":
        return run_autolrs(method, problem, lanes, eval_every)
    init, run_chunk = compile_runner(method, problem, eval_every)
    lane_arrays = {
        "seed_index": jnp.asarray(lanes.seed_index),
        "lr": jnp.asarray(lanes.lr),
        "weight_decay": jnp.asarray(lanes.weight_decay),
        "warmup_steps": jnp.asarray(lanes.warmup_steps),
    }
    num = len(lanes.seed_index)
    params = jax.tree.map(lambda *xs: jnp.stack(xs), *[problem.init[s] for s in lanes.seed_index])
    state = init(params, dict(lane_arrays))
    steps_to_target = np.full(num, np.inf)
    best = np.full(num, np.inf if problem.mode == "min" else -np.inf)
    step = 0
    max_steps = min(int(lanes.budget.max()), problem.length)
    while step + eval_every <= max_steps:
        active = np.isinf(steps_to_target) & (step + eval_every <= lanes.budget)
        lane_arrays["active"] = jnp.asarray(active)
        params, state, values = run_chunk(params, state, lane_arrays, jnp.int32(step))
        step += eval_every
        values = np.asarray(values, np.float64)
        live = step <= lanes.budget
        finite = np.isfinite(values) & live
        best = np.where(finite & problem.better(values, best), values, best)
        hit = problem.reached(values) & live & np.isinf(steps_to_target)
        steps_to_target[hit] = step
        done = np.isfinite(steps_to_target) | (step + eval_every > lanes.budget)
        if problem.target is not None and done.all():
            break
    return {"steps": steps_to_target, "best": best, "last_step": step}


def run_autolrs(method: Method, problem: Problem, lanes: Lanes, eval_every: int) -> dict:
    """AutoLRS's lanes, one after another on the training loop (see the module docstring).

    Per lane: a config of the lane's seed (data order and initialisation, as `Problem`), the
    method's optimizer with the lane's weight decay, and AutoLRS searching `lr / 10` to
    `10 lr` around the lane's learning rate (the tuned track's lr factor moves the range; the
    searched warm-up does not apply: AutoLRS searches from step 0). Every `eval_every`
    main-trajectory steps the target metric is evaluated; the lane stops at the target or
    once its budget of gradient evaluations (trials included) is spent. "steps" are those
    gradient evaluations divided by the optimizer's per step, so that scoring's cost is them.
    """
    workload = problem.workloads[0]
    evaluate = jax.jit(lambda p: workload.eval_metrics(p, problem.eval_batch)[problem.metric])
    per_step = method.grads_per_step
    num = len(lanes.seed_index)
    steps_to_target = np.full(num, np.inf)
    best = np.full(num, np.inf if problem.mode == "min" else -np.inf)
    last = 0
    for i in range(num):
        config = _autolrs_config(method, problem, int(lanes.seed_index[i]), lanes, i)
        program = train.build(config, jax.devices()[:1], learning_rate_in_state=True)
        settings = autolrs.Settings.around(float(lanes.lr[i, 0]), **AUTOLRS_STAGES)

        def on_main_step(state, step, spent, i=i, entry=program.entry):
            if step % eval_every:
                return False
            params = entry.eval_params(state["opt_state"].inner_state, state["params"])
            value = np.float64(evaluate(params))
            if np.isfinite(value) and problem.better(value, best[i]):
                best[i] = value
            if problem.reached(value):
                steps_to_target[i] = spent / per_step
                return True
            return False

        with tempfile.TemporaryDirectory() as directory:
            checkpointer = checkpointing.Checkpointer(directory, every=10**9, keep=1)
            trainer = autolrs.Trainer(
                program, checkpointer, int(lanes.budget[i]) * per_step, on_main_step
            )
            try:
                autolrs.run(trainer, program.init(None), settings, problem.length)
            except train.NonFiniteLossError:
                pass  # a diverged main trajectory never reaches the target
            finally:
                checkpointer.close()
        last = max(last, trainer.spent // per_step)
    return {"steps": steps_to_target, "best": best, "last_step": last}


def _autolrs_config(method: Method, problem: Problem, seed: int, lanes: Lanes, i: int):
    """The training-loop config of AutoLRS's lane `i` (seed `seed`) on `problem`."""
    config = common.base_config(problem.name)
    config.workload.update(WORKLOAD_OVERRIDES.get(problem.name, {}))
    config.workload.seed = seed
    config.seed = seed
    config.steps = problem.length
    config.optimizer.name = method.optimizer
    kwargs = dict(method.kwargs)
    if method.decay == "kwarg":
        kwargs["weight_decay"] = float(lanes.weight_decay[i])
    config.optimizer.kwargs = kwargs
    config.schedule.name = "constant"
    config.schedule.kwargs = {"value": float(lanes.lr[i, 0])}
    config.progress_bar = False
    return config
