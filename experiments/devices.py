"""What one accelerator device offers: memory (HBM) and peak bf16 matmul throughput.

Keyed by `jax.Device.device_kind`. TPU v2/v3 appear as one jax device per TensorCore (half a
chip); v4 and v5p as one per chip (megacore); v5e and v6e have one core per chip. Figures are
the vendors' published per-chip numbers (dense bf16, no sparsity), divided per device. Where a
real device reports its memory (`memory_stats()["bytes_limit"]`), that wins over the table.

    >>> spec_of_kind("TPU v5 lite").hbm_bytes / 2**30
    16.0
"""

from __future__ import annotations

import dataclasses

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class DeviceSpec:
    kind: str
    hbm_bytes: int  # memory of one jax device
    peak_flops: float  # dense bf16 FLOP/s of one jax device


# (substring of device_kind, spec); the first match wins, so longer names come first.
_TABLE = (
    ("TPU v6 lite", DeviceSpec("TPU v6e", 32 * GIB, 918e12)),
    ("TPU v5 lite", DeviceSpec("TPU v5e", 16 * GIB, 197e12)),
    ("TPU v5p", DeviceSpec("TPU v5p", 95 * GIB, 459e12)),
    ("TPU v5", DeviceSpec("TPU v5p", 95 * GIB, 459e12)),
    ("TPU v4 lite", DeviceSpec("TPU v4i", 8 * GIB, 138e12)),
    ("TPU v4", DeviceSpec("TPU v4", 32 * GIB, 275e12)),
    ("TPU v3", DeviceSpec("TPU v3 (per core)", 16 * GIB, 61.5e12)),
    ("TPU v2", DeviceSpec("TPU v2 (per core)", 8 * GIB, 22.5e12)),
    ("H200", DeviceSpec("NVIDIA H200", 141 * 10**9, 989e12)),
    ("H100", DeviceSpec("NVIDIA H100", 80 * 10**9, 989e12)),
    ("A100-SXM4-40GB", DeviceSpec("NVIDIA A100 40GB", 40 * 10**9, 312e12)),
    ("A100", DeviceSpec("NVIDIA A100 80GB", 80 * 10**9, 312e12)),
)


def spec_of_kind(device_kind: str) -> DeviceSpec | None:
    """The table's entry for a `device_kind` string, or None (CPU, unknown accelerators)."""
    for key, spec in _TABLE:
        if key in device_kind:
            return spec
    return None


def spec(device) -> DeviceSpec | None:
    """The spec of a jax device, with the memory it reports itself where it can."""
    found = spec_of_kind(getattr(device, "device_kind", ""))
    try:
        stats = device.memory_stats() or {}
    except Exception:  # compile-only (topology) devices and CPUs have no memory stats
        stats = {}
    limit = stats.get("bytes_limit")
    if limit and found is not None:
        return dataclasses.replace(found, hbm_bytes=int(limit))
    return found


def peak_flops(device) -> float | None:
    """Peak dense bf16 FLOP/s of `device`, or None where unknown (MFU is then not available)."""
    found = spec(device)
    return None if found is None else found.peak_flops
