"""Time to target: gradient evaluations each method needs to reach a frozen target, scored as
AlgoPerf does (Dahl et al., "Benchmarking Neural Network Training Algorithms", 2023).

    python -m experiments.benchmarks.time_to_target [--workloads quadratic logreg ...]
        [--optimizers adamw+cosine dog ...] [--seeds 3] [--budget-scale 1.0]
        [--markdown out.md] [--plot docs/time_to_target_profile.png]
    python -m experiments.benchmarks.time_to_target --set-targets [--workloads ...]

Workloads: those of `experiments.workloads`; by default the cheap ones (quadratic, logreg,
mlp_digits, cnn_mnist1d, dro_regression); the LM only when named (`--workloads lm`; it has a
budget but no frozen target yet: add one with `--set-targets --workloads lm`). Each has a step
budget `BUDGETS[name]` (times `--budget-scale`) and an eval interval `EVAL_EVERY[name]`; the CNN
runs at batch 32 on the paper's 5,000-sample MNIST-1D (`WORKLOAD_OVERRIDES`) to fit the default
run in one CPU session. The default run (23 methods x 5 workloads x 3 seeds x 6 configurations)
took 10 minutes on the 2-core CPU shared with other jobs (`--optimizers core`: 14 methods,
5 minutes). Scale up with `--budget-scale` (targets stay those of the default budget:
re-freeze them with `--set-targets` into a new versioned file), `--seeds`, `--workloads ... lm`.

Methods (`METHODS`): every optimizer of `optlib.registry` with every schedule that applies to
it. AdamW, SGD-momentum, LAMB and LARS get cosine, linear decay and WSD (20% linear decay); SAM
(around SGD-momentum, rho 0.05, 2 gradient evaluations per step) cosine and linear decay;
NAdamW cosine; schedule-free, DoG/L-DoG (also with polynomial iterate averaging), MoMo/MoMo-Adam
and TVLARS run at a constant rate with their own warm-up or step-size rule. Always in: AdamW +
cosine, SGD-momentum + linear decay and AdamW + WSD (the baselines).

Two tracks, as AlgoPerf:

* tuned: every method gets the same 5 configurations, the first 5 points of a scrambled Halton
  sequence (scipy, seed 0; frozen in `HALTON_POINTS`) over one search space shared by all
  workloads and methods (`search_space`): peak learning rate `base_lr * 10**(2u - 1)` (0.1x to
  10x a per-method base), weight decay 0 for u < 0.4 else `10**(-4 + 5(u - 0.4))` (1e-4 to 1e-1;
  the optimizer's own `weight_decay`, or L2 through the gradient for SGD-momentum and SAM),
  warm-up fraction `0.1 u` of the budget (methods with a schedule and schedule-free). Per seed
  the cost is the fastest of the 5 configurations.
* self-tuning: defaults only (`base_lr`, no weight decay, 5% warm-up where a schedule takes
  one), with 1.5x the step budget (schedules span the 1.5x budget).

Cost = gradient evaluations until the first evaluation at which the target metric is reached
(steps x gradient evaluations per step; SAM pays 2), median over `--seeds` seeds (the seed
changes the data order and the initialisation); a run that never reaches the target within its
budget costs infinity, and so does a median over seeds where most fail.

Score: AlgoPerf's performance profile. For workload w let c*_w be the smallest cost of any
method in the track; method m's profile rho_m(tau) is the fraction of workloads with
c_{m,w} <= tau c*_w, and its score is the integral of rho_m over tau in [1, 4] divided by 3
(`np.trapezoid` on a fine grid), in [0, 1]: 1 for a method that is fastest everywhere, 0 for
one that never solves anything within 4x of the best.

Targets are frozen in `targets_v1.json` (bump the version when the procedure or the budgets
change). `--set-targets` produced it: AdamW + cosine with the tuned track's 5 configurations,
each workload's default budget; for each seed the best target-metric value any configuration
reached at any evaluation; the target is the median of those over 3 seeds. So the baseline
reaches it on about half its seeds, as in AlgoPerf.

Speed: one jitted program per (method, workload) runs all 3 seeds x (5 tuned + 1 self-tuning)
configurations at once (`vmap` over 18 lanes; the hyper-parameters are arrays, learning rates a
per-lane table indexed by the optimizer's step count), `lax.scan` over `EVAL_EVERY` steps per
call, evaluates, and stops as soon as every lane has reached the target or its budget. Batches
come from `Workload.batch(step)` once per workload and seed (host numpy, stacked), so every
method sees the same data. On the CNN (and the LM) the lanes run one after another under
`lax.map` with a `lax.cond` per chunk, so a lane that is done stops computing.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import pathlib
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optlib
import optlib.registry
import schedules.registry
from experiments import workloads as workloads_lib

TARGETS_PATH = pathlib.Path(__file__).with_name("targets_v1.json")
DEFAULT_WORKLOADS = ("quadratic", "logreg", "mlp_digits", "cnn_mnist1d", "dro_regression")
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
NUM_TUNED = 5
SELF_TUNING_FACTOR = 1.5
SELF_TUNING_WARMUP = 0.05
WSD_DECAY_FRACTION = 0.2
TAU_MAX = 4.0
BASELINE = "adamw+cosine"
# `--optimizers core`: the three baselines and every other optimizer once (with cosine where
# it takes a schedule), ~60% of the default run's time. The default is every method.
CORE_METHODS = (
    "adamw+cosine",
    "sgd_momentum+linear_decay",
    "adamw+wsd",
    "nadamw+cosine",
    "lamb+cosine",
    "lars+cosine",
    "tvlars",
    "sam+cosine",
    "dog",
    "ldog",
    "momo",
    "momo_adam",
    "schedule_free_sgd",
    "schedule_free_adamw",
)


@dataclasses.dataclass(frozen=True)
class Method:
    """One optimizer with one schedule.

    `decay` says how the searched weight decay enters: "kwarg" (the factory's `weight_decay`),
    "chain" (`optax.add_decayed_weights` before the optimizer, i.e. L2 through the gradient)
    or "none". `schedule` is a `schedules.registry` name, or "own" for methods that take a
    constant rate and warm up (schedule-free) or set their step size themselves.
    """

    optimizer: str
    schedule: str
    base_lr: float
    kwargs: tuple[tuple[str, Any], ...] = ()
    decay: str = "kwarg"
    grads_per_step: int = 1

    @property
    def name(self) -> str:
        return self.optimizer if self.schedule == "own" else f"{self.optimizer}+{self.schedule}"


def _scheduled(optimizer, base_lr, schedules_=("cosine", "linear_decay", "wsd"), **kw):
    return [Method(optimizer, s, base_lr, **kw) for s in schedules_]


METHODS: dict[str, Method] = {
    m.name: m
    for m in [
        *_scheduled("adamw", 3e-3),
        Method("nadamw", "cosine", 3e-3),
        *_scheduled("sgd_momentum", 0.1, decay="chain"),
        *_scheduled("lamb", 1e-2),
        *_scheduled("lars", 1.0),
        Method("tvlars", "own", 1.0),
        *_scheduled("sam", 0.1, ("cosine", "linear_decay"), decay="chain", grads_per_step=2),
        Method("dog", "own", 1.0),
        Method("ldog", "own", 1.0),
        Method("dog_averaged", "own", 1.0),
        Method("momo", "own", 1.0),
        Method("momo_adam", "own", 1e-2),
        Method("schedule_free_sgd", "own", 1.0),
        Method("schedule_free_adamw", "own", 2.5e-3),
    ]
}


# The first 5 points of scipy's scrambled Halton sequence in 3 dimensions, seed 0
# (`qmc.Halton(d=3, scramble=True, seed=0).random(5)`, scipy 1.17.1), exactly: frozen here so
# a change in scipy cannot move the tuned track's configurations.
HALTON_POINTS = np.array(
    [
        [0.0991217798843752, 0.05391376185363979, 0.30077622909743845],
        [0.5991217798843752, 0.7205804285203065, 0.7007762290974384],
        [0.3491217798843752, 0.38724709518697303, 0.1007762290974384],
        [0.8491217798843752, 0.16502487296475088, 0.5007762290974385],
        [0.2241217798843752, 0.8316915396314174, 0.9007762290974384],
    ]
)


def search_space(num: int = NUM_TUNED) -> np.ndarray:
    """The shared quasi-random draw: `num` rows of (lr factor, weight decay, warm-up fraction)."""
    if num <= len(HALTON_POINTS):
        u = HALTON_POINTS[:num]
    else:
        from scipy.stats import qmc

        u = qmc.Halton(d=3, scramble=True, seed=0).random(num)
    lr_factor = 10.0 ** (2.0 * u[:, 0] - 1.0)
    wd = np.where(u[:, 1] < 0.4, 0.0, 10.0 ** (-4.0 + 5.0 * (u[:, 1] - 0.4)))
    warmup = 0.1 * u[:, 2]
    return np.stack([lr_factor, wd, warmup], axis=1)


def lr_table(method: Method, peak: float, warmup_fraction: float, total: int, length: int):
    """The learning rate at steps 0..length-1 (constant after `total`)."""
    steps = np.arange(length)
    if method.schedule == "own":
        return np.full(length, peak, np.float32)
    kwargs: dict[str, Any] = {"peak": peak, "warmup_steps": int(round(warmup_fraction * total))}
    if method.schedule == "wsd":
        kwargs["decay_fraction"] = WSD_DECAY_FRACTION
    schedule = schedules.registry.build(method.schedule, total_steps=total, **kwargs)
    values = np.asarray(jax.vmap(schedule)(jnp.minimum(steps, total)), np.float32)
    return values


def build_optimizer(method: Method, lr, weight_decay, warmup_steps) -> optax.GradientTransformation:
    """`method`'s optimizer for one lane; `lr` a schedule or scalar, the rest (traced) scalars."""
    kwargs = dict(method.kwargs)
    if method.decay == "kwarg":
        kwargs["weight_decay"] = weight_decay
    if method.optimizer.startswith("schedule_free"):
        kwargs["warmup_steps"] = warmup_steps
    if method.optimizer == "sgd_momentum":
        opt = optax.sgd(lr, momentum=0.9)
    elif method.optimizer == "sam":
        opt = optlib.sam(
            optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(lr, momentum=0.9)),
            rho=0.05,
        )
        return opt
    else:
        opt = optlib.registry.build(method.optimizer, lr, **kwargs)
    if method.decay == "chain":
        opt = optax.chain(optax.add_decayed_weights(weight_decay), opt)
    return opt


def _needs(method: Method) -> tuple[str, ...]:
    if method.optimizer in ("sgd_momentum",):
        return ()
    if method.optimizer == "sam":
        return ("grad_fn",)
    return optlib.registry.get(method.optimizer).needs


def _eval_params(method: Method) -> Callable | None:
    if method.optimizer in ("sgd_momentum", "sam"):
        return None
    return optlib.registry.get(method.optimizer).eval_params


@dataclasses.dataclass
class Lanes:
    """Per-lane settings: seed index, hyper-parameters, learning-rate table, budget, track."""

    seed_index: np.ndarray  # [L] int
    weight_decay: np.ndarray  # [L]
    warmup_steps: np.ndarray  # [L]
    lr: np.ndarray  # [L, length]
    budget: np.ndarray  # [L] steps
    tuned: np.ndarray  # [L] bool
    config: np.ndarray  # [L] index of the configuration (-1: self-tuning)


def make_lanes(method: Method, num_seeds: int, budget: int, tracks: Sequence[str]) -> Lanes:
    length = int(math.ceil(SELF_TUNING_FACTOR * budget)) if "self" in tracks else budget
    rows = []
    if "tuned" in tracks:
        for c, (factor, wd, warmup) in enumerate(search_space()):
            rows.append((c, method.base_lr * factor, wd, warmup, budget, True))
    if "self" in tracks:
        warmup = SELF_TUNING_WARMUP if method.schedule != "own" else 0.0
        rows.append((-1, method.base_lr, 0.0, warmup, length, False))
    lanes = [(s, *row) for s in range(num_seeds) for row in rows]
    return Lanes(
        seed_index=np.array([x[0] for x in lanes], np.int32),
        config=np.array([x[1] for x in lanes], np.int32),
        weight_decay=np.array([x[3] if method.decay != "none" else 0.0 for x in lanes], np.float32),
        warmup_steps=np.array([round(x[4] * x[5]) for x in lanes], np.float32),
        lr=np.stack([lr_table(method, x[2], x[4], x[5], length) for x in lanes]),
        budget=np.array([x[5] for x in lanes], np.int64),
        tuned=np.array([x[6] for x in lanes], bool),
    )


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


def _compile_runner(method: Method, problem: Problem, eval_every: int):
    workload = problem.workloads[0]
    needs = _needs(method)
    eval_params = _eval_params(method)

    def opt_for(lane):
        lr_values = lane["lr"]

        def lr(count):
            return lr_values[jnp.minimum(count, lr_values.shape[0] - 1)]

        if method.optimizer.startswith("schedule_free"):
            lr = lr_values[0]  # constant; its warm-up is the optimizer's own
        return build_optimizer(method, lr, lane["weight_decay"], lane["warmup_steps"])

    def init_lane(params, lane):
        return opt_for(lane).init(params)

    def step_lane(params, state, batch, lane):
        opt = opt_for(lane)
        value, grads = jax.value_and_grad(workload.loss)(params, batch)
        extra = {}
        if "value" in needs:
            extra["value"] = value
        if "grad_fn" in needs:
            extra["grad_fn"] = lambda p: jax.grad(workload.loss)(p, batch)
        updates, state = opt.update(grads, state, params, **extra)
        return optax.apply_updates(params, updates), state

    def eval_lane(params, state):
        p = params if eval_params is None else eval_params(state, params)
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
    init, run_chunk = _compile_runner(method, problem, eval_every)
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


def costs_by_track(method: Method, lanes: Lanes, steps: np.ndarray, num_seeds: int) -> dict:
    """Median over seeds of the gradient evaluations to target, per track."""
    out = {}
    for track, mask in (("tuned", lanes.tuned), ("self", ~lanes.tuned)):
        if not mask.any():
            continue
        per_seed = [
            np.min(steps[mask & (lanes.seed_index == s)]) * method.grads_per_step
            for s in range(num_seeds)
        ]
        out[track] = float(np.median(per_seed))
    return out


def performance_profiles(
    costs: dict[str, dict[str, float]], taus: np.ndarray
) -> dict[str, np.ndarray]:
    """rho_m(tau) for each method m of `costs[m][workload]` (inf = never reached)."""
    methods = list(costs)
    workloads = sorted({w for c in costs.values() for w in c})
    table = np.array([[costs[m].get(w, np.inf) for w in workloads] for m in methods], float)
    best = np.min(table, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(np.isfinite(best), table / best, np.inf)
    return {
        m: np.mean(ratio[i][None, :] <= taus[:, None], axis=1) if workloads else np.zeros_like(taus)
        for i, m in enumerate(methods)
    }


def profile_scores(costs: dict[str, dict[str, float]], tau_max: float = TAU_MAX) -> dict:
    """AlgoPerf score: the profile integrated over tau in [1, tau_max], divided by tau_max - 1."""
    taus = np.linspace(1.0, tau_max, 3001)
    profiles = performance_profiles(costs, taus)
    return {m: float(np.trapezoid(rho, taus) / (tau_max - 1.0)) for m, rho in profiles.items()}


def _geomean(costs: dict[str, float], workloads: Sequence[str]) -> float:
    """Geometric mean cost over `workloads` (inf when any is unsolved): the tie-breaker."""
    return float(np.exp(np.mean([np.log(costs.get(w, np.inf)) for w in workloads])))


def _fmt_cost(cost: float) -> str:
    return "inf" if not np.isfinite(cost) else f"{cost:,.0f}"


def markdown(results: dict, workloads: Sequence[str]) -> str:
    """One table per track: cost per workload per method, and the score; best score first."""
    out = []
    for track, title in (("tuned", "tuned (best of 5)"), ("self", "self-tuning (defaults)")):
        costs = {m: r[track] for m, r in results.items() if track in r}
        if not costs:
            continue
        scores = profile_scores(costs)
        out.append(f"Track: {title}. Cost = gradient evaluations to target, median of seeds.\n")
        out.append("| method | " + " | ".join(workloads) + " | score |")
        out.append("|---|" + "---:|" * (len(workloads) + 1))
        for m in sorted(costs, key=lambda m: (-scores[m], _geomean(costs[m], workloads), m)):
            cells = " | ".join(_fmt_cost(costs[m].get(w, np.inf)) for w in workloads)
            out.append(f"| {m} | {cells} | {scores[m]:.3f} |")
        out.append("")
    return "\n".join(out)


def plot_profiles(results: dict, path: str) -> bool:
    """Performance profiles of both tracks as a PNG; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    taus = np.linspace(1.0, TAU_MAX, 601)
    tracks = [t for t in ("tuned", "self") if any(t in r for r in results.values())]
    fig, axes = plt.subplots(1, len(tracks), figsize=(7 * len(tracks), 7.5), squeeze=False)
    for ax, track in zip(axes[0], tracks, strict=True):
        costs = {m: r[track] for m, r in results.items() if track in r}
        profiles = performance_profiles(costs, taus)
        scores = profile_scores(costs)
        for m in sorted(profiles, key=lambda m: -scores[m]):
            style = "-" if m in (BASELINE, "sgd_momentum+linear_decay", "adamw+wsd") else "--"
            ax.step(taus, profiles[m], style, where="post", label=f"{m} ({scores[m]:.2f})")
        ax.set_xlabel("tau (cost / best cost)")
        ax.set_ylabel("fraction of workloads solved")
        ax.set_title(f"{'tuned' if track == 'tuned' else 'self-tuning'} track")
        ax.set_ylim(-0.02, 1.02)
        # Below the axes: with ~20 methods a legend inside hides the curves.
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def load_targets(path: pathlib.Path = TARGETS_PATH) -> dict:
    return json.loads(pathlib.Path(path).read_text())


def set_targets(workloads: Sequence[str], num_seeds: int, budget_scale: float, path) -> dict:
    """Tunes the baseline (tuned track only) and freezes its median best metric per workload."""
    method = METHODS[BASELINE]
    path = pathlib.Path(path)
    data = json.loads(path.read_text()) if path.exists() else {}
    data.setdefault("version", 1)
    data["baseline"] = BASELINE
    data["procedure"] = (
        "AdamW + cosine, the 5 tuned-track configurations, default budget; per seed the best "
        "target-metric value of any configuration at any evaluation; target = median over seeds"
    )
    data.setdefault("workloads", {})
    for name in workloads:
        budget = max(1, int(BUDGETS[name] * budget_scale))
        eval_every = min(EVAL_EVERY[name], budget)
        problem = Problem(name, num_seeds, budget, None)
        lanes = make_lanes(method, num_seeds, budget, ("tuned",))
        result = run_method(method, problem, lanes, eval_every)
        pick = np.min if problem.mode == "min" else np.max
        per_seed = [pick(result["best"][lanes.seed_index == s]) for s in range(num_seeds)]
        data["workloads"][name] = {
            "metric": problem.metric,
            "mode": problem.mode,
            "value": float(np.median(per_seed)),
            "per_seed_best": [float(v) for v in per_seed],
            "budget_steps": budget,
            "eval_every": eval_every,
            "workload_overrides": WORKLOAD_OVERRIDES.get(name, {}),
            "seeds": num_seeds,
            "date": datetime.date.today().isoformat(),
        }
        print(f"{name}: target {problem.metric} {problem.mode} {np.median(per_seed):.6g}")
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return data


def select_methods(names: Sequence[str] | None) -> list[Method]:
    """Methods by exact name, or all methods of a named optimizer."""
    if not names or list(names) == ["all"]:
        return list(METHODS.values())
    if list(names) == ["core"]:
        names = CORE_METHODS
    picked = []
    for name in names:
        matches = [m for m in METHODS.values() if name in (m.name, m.optimizer)]
        if not matches:
            raise ValueError(f"unknown method {name!r}; choose from: {', '.join(METHODS)}")
        picked += [m for m in matches if m not in picked]
    return picked


def run(
    workloads: Sequence[str],
    methods: Sequence[Method],
    num_seeds: int = 3,
    budget_scale: float = 1.0,
    targets: dict | None = None,
    tracks: Sequence[str] = ("tuned", "self"),
    log: Callable[[str], None] = print,
) -> dict:
    """{method name: {track: {workload: cost}}}."""
    targets = load_targets() if targets is None else targets
    results: dict[str, dict[str, dict[str, float]]] = {
        m.name: {t: {} for t in tracks} for m in methods
    }
    for name in workloads:
        if name not in targets["workloads"]:
            raise ValueError(f"no frozen target for {name!r}: run with --set-targets first")
        budget = max(1, int(BUDGETS[name] * budget_scale))
        eval_every = min(EVAL_EVERY[name], budget)
        length = int(math.ceil(SELF_TUNING_FACTOR * budget)) if "self" in tracks else budget
        start = time.perf_counter()
        problem = Problem(name, num_seeds, length, targets["workloads"][name])
        seconds = time.perf_counter() - start
        log(f"{name}: data for {num_seeds} seeds x {length} steps in {seconds:.1f} s")
        for method in methods:
            start = time.perf_counter()
            lanes = make_lanes(method, num_seeds, budget, tracks)
            result = run_method(method, problem, lanes, eval_every)
            costs = costs_by_track(method, lanes, result["steps"], num_seeds)
            for track, cost in costs.items():
                results[method.name][track][name] = cost
            log(
                f"  {method.name:28s} "
                + " ".join(f"{t}={_fmt_cost(c):>7s}" for t, c in costs.items())
                + f"  ({result['last_step']} steps, {time.perf_counter() - start:.1f} s)"
            )
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=list(DEFAULT_WORKLOADS))
    parser.add_argument(
        "--optimizers",
        nargs="+",
        default=None,
        help="method or optimizer names, 'core' or 'all' (default)",
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget-scale", type=float, default=1.0)
    parser.add_argument("--tracks", nargs="+", choices=["tuned", "self"], default=["tuned", "self"])
    parser.add_argument("--targets", default=str(TARGETS_PATH))
    parser.add_argument("--set-targets", action="store_true")
    parser.add_argument("--markdown", default=None, help="also write the tables to this file")
    parser.add_argument("--plot", default=None, help="performance-profile PNG")
    parser.add_argument("--json", default=None, help="also write the costs as JSON")
    args = parser.parse_args(argv)
    if args.seeds <= 0:
        parser.error("--seeds must be a positive int")
    if args.budget_scale <= 0:
        parser.error("--budget-scale must be > 0")
    for name in args.workloads:
        if name not in BUDGETS:
            parser.error(f"unknown workload {name!r}; choose from {sorted(BUDGETS)}")
    if args.set_targets:
        return set_targets(args.workloads, args.seeds, args.budget_scale, args.targets)
    try:
        methods = select_methods(args.optimizers)
    except ValueError as e:
        parser.error(str(e))
    start = time.perf_counter()
    results = run(
        args.workloads,
        methods,
        args.seeds,
        args.budget_scale,
        load_targets(args.targets),
        args.tracks,
    )
    header = (
        f"{len(methods)} methods x {len(args.workloads)} workloads, {args.seeds} seeds, budget "
        f"scale {args.budget_scale}; {time.perf_counter() - start:.0f} s; jax {jax.__version__}, "
        f"{jax.devices()[0].platform} ({platform.machine()})\n"
    )
    text = header + "\n" + markdown(results, args.workloads)
    print("\n" + text)
    if args.markdown:
        pathlib.Path(args.markdown).write_text(text)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    if args.plot and not plot_profiles(results, args.plot):
        print("matplotlib is not installed: no plot")
    return results


if __name__ == "__main__":
    main()
