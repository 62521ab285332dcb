"""The demo behind `make run`: optlib's optimizers against optax baselines on toy workloads.

Each (optimizer, workload) pair trains for `--steps` steps with a cosine-decayed learning
rate, for every peak rate in a small grid at once (the grid is vmapped through
`optax.inject_hyperparams`, so each pair compiles once). The table reports the best final
training loss over the grid and the peak rate that reached it.

    python -m experiments.demo [--steps 300]

Expected: every method solves the quadratic and logistic regression to small loss; on
Rosenbrock and the MLP the layer-wise methods match or beat AdamW. Runtime: about 15 s on
2 CPU cores.
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

LEARNING_RATES = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)


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

# name -> factory of the learning rate (the only hyper-parameter the grid varies).
OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "optlib.lamb": lambda learning_rate: optlib.lamb(
        learning_rate, weight_decay=1e-4, weight_decay_mask=optlib.masks.exclude_1d
    ),
    "optlib.lars": lambda learning_rate: optlib.lars(
        learning_rate, trust_coefficient=1.0, adaptation_mask=optlib.masks.exclude_1d
    ),
    "optlib.tvlars": lambda learning_rate: optlib.tvlars(
        learning_rate,
        trust_coefficient=1.0,
        alpha=1.0,
        decay_rate=0.02,
        delay_steps=50.0,
        min_factor=0.1,
        weight_decay=0.0,
    ),
    "optax.adamw": lambda learning_rate: optax.adamw(learning_rate, weight_decay=1e-4),
    "optax.sgd+momentum": lambda learning_rate: optax.sgd(learning_rate, momentum=0.9),
}


def train_grid(factory: Callable, workload: Callable, steps: int) -> np.ndarray:
    """Final losses for every peak learning rate in LEARNING_RATES (cosine decay to 0)."""
    params0, loss_fn = workload()
    opt = optax.inject_hyperparams(factory)(learning_rate=0.0)

    def run(peak):
        def body(step, carry):
            params, state = carry
            lr = peak * 0.5 * (1 + jnp.cos(jnp.pi * step / steps))
            state.hyperparams["learning_rate"] = lr
            grads = jax.grad(loss_fn)(params)
            updates, state = opt.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        params, _ = jax.lax.fori_loop(0, steps, body, (params0, opt.init(params0)))
        return loss_fn(params)

    losses = jax.jit(jax.vmap(run))(jnp.asarray(LEARNING_RATES))
    return np.asarray(losses)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args(argv)
    if args.steps <= 0:
        parser.error(f"--steps must be a positive int, got {args.steps}")

    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}; {args.steps} steps, "
        f"cosine decay, best of peak lr in {LEARNING_RATES}\n"
    )
    header = f"{'optimizer':<20}" + "".join(f"{w:>24}" for w in WORKLOADS)
    print(header)
    print("-" * len(header))
    start = time.perf_counter()
    for name, factory in OPTIMIZERS.items():
        cells = []
        for workload in WORKLOADS.values():
            losses = train_grid(factory, workload, args.steps)
            finite = np.where(np.isfinite(losses), losses, np.inf)
            best = int(np.argmin(finite))
            if not np.isfinite(finite[best]):
                cells.append(f"{'diverged':>24}")
            else:
                cells.append(f"{finite[best]:>14.3e} @ {LEARNING_RATES[best]:<7g}")
        print(f"{name:<20}" + "".join(cells), flush=True)
    print(f"\n(final training loss @ best peak lr; {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
