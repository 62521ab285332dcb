"""Shows that each workload's target is reachable with a standard optimizer in a stated budget.

    python -m experiments.workloads.check_targets [--only NAME[,NAME...]] [--steps N]

Trains each workload with a plain jitted loop (one device, no sharding) using the recipe in
`RECIPES` (optax AdamW or SGD with warmup + cosine), evaluates every `eval_every` steps, and
prints the first step (and wall time) at which the target was reached, the final metrics and
the mean step time. A measurement, not a test: run it one workload at a time on a busy machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
import optax

import experiments.workloads as workloads


@dataclasses.dataclass(frozen=True)
class Recipe:
    optimizer: str  # "adamw" or "sgd"
    learning_rate: float
    steps: int
    eval_every: int
    warmup: int = 0
    weight_decay: float = 0.0
    overrides: tuple[tuple[str, object], ...] = ()


RECIPES: dict[str, Recipe] = {
    "quadratic": Recipe("sgd", 1.0, 3000, 100, warmup=50),
    "rosenbrock": Recipe("adamw", 1e-1, 3000, 100, warmup=50),
    "logreg": Recipe("adamw", 1e-2, 2000, 50, warmup=50),
    "mlp_digits": Recipe("adamw", 3e-3, 3000, 100, warmup=100, weight_decay=0.1),
    "cnn_mnist1d": Recipe("adamw", 1e-2, 3000, 250, warmup=200),
    "lm": Recipe("adamw", 3e-3, 1000, 100, warmup=100, weight_decay=0.1),
    "dro_regression": Recipe("adamw", 3e-2, 3000, 100, warmup=50),
}


def make_optimizer(recipe: Recipe) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, recipe.learning_rate, max(recipe.warmup, 1), recipe.steps, 0.0
    )
    if recipe.optimizer == "adamw":
        return optax.adamw(schedule, weight_decay=recipe.weight_decay)
    return optax.sgd(schedule)


def run(name: str, recipe: Recipe) -> dict:
    config = workloads.default_config(name)
    for key, value in recipe.overrides:
        config[key] = value
    workload = workloads.make(config)
    opt = make_optimizer(recipe)
    params = jax.jit(workload.init_params)(jax.random.key(0))
    state = opt.init(params)

    @jax.jit
    def step(params, state, batch):
        loss, grads = jax.value_and_grad(workload.loss)(params, batch)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    eval_fn = jax.jit(workload.eval_metrics)
    eval_batch = jax.tree.map(jnp.asarray, workload.eval_batch())
    reached_at = reached_time = None
    start = time.perf_counter()
    step_times = []
    metrics = {}
    for i in range(recipe.steps):
        t0 = time.perf_counter()
        params, state, loss = step(params, state, workload.batch(i))
        jax.block_until_ready(loss)
        step_times.append(time.perf_counter() - t0)
        if (i + 1) % recipe.eval_every == 0 or i + 1 == recipe.steps:
            metrics = {k: float(v) for k, v in eval_fn(params, eval_batch).items()}
            if reached_at is None and workload.target.reached(metrics):
                reached_at, reached_time = i + 1, time.perf_counter() - start
            shown = " ".join(f"{k}={v:.5g}" for k, v in sorted(metrics.items()))
            print(f"  {name} step {i + 1}: train_loss={float(loss):.5g} {shown}", flush=True)
    total = time.perf_counter() - start
    per_step = sum(step_times[1:]) / max(len(step_times) - 1, 1)
    target = workload.target
    print(
        f"{name}: target {target.metric} {'<=' if target.mode == 'min' else '>='} {target.value}"
        f" {'reached at step ' + str(reached_at) if reached_at else 'NOT reached'}"
        + (f" ({reached_time:.1f} s)" if reached_at else "")
        + f"; final {target.metric}={metrics[target.metric]:.5g}; {recipe.steps} steps in"
        f" {total:.1f} s ({per_step * 1e3:.1f} ms/step after compile); recipe {recipe}",
        flush=True,
    )
    return {"reached_at": reached_at, "final": metrics, "ms_per_step": per_step * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated workload names")
    parser.add_argument("--steps", type=int, default=0, help="override the recipe's step count")
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else workloads.names()
    for name in chosen:
        if name not in RECIPES:
            raise SystemExit(f"no recipe for {name!r}; choose from {sorted(RECIPES)}")
        recipe = RECIPES[name]
        if args.steps:
            recipe = dataclasses.replace(recipe, steps=args.steps)
        run(name, recipe)


if __name__ == "__main__":
    main()
