"""The methods the benchmark scores, and the search space and learning rates they share.

A method is a registered optimizer (`optlib.registry`) with a schedule; the registry entry
says how to build it, which extra arguments its update takes, which params to evaluate, its
gradient evaluations per step and its base learning rate. Only the benchmark's own choices
live here: which schedules each optimizer gets, the shared quasi-random search space, and
how the searched weight decay and warm-up enter. BENCHMARKS.md ("Time to target") gives the
procedure in full.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optlib.registry
import schedules.registry

NUM_TUNED = 5
SELF_TUNING_FACTOR = 1.5
SELF_TUNING_WARMUP = 0.05
WSD_DECAY_FRACTION = 0.2
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
    """One registered optimizer with one schedule.

    `schedule` is a `schedules.registry` name; "own" for optimizers that take a constant
    rate and warm up themselves (schedule-free) or set their step size themselves (DoG,
    MoMo, TVLARS, hypergradient descent's learned rate from its initial value); or "autolrs"
    for AutoLRS's stages searched around the method's learning rate (`experiments.autolrs`,
    run by `runner.run_autolrs`). `decay` says whether the searched weight decay reaches the
    optimizer's `weight_decay` argument ("kwarg"; L2 through the gradient for SGD-momentum
    and SAM, as their registry entries define it) or is not searched ("none"). `variant`
    names a method whose `kwargs` differ from another's with the same optimizer and schedule
    (it is appended to the name after a "-").
    """

    optimizer: str
    schedule: str
    kwargs: tuple[tuple[str, Any], ...] = ()
    decay: str = "kwarg"
    variant: str = ""

    @property
    def name(self) -> str:
        name = self.optimizer if self.schedule == "own" else f"{self.optimizer}+{self.schedule}"
        return f"{name}-{self.variant}" if self.variant else name

    @property
    def entry(self) -> optlib.registry.OptimizerEntry:
        return optlib.registry.get(self.optimizer)

    @property
    def base_lr(self) -> float:
        return self.entry.base_lr

    @property
    def grads_per_step(self) -> int:
        return self.entry.grads_per_step


def _scheduled(optimizer, schedules_=("cosine", "linear_decay", "wsd"), **kw):
    return [Method(optimizer, s, **kw) for s in schedules_]


METHODS: dict[str, Method] = {
    m.name: m
    for m in [
        *_scheduled("adamw"),
        Method("nadamw", "cosine"),
        *_scheduled("sgd_momentum"),
        *_scheduled("lamb"),
        *_scheduled("lars"),
        Method("tvlars", "own"),
        *_scheduled("sam", ("cosine", "linear_decay"), kwargs=(("rho", 0.05),)),
        Method("dog", "own"),
        Method("ldog", "own"),
        Method("dog_averaged", "own"),
        Method("momo", "own"),
        Method("momo_adam", "own"),
        Method("schedule_free_sgd", "own"),
        Method("schedule_free_adamw", "own"),
        # Hypergradient descent (issue 18): alpha starts at the registry's base_lr (the
        # tuned track's lr factor scales it) with the paper's beta; plain and with FedHyper's
        # safeguard (alpha within [0.1, 10] x its start, at most x1.1 per step).
        Method("sgd_hd", "own"),
        Method("sgd_hd", "own", kwargs=(("safeguard", True),), variant="safeguard"),
        Method("adam_hd", "own"),
        Method("adam_hd", "own", kwargs=(("safeguard", True),), variant="safeguard"),
        # AutoLRS around the two baselines' optimizers, searching base_lr / 10 to 10 base_lr.
        Method("sgd_momentum", "autolrs"),
        Method("adamw", "autolrs"),
    ]
}


def select_methods(names: Sequence[str] | None) -> list[Method]:
    """Methods by exact name, or all methods of a named optimizer or schedule; "core" or "all".

    The default (no names) is every method but AutoLRS's, which runs lane by lane on the real
    training loop (about 45 minutes more at the default size on 2 CPU cores): name it
    (`autolrs`) or ask for "all".
    """
    if not names:
        return [m for m in METHODS.values() if m.schedule != "autolrs"]
    if list(names) == ["all"]:
        return list(METHODS.values())
    if list(names) == ["core"]:
        names = CORE_METHODS
    picked = []
    for name in names:
        matches = [m for m in METHODS.values() if name in (m.name, m.optimizer, m.schedule)]
        if not matches:
            raise ValueError(f"unknown method {name!r}; choose from: {', '.join(METHODS)}")
        picked += [m for m in matches if m not in picked]
    return picked


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
    """The shared quasi-random draw: `num` rows of (lr factor, weight decay, warm-up fraction).

    lr factor `10**(2u - 1)` (0.1x to 10x the base), weight decay 0 for u < 0.4 else
    `10**(-4 + 5(u - 0.4))` (1e-4 to 1e-1), warm-up fraction `0.1 u` of the budget.
    """
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
    """The learning rate at steps 0..length-1 (constant after `total`).

    Constant `peak` where the method sets its own rate ("own": the initial or constant rate;
    "autolrs": the centre of the search range).
    """
    steps = np.arange(length)
    if method.schedule in ("own", "autolrs"):
        return np.full(length, peak, np.float32)
    kwargs: dict[str, Any] = {"peak": peak, "warmup_steps": int(round(warmup_fraction * total))}
    if method.schedule == "wsd":
        kwargs["decay_fraction"] = WSD_DECAY_FRACTION
    schedule = schedules.registry.build(method.schedule, total_steps=total, **kwargs)
    return np.asarray(jax.vmap(schedule)(jnp.minimum(steps, total)), np.float32)


def build_optimizer(method: Method, lr, weight_decay, warmup_steps) -> optax.GradientTransformation:
    """`method`'s optimizer for one lane; `lr` a schedule or scalar, the rest (traced) scalars.

    The optimizer's own warm-up (schedule-free's `warmup_steps`) gets the searched warm-up.
    """
    entry = method.entry
    kwargs = dict(method.kwargs)
    if method.decay == "kwarg":
        kwargs["weight_decay"] = weight_decay
    if method.schedule == "own" and "warmup_steps" in entry.accepted_kwargs():
        kwargs["warmup_steps"] = warmup_steps
    return entry.build(lr, **kwargs)


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
    """Every seed x (the tuned configurations and/or the self-tuning default) of `method`."""
    length = int(math.ceil(SELF_TUNING_FACTOR * budget)) if "self" in tracks else budget
    rows = []
    if "tuned" in tracks:
        for c, (factor, wd, warmup) in enumerate(search_space()):
            rows.append((c, method.base_lr * factor, wd, warmup, budget, True))
    if "self" in tracks:
        warmup = SELF_TUNING_WARMUP if method.schedule not in ("own", "autolrs") else 0.0
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
