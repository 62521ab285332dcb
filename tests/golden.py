"""Golden data in one place: the files under tests/testdata/ and the trajectory harness.

Every test reads reference data through `load(name)` (the files are copied from
../shared/reference/, produced by the authors' own code; `make golden` regenerates them).

`tests/testdata/golden_*.json` hold, per step k = 1, 2, ..., the loss before the step and both
parameter leaves after it, produced by running the authors' own implementations in float64.
`replay` runs an optax transformation on the same problem in float64 and checks every recorded
step to a relative tolerance of 1e-9.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

TESTDATA = pathlib.Path(__file__).parent / "testdata"
RTOL = 1e-9
# Entries that are exactly 0 in the reference cannot be matched relatively; allow a float64
# rounding-level absolute error there.
ATOL = 1e-13

# §13: P1 (2x2) and P2 (1-D), loss 1/2 sum H * (P - T)^2 per leaf.
P1 = [[1.0, -2.0], [0.5, 3.0]]
P2 = [0.3, -0.7, 1.2]
H1 = [[1.0, 2.0], [3.0, 4.0]]
T1 = [[0.0, 1.0], [-1.0, 0.5]]
H2 = [0.5, 1.5, 2.5]
T2 = [1.0, 0.0, -1.0]


def load(name: str) -> dict:
    with open(TESTDATA / name) as f:
        return json.load(f)


def toy_params() -> dict:
    return {"p1": jnp.asarray(P1, jnp.float64), "p2": jnp.asarray(P2, jnp.float64)}


def toy_loss(params: dict) -> jax.Array:
    h1, t1 = jnp.asarray(H1, jnp.float64), jnp.asarray(T1, jnp.float64)
    h2, t2 = jnp.asarray(H2, jnp.float64), jnp.asarray(T2, jnp.float64)
    return 0.5 * jnp.sum(h1 * (params["p1"] - t1) ** 2) + 0.5 * jnp.sum(
        h2 * (params["p2"] - t2) ** 2
    )


def replay(
    optimizer: optax.GradientTransformation,
    trajectory: list[dict],
    *,
    update_kwargs: Callable[[dict, jax.Array], dict] | None = None,
) -> list[dict]:
    """Runs `optimizer` on the toy and asserts every recorded step; returns what it saw.

    Must run with float64 enabled (the `x64` fixture).
    """
    assert jax.config.jax_enable_x64, "golden replays need the x64 fixture"
    params = toy_params()
    state = optimizer.init(params)
    seen = []
    for record in trajectory:
        loss, grads = jax.value_and_grad(toy_loss)(params)
        extra = update_kwargs(params, loss) if update_kwargs else {}
        updates, state = optimizer.update(grads, state, params, **extra)
        params = optax.apply_updates(params, updates)
        step = record["k"]
        np.testing.assert_allclose(
            float(loss),
            record["loss_before"],
            rtol=RTOL,
            atol=ATOL,
            err_msg=f"loss before step {step}",
        )
        for leaf in ("p1", "p2"):
            np.testing.assert_allclose(
                np.ravel(params[leaf]),
                record[leaf],
                rtol=RTOL,
                atol=ATOL,
                err_msg=f"{leaf} after step {step}",
            )
        seen.append({"k": step, "params": params, "state": state})
    return seen
