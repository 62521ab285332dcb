"""Joining a multi-process run (TPU pod slices, multi-host GPU, local multi-process tests).

Every process runs the same command; when the environment describes a multi-process run,
`maybe_initialize_distributed()` joins it with `jax.distributed.initialize` before any jax
computation, and meshes then span every process's devices.
"""

from __future__ import annotations

import os
import sys

# Set by launchers of multi-process runs (tpu/run.sh, tests of multi-process training).
_MULTIPROCESS_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "TPU_WORKER_HOSTNAMES")


# Seconds every process waits for all the others to join before it aborts (exit code 134),
# so a launch on fewer than all workers fails instead of hanging.
_INIT_TIMEOUT_ENV = "EXPERIMENTS_INIT_TIMEOUT_S"
_DEFAULT_INIT_TIMEOUT_S = 300


def distributed_kwargs(environ=None) -> dict:
    """jax.distributed.initialize's arguments from the environment; checks them first.

    The coordinator is `host:port` with the port given explicitly: jax's default port changed
    across versions, and a port blocked on one worker deadlocks the whole slice.
    """
    environ = os.environ if environ is None else environ
    timeout = int(environ.get(_INIT_TIMEOUT_ENV) or _DEFAULT_INIT_TIMEOUT_S)
    if timeout < 1:
        raise ValueError(f"{_INIT_TIMEOUT_ENV} must be >= 1 second, got {timeout}")
    kwargs: dict = {"initialization_timeout": timeout}
    if not environ.get("JAX_COORDINATOR_ADDRESS"):
        return kwargs  # TPU VM: jax finds the coordinator and the process ids itself
    address = environ["JAX_COORDINATOR_ADDRESS"]
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"JAX_COORDINATOR_ADDRESS must be host:port, got {address!r}")
    missing = [n for n in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID") if not environ.get(n)]
    if missing:
        raise ValueError(f"JAX_COORDINATOR_ADDRESS is set but {missing} are not")
    num_processes, process_id = int(environ["JAX_NUM_PROCESSES"]), int(environ["JAX_PROCESS_ID"])
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ValueError(
            f"JAX_PROCESS_ID={process_id} must be in [0, JAX_NUM_PROCESSES={num_processes})"
        )
    kwargs.update(coordinator_address=address, num_processes=num_processes, process_id=process_id)
    return kwargs


def maybe_initialize_distributed() -> None:
    """Joins a multi-process run when the environment describes one; no-op otherwise."""
    if not any(os.environ.get(name) for name in _MULTIPROCESS_ENV):
        return
    import jax

    kwargs = distributed_kwargs()
    print(
        f"joining a multi-process run: {kwargs}; every process must join within "
        f"{kwargs['initialization_timeout']} s ({_INIT_TIMEOUT_ENV}) or all abort",
        file=sys.stderr,
        flush=True,
    )
    jax.distributed.initialize(**kwargs)
