"""Seconds per epoch of Prospect and of minibatch SGD on a spectral-risk regression.

    python -m experiments.benchmarks.prospect_epoch            # n = 1e3, 1e4, 1e5; d = 20
    python -m experiments.benchmarks.prospect_epoch --sizes 1000,10000 --x64

One epoch is n steps of one example each. Each method runs as one jitted `lax.scan` over its
steps, timed after a compiling warm-up run of the same length; for n > --max_steps the scan
covers --max_steps steps and the epoch time is extrapolated linearly (every step of Prospect
costs the same few O(n) passes, so the time per step does not depend on how many are run).

Prospect runs in linear mode (one scalar per example in the gradient table) and, for
comparison, with the full n x d gradient table. SGD with batch 1 takes the gradient of the
spectral risk of its one-example minibatch, which is the squared loss plus the ridge.
"""

from __future__ import annotations

import argparse
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

import optlib
from optlib import _prospect, spectral


def _sq(prediction, target):
    return 0.5 * (prediction - target) ** 2


def _loss(w, example):
    x, y = example
    return 0.5 * (x @ w - y) ** 2


def _time(fn, *args, repeats: int = 1) -> float:
    jax.block_until_ready(fn(*args))  # compile + warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best


def bench(n: int, d: int, max_steps: int, dtype) -> dict[str, float]:
    rng = np.random.default_rng(0)
    X = jnp.asarray(rng.standard_normal((n, d)), dtype)
    y = jnp.asarray(X @ rng.standard_normal(d) + rng.standard_t(3, n), dtype)
    w0 = jnp.zeros(d, dtype)
    spectrum = spectral.cvar(n, 0.5)
    steps = min(n, max_steps)
    scale = n / steps
    key = jax.random.key(0)
    out = {}

    lin = optlib.prospect(0.01, spectrum, 1.0, linear=True)
    losses, s = optlib.prospect_tables(_sq, w0, y, features=X)
    state = lin.init(w0, losses=losses, grads=s, features=X)
    run = _prospect._epochs_fn(lin, _sq, steps, True, False)
    out["prospect (linear table)"] = scale * _time(run, w0, state, y, X, key)

    full = optlib.prospect(0.01, spectrum, 1.0)
    losses, grads = optlib.prospect_tables(_loss, w0, (X, y))
    state = full.init(w0, losses=losses, grads=grads)
    run = _prospect._epochs_fn(full, _loss, steps, False, False)
    out["prospect (n x d table)"] = scale * _time(run, w0, state, (X, y), None, key)

    def sgd_run(w, key):
        grad = jax.grad(lambda w, x, t: _sq(x @ w, t) + 0.5 / n * jnp.sum(w**2))

        def step(w, k):
            i = jax.random.randint(k, (), 0, n)
            return w - 0.003 * grad(w, X[i], y[i]), None

        return jax.lax.scan(step, w, jax.random.split(key, steps))[0]

    out["sgd (batch 1)"] = scale * _time(jax.jit(sgd_run), w0, key)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--d", type=int, default=20)
    parser.add_argument("--max_steps", type=int, default=10_000)
    parser.add_argument("--x64", action="store_true", help="float64 (default float32)")
    args = parser.parse_args(argv)
    if args.x64:
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.float64 if args.x64 else jnp.float32
    print(
        f"jax {jax.__version__}, {jax.devices()[0].platform}, {platform.processor() or ''} "
        f"{jnp.dtype(dtype).name}, d = {args.d}"
    )
    print(f"{'n':>8} {'method':<26} {'s / epoch':>10}")
    for n in (int(v) for v in args.sizes.split(",")):
        for name, seconds in bench(n, args.d, args.max_steps, dtype).items():
            note = "" if n <= args.max_steps else f"  (extrapolated from {args.max_steps} steps)"
            print(f"{n:>8} {name:<26} {seconds:>10.3f}{note}", flush=True)


if __name__ == "__main__":
    main()
