"""Test setup: 8 simulated CPU devices, fixed before jax is imported anywhere.

Every test runs on a host platform that pretends to have 8 devices, so sharding code paths
(meshes, NamedSharding, collectives) are exercised on any laptop or CI machine.
"""

import os

# Must run before the first `import jax`: XLA reads these flags once, at backend start.
os.environ["JAX_PLATFORMS"] = "cpu"
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()

import jax  # noqa: E402
import pytest  # noqa: E402

NUM_DEVICES = 8


def pytest_configure(config):
    del config
    if jax.device_count() != NUM_DEVICES:
        raise RuntimeError(
            f"tests expect {NUM_DEVICES} simulated CPU devices, got {jax.device_count()}: "
            "was jax imported before tests/conftest.py set XLA_FLAGS?"
        )


@pytest.fixture
def x64():
    """Enables float64 for one test (golden trajectories need it), then restores the flag."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)
