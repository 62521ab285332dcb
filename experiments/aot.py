"""Ahead-of-time compile check: will a config's training step fit the target mesh?

    python -m experiments.aot --config=experiments/configs/lm.py --mesh=data:4,fsdp:2 \
        [--devices=8] [--topology=v5e:2x4] [--hbm_gib=16] [--headroom=0.1] \
        [--config.key=value ...]

Builds the real training program of `--config` (`experiments.train.build`) on a mesh of the
requested shape, lowers and compiles its step from abstract sharded inputs (no array is ever
allocated), and prints, per device: the bytes of the state that the FSDP shardings place there,
XLA's memory analysis of the compiled step (arguments, outputs, temporaries, generated code)
and, where XLA gives one, its FLOP estimate. Run it on a laptop before renting a pod.

Does it fit? The step needs its peak estimate plus its generated code on each device. When the
device's memory is known (TPU topologies and GPUs from `experiments.devices`; anywhere with
`--hbm_gib`), the command says whether that need stays below the HBM less `--headroom` (a share
kept free for the runtime and fragmentation; default 10%), with the margin. When it does not,
it suggests what to change, each with an estimate from this compile's numbers (recompile with the
suggested flags to check): FSDP over every device (the state split more ways), a stronger
rematerialisation policy (`--config.workload.remat`), or microbatching
(`--config.microbatches=K`: the training loop's gradient accumulation, which divides the
activation memory by about K and adds one gradient buffer).

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
bytes that the shardings give. Without libtpu jax raises "JAX TPU support not
installed; cannot generate TPU topology", and this command says so. v4 and v5p names
(`v4:2x2x1` is a v4-8) are compiled in megacore mode, one device per chip, as a TPU VM runs
them (`chip_config_name="megacore"` with 2x2x1 chips per host).
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
    device_kind: str
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

    @property
    def need_bytes(self) -> int | None:
        """What one device must hold: the peak estimate plus the generated code."""
        peak = self.peak_estimate_bytes
        return None if peak is None else peak + (self.generated_code_bytes or 0)

    def format(self) -> str:
        lines = [
            f"mesh {self.mesh} on {self.platform} ({self.device_kind}): {self.num_params:,} params",
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
        device_kind=getattr(devices[0], "device_kind", devices[0].platform),
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


@dataclasses.dataclass(frozen=True)
class Fit:
    """Whether a compiled step fits one device's memory, and what to change when it does not."""

    need_bytes: int
    hbm_bytes: int
    headroom: float
    suggestions: tuple[str, ...] = ()

    @property
    def budget_bytes(self) -> int:
        return int(self.hbm_bytes * (1 - self.headroom))

    @property
    def margin_bytes(self) -> int:
        """Budget left over (negative: how far over it the step is)."""
        return self.budget_bytes - self.need_bytes

    @property
    def fits(self) -> bool:
        return self.margin_bytes >= 0

    def format(self) -> str:
        head = (
            f"HBM {_gib(self.hbm_bytes)} per device, {self.headroom:.0%} kept free: budget "
            f"{_gib(self.budget_bytes)}; the step needs {_gib(self.need_bytes)}"
        )
        if self.fits:
            share = self.margin_bytes / self.hbm_bytes
            return f"{head}\nFITS with a margin of {_gib(self.margin_bytes)} ({share:.0%} of HBM)"
        lines = [head, f"DOES NOT FIT: over the budget by {_gib(-self.margin_bytes)}"]
        if self.suggestions:
            lines.append(
                "suggestions (estimates from this compile; rerun with the flags to check):"
            )
            lines.extend(f"  - {s}" for s in self.suggestions)
        return "\n".join(lines)


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def check_fit(
    report: CompileReport,
    config: ml_collections.ConfigDict,
    hbm_bytes: int,
    headroom: float = 0.1,
    num_devices: int | None = None,
) -> Fit:
    """Compares the step's per-device need with `hbm_bytes` less `headroom`; suggests fixes.

    Args:
      report: the compile of `config`'s step.
      config: the experiment config that was compiled (its workload's batch and remat).
      hbm_bytes: memory of one device.
      headroom: share of `hbm_bytes` kept free, in [0, 1).
      num_devices: devices available for the mesh (default: the compiled mesh's).
    """
    if not 0 <= headroom < 1:
        raise ValueError(f"--headroom must be in [0, 1), got {headroom}")
    if report.need_bytes is None:
        raise ValueError("XLA gave no memory analysis for this compile; cannot check the fit")
    fit = Fit(report.need_bytes, int(hbm_bytes), headroom)
    if fit.fits:
        return fit
    budget, need = fit.budget_bytes, fit.need_bytes
    mesh_devices = math.prod(report.mesh.values())
    num_devices = num_devices or mesh_devices
    suggestions = []

    fsdp = report.mesh.get("fsdp", 1)
    if fsdp < num_devices:
        # Split leaves shrink by fsdp / num_devices; small replicated leaves do not (a slight
        # overestimate of the saving).
        state = report.state_bytes * fsdp / num_devices
        estimate = need - report.state_bytes + state
        verdict = "fits" if estimate <= budget else "still over"
        suggestions.append(
            f"FSDP over all {num_devices} devices, --mesh=data:1,fsdp:{num_devices}: state "
            f"{_gib(report.state_bytes)} -> ~{_gib(state)} per device, need ~{_gib(estimate)} "
            f"({verdict})"
        )

    workload = config.workload
    stronger = {"none": "dots", "dots": "block"}.get(workload.get("remat", ""))
    if stronger:
        suggestions.append(
            f"rematerialise more, --config.workload.remat={stronger}: activations are "
            f"recomputed in the backward pass instead of kept (temporaries now "
            f"{_gib(report.temp_bytes or 0)})"
        )

    temps = report.temp_bytes or 0
    already = int(config.get("microbatches", 1) or 1)
    per_device = max(1, workload.batch_size // (mesh_devices * already))  # rows per microbatch
    # A gradient accumulator (one params' worth per device) comes with the first split.
    accumulator = report.params_bytes if already == 1 else 0
    k = 2
    while k <= per_device:
        if per_device % k == 0:
            # Activations scale with the rows of one microbatch.
            estimate = need - temps + temps / k + accumulator
            if estimate <= budget:
                suggestions.append(
                    f"microbatch, --config.microbatches={already * k} ({per_device // k} rows "
                    f"per device each): need ~{_gib(estimate)} (fits; same global batch and "
                    "result)"
                )
                break
        k *= 2
    else:
        suggestions.append(
            f"even {per_device * already} microbatches of one row per device would not fit: use "
            "a larger slice, a smaller --config.workload.batch_size or a shorter context"
        )
    return dataclasses.replace(fit, suggestions=tuple(suggestions))


# Generations that TPU VMs run in megacore mode: one jax device per chip.
_MEGACORE = ("v4", "v5p")


def topology_devices(name: str):
    """Compile-only devices of the TPU slice `name` (e.g. 'v5e:2x4', 'v4:2x2x1'); needs libtpu."""
    from jax.experimental import topologies

    kwargs = {}
    if name.split(":")[0] in _MEGACORE:
        kwargs = dict(chip_config_name="megacore", chips_per_host_bounds=(2, 2, 1), num_slices=1)
    try:
        return topologies.get_topology_desc(name, "tpu", **kwargs).devices
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
    hbm_flag = flags.DEFINE_float(
        "hbm_gib", None, "memory per device in GiB (default: from the device kind, if known)"
    )
    headroom_flag = flags.DEFINE_float(
        "headroom", 0.1, "share of each device's memory kept free when checking the fit"
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
        from experiments import devices as devices_lib

        hbm = hbm_flag.value * 2**30 if hbm_flag.value else None
        if hbm is None:
            spec = devices_lib.spec(available[0])
            hbm = spec.hbm_bytes if spec is not None else None
        if hbm is None:
            print(f"fit: memory of a {report.device_kind} device unknown; pass --hbm_gib")
        else:
            fit = check_fit(report, config_flag.value, hbm, headroom_flag.value, len(available))
            print(fit.format())

    app.run(run, argv)


if __name__ == "__main__":
    main(sys.argv)
