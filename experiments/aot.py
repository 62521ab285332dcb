"""Ahead-of-time compile check: will a config's training step fit the target mesh?

    python -m experiments.aot --config=experiments/configs/lm.py --mesh=data:4,fsdp:2 \
        [--devices=8] [--topology=v5e:2x4] [--config.key=value ...]

Builds the real training program of `--config` (`experiments.train.build`) on a mesh of the
requested shape, lowers and compiles its step from abstract sharded inputs (no array is ever
allocated), and prints, per device: the bytes of the state that the FSDP shardings place there,
XLA's memory analysis of the compiled step (arguments, outputs, temporaries, generated code)
and, where XLA gives one, its FLOP estimate. Run it on a laptop before renting a pod.

Devices. Without `--topology`, the mesh is laid over simulated CPU devices: the command sets
`--xla_force_host_platform_device_count` to `--devices` (default: the mesh's size) before jax
is imported, so argv is read first. The CPU compiler's buffer assignment differs from the TPU
one (fusion, layouts, no bf16 packing), so treat the temp size as an estimate; the state and
argument sizes are exact because they follow from shapes and shardings alone.

With `--topology=NAME` (e.g. `v5e:2x4`) the step is compiled for that TPU slice through
`jax.experimental.topologies.get_topology_desc`, which needs libtpu (installed by
`pip install -e '.[tpu]'`) but no TPU: checked on a CPU-only machine with jax 0.10.2 and
libtpu 0.0.42.1 (libtpu logs warnings about TPU_ACCELERATOR_TYPE / TPU_WORKER_HOSTNAMES, which
do not matter here). TPU layouts pad small arrays, so there the argument bytes exceed the state
bytes that the shardings give. v4 topologies come as one device per TensorCore, which
`jax.make_mesh` rejects ("megacore"). Without libtpu jax raises "JAX TPU support not
installed; cannot generate TPU topology", and this command says so.
"""

from __future__ import annotations

import math
import os
import sys


def _argv_value(argv: list[str], name: str) -> str | None:
    """The value of `--name=value` or `--name value` in argv (the last one wins)."""
    value = None
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
        elif arg == f"--{name}" and i + 1 < len(argv):
            value = argv[i + 1]
    return value


def parse_mesh(text: str) -> dict[str, int]:
    """'data:4,fsdp:2' -> {'data': 4, 'fsdp': 2}."""
    sizes = {}
    for part in text.split(","):
        name, sep, size = part.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"--mesh: expected axis:size pairs like data:4,fsdp:2, got {text!r}")
        try:
            sizes[name.strip()] = int(size)
        except ValueError:
            raise ValueError(f"--mesh: size of {name!r} must be an integer, got {size!r}") from None
    return sizes


def _force_host_device_count(argv: list[str]) -> None:
    """Sets the simulated CPU device count from --devices / --mesh; must run before jax loads."""
    if _argv_value(argv, "topology"):
        return  # compile-only TPU devices; the host platform is not used for the mesh
    if "jax" in sys.modules:
        raise RuntimeError("experiments.aot must set XLA_FLAGS before jax is imported")
    count = _argv_value(argv, "devices")
    if count is None:
        mesh = _argv_value(argv, "mesh")
        sizes = parse_mesh(mesh) if mesh else {}
        count = str(math.prod(s for s in sizes.values() if s > 0) or 1)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    flags = [
        f
        for f in os.environ.get("XLA_FLAGS", "").split()
        if not f.startswith("--xla_force_host_platform_device_count")
    ]
    flags.append(f"--xla_force_host_platform_device_count={int(count)}")
    os.environ["XLA_FLAGS"] = " ".join(flags)


if __name__ == "__main__":
    _force_host_device_count(sys.argv)

import dataclasses  # noqa: E402

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402


@dataclasses.dataclass(frozen=True)
class CompileReport:
    """What one compile of the training step says about one device of the mesh."""

    mesh: dict[str, int]
    platform: str
    num_params: int
    state_bytes: int  # this device's shards of params + optimizer state (+ the step)
    params_bytes: int
    batch_bytes: int  # this device's rows of one batch
    argument_bytes: int | None
    output_bytes: int | None
    alias_bytes: int | None
    temp_bytes: int | None
    generated_code_bytes: int | None
    flops: float | None

    @property
    def peak_estimate_bytes(self) -> int | None:
        """Arguments + outputs + temporaries - donated (aliased) buffers counted twice."""
        parts = (self.argument_bytes, self.output_bytes, self.temp_bytes)
        if any(p is None for p in parts):
            return None
        return sum(parts) - (self.alias_bytes or 0)

    def format(self) -> str:
        lines = [
            f"mesh {self.mesh} on {self.platform}: {self.num_params:,} params",
            "per device:",
            f"  state (params + optimizer state) {_mib(self.state_bytes)}"
            f"  (params {_mib(self.params_bytes)})",
            f"  batch                            {_mib(self.batch_bytes)}",
            f"  compiled step: arguments         {_mib(self.argument_bytes)}",
            f"                 outputs           {_mib(self.output_bytes)}",
            f"                 aliased (donated) {_mib(self.alias_bytes)}",
            f"                 temporaries       {_mib(self.temp_bytes)}",
            f"                 generated code    {_mib(self.generated_code_bytes)}",
            f"                 peak estimate     {_mib(self.peak_estimate_bytes)}",
            "  FLOPs per step  "
            + ("not reported by XLA" if self.flops is None else f"{self.flops:.4g}"),
        ]
        return "\n".join(lines)


def _mib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:10.3f} MiB ({n:,} B)"


def per_device_bytes(tree) -> int:
    """Bytes of one device's shards of `tree` (ShapeDtypeStructs or arrays with shardings).

    The largest shard is counted for each leaf, so uneven splits are not under-reported.
    """
    total = 0
    for leaf in jax.tree.leaves(tree):
        shape = tuple(leaf.shape)
        sharding = getattr(leaf, "sharding", None)
        if sharding is not None:
            shape = sharding.shard_shape(shape)
        total += math.prod(shape) * np.dtype(leaf.dtype).itemsize
    return total


def _stat(stats, name: str) -> int | None:
    value = getattr(stats, name, None)
    return None if value is None else int(value)


def _flops(compiled) -> float | None:
    try:
        cost = compiled.cost_analysis()
    except Exception:  # some backends do not implement it; the memory report still stands
        return None
    if isinstance(cost, list | tuple):  # older jax returned one dict per program
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    flops = float(cost["flops"])
    return flops if flops >= 0 else None


def compile_report(
    config: ml_collections.ConfigDict, mesh_sizes: dict[str, int], devices=None
) -> CompileReport:
    """Compiles `config`'s training step for a mesh of `mesh_sizes`; reports one device's memory.

    Args:
      config: an experiment config (its `mesh` block is replaced by `mesh_sizes`).
      mesh_sizes: e.g. {"data": 4, "fsdp": 2}; the mesh uses the first prod(sizes) devices.
      devices: the devices to lay the mesh over (default `jax.devices()`), e.g. the
        compile-only devices of a TPU topology.

    Returns:
      A CompileReport; nothing is allocated on any device.
    """
    from experiments import sharding, train

    devices = list(jax.devices() if devices is None else devices)
    sizes = {name: int(mesh_sizes.get(name, 1)) for name in sharding.AXES}
    unknown = set(mesh_sizes) - set(sharding.AXES)
    if unknown:
        raise ValueError(f"mesh: unknown axes {sorted(unknown)}; the axes are {sharding.AXES}")
    if any(s < 1 for s in sizes.values()):
        raise ValueError(f"mesh: every size must be >= 1 here, got {sizes}")
    needed = math.prod(sizes.values())
    if needed > len(devices):
        raise ValueError(
            f"mesh {sizes} needs {needed} devices, there are {len(devices)} "
            "(pass --devices, or set XLA_FLAGS before jax is imported)"
        )
    config = ml_collections.ConfigDict(config.to_dict())  # unlocked copy; the caller's is kept
    config.mesh = ml_collections.ConfigDict(sizes)
    program = train.build(config, devices[:needed])
    abstract_batch = program.abstract_batch()
    lowered = program.step_fn.lower(program.abstract_state, abstract_batch)
    compiled = lowered.compile()
    stats = compiled.memory_analysis()
    abstract_params = program.abstract_state["params"]
    return CompileReport(
        mesh=dict(program.mesh.shape),
        platform=devices[0].platform,
        num_params=sum(math.prod(x.shape) for x in jax.tree.leaves(abstract_params)),
        state_bytes=per_device_bytes(program.abstract_state),
        params_bytes=per_device_bytes(program.abstract_state["params"]),
        batch_bytes=per_device_bytes(abstract_batch),
        argument_bytes=_stat(stats, "argument_size_in_bytes"),
        output_bytes=_stat(stats, "output_size_in_bytes"),
        alias_bytes=_stat(stats, "alias_size_in_bytes"),
        temp_bytes=_stat(stats, "temp_size_in_bytes"),
        generated_code_bytes=_stat(stats, "generated_code_size_in_bytes"),
        flops=_flops(compiled),
    )


def topology_devices(name: str):
    """Compile-only devices of the TPU slice `name` (e.g. 'v5e:2x4'); needs libtpu."""
    from jax.experimental import topologies

    try:
        return topologies.get_topology_desc(name, "tpu").devices
    except RuntimeError as e:
        raise RuntimeError(
            f"cannot build TPU topology {name!r}: {e}\nCompiling for a named TPU topology "
            "needs libtpu (pip install -e '.[tpu]'); without it, leave out --topology to "
            "compile on simulated CPU devices."
        ) from e


def main(argv: list[str]) -> None:
    from absl import app, flags
    from ml_collections import config_flags

    config_flag = config_flags.DEFINE_config_file(
        "config", None, "an experiment config file", lock_config=True
    )
    mesh_flag = flags.DEFINE_string("mesh", None, "the target mesh, e.g. data:4,fsdp:2")
    flags.DEFINE_integer(
        "devices", None, "simulated CPU devices (default: the mesh's size); read before jax"
    )
    topology_flag = flags.DEFINE_string(
        "topology", None, "compile for this TPU slice instead, e.g. v5e:2x4 (needs libtpu)"
    )
    flags.mark_flags_as_required(["config", "mesh"])

    def run(args):
        if len(args) > 1:
            raise app.UsageError(f"unexpected arguments: {args[1:]}")
        devices = None
        if topology_flag.value:
            try:
                devices = topology_devices(topology_flag.value)
            except RuntimeError as e:
                sys.exit(f"experiments.aot: {e}")
        report = compile_report(config_flag.value, parse_mesh(mesh_flag.value), devices)
        available = devices if devices is not None else jax.devices()
        print(f"{len(available)} {available[0].platform} devices available")
        print(report.format())

    app.run(run, argv)


if __name__ == "__main__":
    main(sys.argv)
