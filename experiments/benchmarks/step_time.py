"""Step time of optlib's optimizers against optax and the memory-bandwidth floor.

    python -m experiments.benchmarks.step_time [--layout all] [--rounds 30]
    python -m experiments.benchmarks.step_time --leaves 20 --leaf-size 500000 [--rounds 30]

`--layout` picks the params (all three by default): "leaves20", ~10M float32 params in 20
leaves of 1000x500; "one", one 20000x500 leaf (10M); "many", 200 leaves of 100x500 (50k each,
10M in all). `--leaves`/`--leaf-size` instead give one custom layout of that many leaves of
that size. Each method is one jitted `update` + `apply_updates` that donates params and
state. The floor is one jitted read+write pass `x * c` over the same tree, `c` a runtime
scalar, also donated. Runs are interleaved: in each round every method runs once right after
a floor run, and each reported ratio is the median over rounds of the paired ratios, so slow
drifts of a shared machine cancel out. Timings are never asserted in tests; the numbers go
into BENCHMARKS.md.

Each table also gives the optimizer-state bytes per parameter (from
`jax.eval_shape(opt.init, params)`) and a bytes-moved lower bound: the number of reads plus
writes of param-sized float32 arrays one step cannot avoid (`PASSES`, with the reason for each
count). The floor moves 2 (read x, write x), so "x bound" = (time / floor time) / (passes / 2),
the median of the paired per-round values: 1.0 runs at the floor's bandwidth.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optlib

# Extra keyword arguments for `update`, built from the (fixed) benchmark gradients: MoMo takes
# the loss as `value=`, SAM's opaque mode a `grad_fn`. Methods that need none use NO_EXTRA.
NO_EXTRA: Callable[[dict], dict] = lambda grads: {}
WITH_VALUE: Callable[[dict], dict] = lambda grads: {"value": jnp.float32(1.0)}
# The gradient function depends on the params it gets (the gradient of a quadratic), so the
# perturbed params are not dead code; `*_` takes the step index optax.contrib.sam passes.
WITH_GRAD_FN: Callable[[dict], dict] = lambda grads: {
    "grad_fn": lambda params, *_: jax.tree.map(lambda g, p: g + 1e-3 * p, grads, params)
}


def copy_params_at_init(opt: optax.GradientTransformation) -> optax.GradientTransformation:
    """optax.contrib.dog keeps the params array itself as x0, which a step that donates both
    params and state rejects ("donate the same buffer twice"); optlib.dog copies at init."""
    opt = optax.with_extra_args_support(opt)
    return optax.GradientTransformationExtraArgs(
        lambda params: opt.init(jax.tree.map(jnp.copy, params)), opt.update
    )


# (name, ours, optax equivalent or None[, extra update arguments]); same hyper-parameters on
# both sides.
PAIRS: list[tuple] = [
    (
        "lamb",
        lambda: optlib.lamb(1e-3, weight_decay=0.01),
        lambda: optax.lamb(1e-3, weight_decay=0.01),
    ),
    (
        "lars",
        lambda: optlib.lars(1e-3, weight_decay=1e-4, momentum=0.9),
        lambda: optax.lars(1e-3, weight_decay=1e-4, momentum=0.9),
    ),
    (
        "lars (combined)",
        lambda: optlib.lars(1e-3, weight_decay=1e-4, denominator="combined"),
        lambda: optax.lars(1e-3, weight_decay=1e-4, momentum=0.9),
    ),
    ("tvlars", lambda: optlib.tvlars(1e-3, weight_decay=1e-4), None),
    (
        "schedule_free_adamw",
        lambda: optlib.schedule_free_adamw(1e-3, warmup_steps=100, weight_decay=0.01),
        lambda: optax.contrib.schedule_free_adamw(1e-3, warmup_steps=100, weight_decay=0.01),
    ),
    (
        "schedule_free_sgd",
        lambda: optlib.schedule_free_sgd(1.0, warmup_steps=100),
        lambda: optax.contrib.schedule_free_sgd(1.0, warmup_steps=100),
    ),
    (
        "sam (opaque, sgd momentum)",
        lambda: optlib.sam(optax.sgd(1e-3, momentum=0.9), rho=0.05),
        lambda: optax.contrib.sam(
            optax.sgd(1e-3, momentum=0.9),
            optax.chain(optax.contrib.normalize(), optax.sgd(0.05)),
            sync_period=2,
            opaque_mode=True,
        ),
        WITH_GRAD_FN,
    ),
    ("dog", lambda: optlib.dog(), lambda: copy_params_at_init(optax.contrib.dog()), NO_EXTRA),
    ("ldog", lambda: optlib.ldog(), None, NO_EXTRA),
    ("momo", lambda: optlib.momo(), lambda: optax.contrib.momo(), WITH_VALUE),
    ("momo_adam", lambda: optlib.momo_adam(), lambda: optax.contrib.momo_adam(), WITH_VALUE),
    (
        "with_averaging (sgd momentum, ema)",
        lambda: optlib.with_averaging(optax.sgd(1e-3, momentum=0.9), "ema", decay=0.999),
        None,
        NO_EXTRA,
    ),
]
ADAMW = ("adamw (optax)", lambda: optax.adamw(1e-3, weight_decay=0.01))

# Bytes-moved lower bound per step, in passes over a param-sized float32 array (reads +
# writes), and why. A global or per-layer norm that must be known before anything is written
# costs its own read sweep first; everything else is assumed fused into one sweep.
PASSES: dict[str, tuple[int, str]] = {
    "floor (x * c)": (2, "read x, write x"),
    "adamw (optax)": (7, "read g, w, m, v; write w, m, v"),
    "lamb": (
        10,
        "sweep 1 reads g, m, v, w, writes m, v (for ‖r‖, ‖w‖); sweep 2 reads m, v, w, writes w",
    ),
    "lars": (7, "sweep 1 reads g, w (‖g‖, ‖w‖); sweep 2 reads g, w, m, writes m, w"),
    "lars (combined)": (
        7,
        "sweep 1 reads g, w (‖g + wd w‖, ‖w‖); sweep 2 reads g, w, m, writes m, w",
    ),
    "tvlars": (7, "as lars: sweep 1 reads g, w for the norms; sweep 2 reads g, w, m, writes m, w"),
    "schedule_free_adamw": (7, "read g, y (= params), z, v; write y, z, v"),
    "schedule_free_sgd": (5, "read g, y (= params), z; write y, z"),
    "sam (opaque, sgd momentum)": (
        6,
        "sweep 1 reads g (‖g‖); sweep 2 reads g, w, m (the benchmark's grad_fn at w + eps "
        "is elementwise, so it fuses), writes m, w",
    ),
    "dog": (6, "sweep 1 reads g, x, x0 (‖g‖^2, ‖x - x0‖); sweep 2 reads x, g, writes x"),
    "ldog": (6, "per layer as dog: reads g, x, x0, then reads x, g, writes x"),
    "momo": (
        7,
        "sweep 1 reads g, d, x, writes d (<g,x>, <d,x>, ‖d‖^2); sweep 2 reads x, d, writes x",
    ),
    "momo_adam": (
        10,
        "sweep 1 reads g, m, D, x, writes m, D (the inner products); sweep 2 reads x, m, D, "
        "writes x",
    ),
    "with_averaging (sgd momentum, ema)": (
        7,
        "sgd momentum's 5 (read g, m, w; write m, w) plus read and write the average",
    ),
}


def state_bytes_per_param(opt: optax.GradientTransformation, params: dict) -> float:
    """Optimizer-state bytes per parameter, from the shapes `opt.init` would allocate."""
    shapes = jax.eval_shape(opt.init, params)
    state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(shapes))
    return state_bytes / sum(x.size for x in jax.tree.leaves(params))


def make_params(num_leaves: int, leaf_size: int, seed: int = 0) -> dict:
    rows = max(1, leaf_size // 500)
    cols = leaf_size // rows
    keys = jax.random.split(jax.random.PRNGKey(seed), num_leaves)
    return {f"layer_{i:02d}": jax.random.normal(k, (rows, cols)) for i, k in enumerate(keys)}


class Runner:
    """Holds one method's compiled step and its (donated, so re-bound) params and state."""

    def __init__(
        self,
        opt: optax.GradientTransformation,
        params: dict,
        grads: dict,
        extra: Callable[[dict], dict] = NO_EXTRA,
    ):
        def step(params, state, grads):
            updates, state = opt.update(grads, state, params, **extra(grads))
            return optax.apply_updates(params, updates), state

        self.step = jax.jit(step, donate_argnums=(0, 1))
        self.state_bytes = state_bytes_per_param(opt, params)
        self.params = jax.tree.map(jnp.copy, params)
        self.state = opt.init(self.params)
        self.grads = grads
        self()  # compile

    def __call__(self) -> float:
        start = time.perf_counter()
        self.params, self.state = self.step(self.params, self.state, self.grads)
        jax.block_until_ready(self.params)
        return time.perf_counter() - start


class Floor:
    def __init__(self, params: dict):
        self.scale = jax.jit(lambda p, c: jax.tree.map(lambda x: x * c, p), donate_argnums=0)
        self.params = jax.tree.map(jnp.copy, params)
        self.c = jnp.float32(1.0)
        self()

    def __call__(self) -> float:
        start = time.perf_counter()
        self.params = self.scale(self.params, self.c)
        jax.block_until_ready(self.params)
        return time.perf_counter() - start


# name: (leaves, leaf size); each ~10M float32 params.
LAYOUTS: dict[str, tuple[int, int]] = {
    "leaves20": (20, 500_000),
    "one": (1, 10_000_000),
    "many": (200, 50_000),
}


def measure(num_leaves: int, leaf_size: int, rounds: int, warmup: int = 3) -> dict:
    params = make_params(num_leaves, leaf_size)
    grads = jax.tree.map(lambda x: 0.01 * jnp.tanh(x), params)
    floor = Floor(params)
    runners = {ADAMW[0]: Runner(ADAMW[1](), params, grads)}
    for name, ours, theirs, *extra in PAIRS:
        extra = extra[0] if extra else NO_EXTRA
        runners[f"{name} (optlib)"] = Runner(ours(), params, grads, extra)
        if theirs is not None:
            runners[f"{name} (optax)"] = Runner(theirs(), params, grads, extra)
    ratios: dict[str, list[float]] = {name: [] for name in runners}
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    floor_seconds = []
    for i in range(warmup + rounds):
        for name, runner in runners.items():
            f = floor()
            t = runner()
            if i >= warmup:
                ratios[name].append(t / f)
                seconds[name].append(t)
                floor_seconds.append(f)
    return {
        "ratios": {k: np.asarray(v) for k, v in ratios.items()},
        "seconds": {k: float(np.median(v)) for k, v in seconds.items()},
        "state_bytes": {k: runner.state_bytes for k, runner in runners.items()},
        "floor_seconds": float(np.median(floor_seconds)),
        "num_params": sum(x.size for x in jax.tree.leaves(params)),
    }


def _bound_cells(name: str, ratios: np.ndarray) -> str:
    """The pass count and the median paired ratio of time to the bytes-moved lower bound."""
    passes = PASSES.get(name) or PASSES.get(name.removesuffix(" (optlib)").removesuffix(" (optax)"))
    if passes is None:
        return " | "
    return f"{passes[0]} | {np.median(ratios) * 2 / passes[0]:.2f}"


def table(result: dict) -> str:
    r = result["ratios"]
    adamw = r[ADAMW[0]]
    state = result["state_bytes"]

    def row(name: str, speedup: str, vs_adamw: str) -> str:
        return (
            f"| {name} | {1e3 * result['seconds'][name]:.2f} | {np.median(r[name]):.2f} | "
            f"{_bound_cells(name, r[name])} | {state[name]:.1f} | {speedup} | {vs_adamw} |"
        )

    lines = [
        "| method | ms / step | x floor | passes | x bound | state B / param "
        "| optax / optlib (speed-up) | x adamw |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| floor (x * c) | {1e3 * result['floor_seconds']:.2f} | 1.00 | 2 | 1.00 | 0.0 | | |",
        row(ADAMW[0], "", "1.00"),
    ]
    for name, _, theirs, *_ in PAIRS:
        ours = r[f"{name} (optlib)"]
        speedup = ""
        if theirs is not None:
            # Paired per round: both ratios share the same floor normalisation scale.
            speedup = f"{np.median(r[f'{name} (optax)'] / ours):.2f}"
        lines.append(row(f"{name} (optlib)", speedup, f"{np.median(ours / adamw):.2f}"))
        if theirs is not None:
            theirs_r = r[f"{name} (optax)"]
            lines.append(row(f"{name} (optax)", "", f"{np.median(theirs_r / adamw):.2f}"))
    return "\n".join(lines)


def passes_table() -> str:
    """The bytes-moved lower bounds as a markdown table."""
    lines = ["| method | passes | why |", "|---|---:|---|"]
    lines += [f"| {name} | {n} | {why} |" for name, (n, why) in PASSES.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layout", choices=[*LAYOUTS, "all"], default=None)
    parser.add_argument("--leaves", type=int, default=None)
    parser.add_argument("--leaf-size", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args(argv)
    for name in ("leaves", "leaf_size", "rounds"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be a positive int")
    if args.leaves is not None or args.leaf_size is not None:
        if args.layout is not None:
            parser.error("--layout cannot be combined with --leaves/--leaf-size")
        default_leaves, default_size = LAYOUTS["leaves20"]
        layouts = {"custom": (args.leaves or default_leaves, args.leaf_size or default_size)}
    elif args.layout in (None, "all"):
        layouts = LAYOUTS
    else:
        layouts = {args.layout: LAYOUTS[args.layout]}
    device = jax.devices()[0]
    for layout, (leaves, leaf_size) in layouts.items():
        result = measure(leaves, leaf_size, args.rounds)
        print(
            f"\n### layout {layout}: {result['num_params']:,} float32 params in {leaves} "
            f"leaves; {args.rounds} rounds; jax {jax.__version__}, optax {optax.__version__}, "
            f"{device.platform} ({platform.processor() or platform.machine()}, "
            f"{jax.device_count()} device(s))\n"
        )
        print(table(result))
    print("\n### bytes-moved lower bounds (passes over a param-sized array per step)\n")
    print(passes_table())


if __name__ == "__main__":
    main()
