"""Every registered optimizer on four toy problems, each at a small grid of learning rates.

    python -m experiments.demo [--steps 300] [--optimizers adamw lamb ...]

Each (optimizer, problem) pair trains for `--steps` steps with a cosine decay from the peak,
for every peak in `LR_FACTORS` times the optimizer's `base_lr` (optlib.registry) at once: the
grid is one vmapped program per pair. The table reports the best final training loss over the
grid (at the optimizer's eval params: schedule-free's x, an iterate average) and the peak that
reached it.

Its own loop, not experiments/train.py: a whole learning-rate grid is one vmapped program on
closed-form toy losses with no data, mesh or checkpoints. It drives every optimizer through its
registry entry, as the training loop does.

Expected: every method solves the quadratic and logistic regression to small loss; on
Rosenbrock and the MLP the layer-wise methods match or beat AdamW. Runtime: about a minute on
2 CPU cores for all 17 optimizers.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optlib
import optlib.registry

# The grid: peak learning rate = factor x the optimizer's base_lr.
LR_FACTORS = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0)

# --- workloads: (initial params, loss) ------------------------------------------------------


def quadratic() -> tuple[dict, Callable]:
    """An ill-conditioned quadratic (condition number 1e3) with a 2-D and a 1-D leaf."""
    curvature = jnp.logspace(0, 3, 20).reshape(4, 5) / 1e3
    target = jnp.linspace(-1.0, 1.0, 20).reshape(4, 5)

    def loss(params):
        return 0.5 * jnp.sum(curvature * (params["w"] - target) ** 2) + 0.5 * jnp.sum(
            (params["b"] - 0.5) ** 2
        )

    return {"w": jnp.full((4, 5), 0.1), "b": jnp.zeros(5)}, loss


def rosenbrock() -> tuple[dict, Callable]:
    def loss(params):
        x, y = params["xy"][0, 0], params["xy"][0, 1]
        return (1 - x) ** 2 + 100 * (y - x**2) ** 2

    return {"xy": jnp.array([[-1.2, 1.0]])}, loss


def logistic_regression() -> tuple[dict, Callable]:
    """L2-regularised logistic regression on 512 synthetic examples in 20 dimensions."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 20)) * np.linspace(0.2, 3.0, 20)
    y = (x @ rng.normal(size=20) + 0.5 * rng.normal(size=512) > 0).astype(np.float32)
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y)

    def loss(params):
        logits = x @ params["w"][:, 0] + params["b"][0]
        data = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, y))
        return data + 0.5e-3 * jnp.sum(params["w"] ** 2)

    return {"w": jnp.full((20, 1), 0.01), "b": jnp.zeros(1)}, loss


def mlp_two_moons() -> tuple[dict, Callable]:
    """A 2-32-32-2 tanh MLP on 256 points of two interleaved half-moons."""
    rng = np.random.default_rng(1)
    t = rng.uniform(0, np.pi, 256)
    label = rng.integers(0, 2, 256)
    x = np.stack([np.cos(t) + label, np.sin(t) * (1 - 2 * label) + 0.5 * label], 1)
    x = jnp.asarray(x + 0.1 * rng.normal(size=x.shape), jnp.float32)
    y = jnp.asarray(label)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    sizes = [(2, 32), (32, 32), (32, 2)]
    params = {
        f"layer{i}": {
            "kernel": jax.random.normal(k, s) / jnp.sqrt(s[0]),
            "bias": jnp.zeros(s[1]),
        }
        for i, (k, s) in enumerate(zip(keys, sizes, strict=True))
    }

    def loss(params):
        h = x
        for i in range(3):
            h = h @ params[f"layer{i}"]["kernel"] + params[f"layer{i}"]["bias"]
            h = jnp.tanh(h) if i < 2 else h
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(h, y))

    return params, loss


WORKLOADS = {
    "quadratic": quadratic,
    "rosenbrock": rosenbrock,
    "logreg": logistic_regression,
    "mlp": mlp_two_moons,
}

# Demo settings beyond the registry defaults: exclude biases from decay and adaptation, as
# the layer-wise methods' authors do; TVLARS's delay fitted to a 300-step run.
KWARGS: dict[str, dict] = {
    "adamw": {"weight_decay": 1e-4},
    "lamb": {"weight_decay": 1e-4, "weight_decay_mask": optlib.masks.exclude_1d},
    "lars": {"trust_coefficient": 1.0, "adaptation_mask": optlib.masks.exclude_1d},
    "tvlars": {
        "trust_coefficient": 1.0,
        "alpha": 1.0,
        "decay_rate": 0.02,
        "delay_steps": 50.0,
        "min_factor": 0.1,
        "weight_decay": 0.0,
    },
}


def train_grid(name: str, workload: Callable, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(peaks, final losses at the eval params) for every peak in the grid (cosine decay to 0)."""
    entry = optlib.registry.get(name)
    peaks = entry.base_lr * np.asarray(LR_FACTORS)
    params0, loss_fn = workload()

    def run(peak):
        opt = entry.build(optax.cosine_decay_schedule(peak, steps), **KWARGS.get(name, {}))

        def body(_, carry):
            params, state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params)
            extra = entry.update_kwargs(loss=loss, grad_fn=jax.grad(loss_fn))
            updates, state = opt.update(grads, state, params, **extra)
            return optax.apply_updates(params, updates), state

        params, state = jax.lax.fori_loop(0, steps, body, (params0, opt.init(params0)))
        return loss_fn(entry.eval_params(state, params))

    losses = jax.jit(jax.vmap(run))(jnp.asarray(peaks, jnp.float32))
    return peaks, np.asarray(losses)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--optimizers", nargs="+", default=optlib.registry.names())
    args = parser.parse_args(argv)
    if args.steps <= 0:
        parser.error(f"--steps must be a positive int, got {args.steps}")
    for name in args.optimizers:
        try:
            optlib.registry.get(name)
        except ValueError as e:
            parser.error(str(e))

    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}; {args.steps} steps, cosine "
        f"decay, best peak lr in {LR_FACTORS} x the optimizer's base_lr\n"
    )
    header = f"{'optimizer':<20}" + "".join(f"{w:>24}" for w in WORKLOADS)
    print(header)
    print("-" * len(header))
    start = time.perf_counter()
    for name in args.optimizers:
        cells = []
        for workload in WORKLOADS.values():
            peaks, losses = train_grid(name, workload, args.steps)
            finite = np.where(np.isfinite(losses), losses, np.inf)
            best = int(np.argmin(finite))
            if not np.isfinite(finite[best]):
                cells.append(f"{'diverged':>24}")
            else:
                cells.append(f"{finite[best]:>14.3e} @ {peaks[best]:<7.3g}")
        print(f"{name:<20}" + "".join(cells), flush=True)
    print(f"\n(final training loss @ best peak lr; {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
