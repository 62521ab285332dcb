"""Meshes and shardings: the named mesh from a config, the FSDP rule, the batch sharding.

The mesh has two axes, `data` and `fsdp`. Batches are split over both (FSDP is data parallel
too: each device computes the gradient of its own slice of the batch); parameters and
optimizer state are split over `fsdp` along their largest axis that `fsdp` divides, and kept
whole on each device otherwise. The rule looks only at a leaf's shape, so a moment buffer gets
the same sharding as the parameter it mirrors without any bookkeeping, and a state restored
onto another mesh shape just gets that mesh's version of the rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXES = ("data", "fsdp")
BATCH_AXES = AXES  # every batch is split over all devices of both axes


def make_mesh(axis_sizes: Mapping[str, int], devices=None) -> Mesh:
    """A mesh with axes `data` and `fsdp`; one size may be -1 for "all remaining devices".

    Args:
      axis_sizes: {"data": n, "fsdp": m}, e.g. from `config.mesh`.
      devices: defaults to all devices (of all processes, in multi-host runs).

    Raises:
      ValueError: unknown axes, sizes < 1 other than one -1, or a product that does not
        divide / equal the device count.
    """
    devices = list(jax.devices() if devices is None else devices)
    unknown = set(axis_sizes) - set(AXES)
    if unknown:
        raise ValueError(f"mesh: unknown axes {sorted(unknown)}; the axes are {AXES}")
    sizes = [int(axis_sizes.get(name, 1)) for name in AXES]
    shown = dict(zip(AXES, sizes, strict=True))
    if sizes.count(-1) > 1:
        raise ValueError(f"mesh: at most one axis may be -1, got {shown}")
    if any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"mesh: sizes must be >= 1 or -1, got {shown}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"mesh: {shown} does not divide the {len(devices)} devices")
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise ValueError(
            f"mesh: {shown} needs {math.prod(sizes)} devices, there are {len(devices)}"
        )
    return jax.make_mesh(
        tuple(sizes),
        AXES,
        axis_types=(jax.sharding.AxisType.Auto,) * len(AXES),
        devices=devices,
    )


def fsdp_spec(shape: tuple[int, ...], fsdp_size: int, min_size: int = 1024) -> P:
    """Splits the largest axis that `fsdp_size` divides; small leaves stay replicated.

    Leaves with fewer than `min_size` elements are replicated: splitting a bias over devices
    costs a gather per use and saves nothing.
    """
    if fsdp_size == 1 or not shape or math.prod(shape) < min_size:
        return P()
    for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
        if shape[axis] % fsdp_size == 0:
            spec = [None] * len(shape)
            spec[axis] = "fsdp"
            return P(*spec)
    return P()


def tree_shardings(tree, mesh: Mesh, min_size: int = 1024):
    """NamedShardings for every leaf of `tree` (arrays or ShapeDtypeStructs) by the FSDP rule."""
    fsdp_size = mesh.shape["fsdp"]
    return jax.tree.map(
        lambda x: NamedSharding(mesh, fsdp_spec(tuple(np.shape(x)), fsdp_size, min_size)),
        tree,
    )


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (example) axis split over all devices; the other axes whole."""
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def check_batch_size(batch_size: int, mesh: Mesh, microbatches: int = 1) -> None:
    """Each of `microbatches` equal microbatches must split evenly over the batch devices."""
    shards = math.prod(mesh.shape[a] for a in BATCH_AXES)
    if microbatches < 1 or batch_size % microbatches:
        raise ValueError(
            f"workload.batch_size={batch_size} must be divisible by microbatches={microbatches}"
        )
    if (batch_size // microbatches) % shards:
        per = "" if microbatches == 1 else f"/ microbatches={microbatches} = "
        raise ValueError(
            f"workload.batch_size={batch_size} {per}"
            f"{'' if microbatches == 1 else batch_size // microbatches} must be divisible by "
            f"the {shards} devices of the mesh axes {BATCH_AXES} (mesh {dict(mesh.shape)})"
        )


def shard_batch(batch, mesh: Mesh):
    """Places a host batch (numpy) on the mesh, split over the batch axes.

    In multi-process runs every process holds the same global batch (data order is a
    function of the step), so each process contributes the rows of its own devices.
    """
    return place(batch, batch_sharding(mesh))


def process_rows(batch_size: int, mesh: Mesh) -> np.ndarray:
    """The rows of a global batch that this process's devices hold (sorted int64 indices)."""
    index_map = batch_sharding(mesh).addressable_devices_indices_map((batch_size,))
    rows = set()
    for index in index_map.values():
        rows.update(range(*index[0].indices(batch_size)))
    return np.array(sorted(rows), dtype=np.int64)


def shard_step_batch(workload, step: int, mesh: Mesh):
    """The batch of `step` of `workload`, placed on the mesh like `shard_batch`.

    In a multi-process run each process reads only the rows its own devices hold
    (`workload.batch_rows`), so a file-backed workload never reads the global batch on every
    host; the union over processes is `workload.batch(step)`.
    """
    if jax.process_count() == 1:
        return shard_batch(workload.batch(step), mesh)
    sharding = batch_sharding(mesh)
    size = workload.batch_size
    rows = process_rows(size, mesh)
    local = workload.batch_rows(step, rows)

    def place(x):
        def rows_of(index):
            wanted = np.arange(size)[index[0]]
            return x[np.searchsorted(rows, wanted)][(slice(None), *index[1:])]

        return jax.make_array_from_callback((size, *x.shape[1:]), sharding, rows_of)

    return jax.tree.map(place, local)


def replicate(tree, mesh: Mesh):
    """Places host arrays (e.g. the eval set) whole on every device of the mesh."""
    return place(tree, replicated(mesh))


def place(tree, sharding: NamedSharding):
    """Places host arrays as `sharding` says; each process contributes its devices' parts."""
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    return jax.tree.map(
        lambda x: jax.make_array_from_callback(x.shape, sharding, lambda index: x[index]),
        tree,
    )
