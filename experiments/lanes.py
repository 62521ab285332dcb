"""Lanes: many configs that differ only in per-lane values, trained as one program.

A separate module so that `experiments/train.py` stays one loop: `train.build(config,
lanes=...)` takes from here only what the lane path needs (which keys a lane may change, the
lane mesh and shardings, the optimizer whose swept hyperparameters live in its state, the
lane-stacked batches and the lane directories); the step itself is train.py's per-run step
under `jax.vmap`.

A lane is a dict of dotted config overrides. The keys a lane may change without changing the
program (`LANE_KEYS`):

* `seed` (parameter initialisation) and `workload.seed` (data order): each lane gets its own
  init key and its own batches (`workload.batch(step)` of its seed, stacked on a lane axis);
* `optimizer.kwargs.X` and `schedule.kwargs.X` with numeric values: they become arrays in the
  optimizer state through `optax.inject_hyperparams`, around a factory that builds the lane's
  schedule (array-valued peaks, floors, ...) and optimizer from them. A kwarg that cannot be
  traced (a step count that sets a schedule's phases, a flag) is refused, naming the key and
  why (`blockers`).

Everything else (the optimizer's or schedule's name, workload shapes, steps, mesh) changes the
program: such sweeps run as separate processes (`experiments.sweep --mode=processes`).

Sharding: the lane mesh splits the config mesh's `data` axis into (`lanes`, `data`) with
`lanes` = gcd(number of lanes, data size): params and optimizer state get the lane axis split
over `lanes` (and each lane's leaves the FSDP rule over `fsdp`), batches [lane, example, ...]
are split over `lanes` and then (`data`, `fsdp`). With as many lanes as devices each device
trains whole lanes and the step has no collectives; with fewer, each lane is data-parallel
over the devices its group holds.

A lanes run directory holds `lanes.json` (the lane names and overrides, in state order; a
resumption must match it), `checkpoints/` of the stacked state, and one run directory per
lane, `lanes/<name>/`, with that lane's `config.json` and `metrics.jsonl` (and `lineage.json`
when the run forked from another lanes run), so `experiments.report` reads each lane as a run.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import math
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from experiments import rundir, sharding

AXIS = "lanes"
LANES_FILE = "lanes.json"
LANES_DIR = "lanes"
SEED_KEYS = ("seed", "workload.seed")
KWARG_BLOCKS = ("optimizer", "schedule")
# vmap axes of the state: one step counter for all lanes, everything else per lane.
STATE_AXES = {"step": None, "params": 0, "opt_state": 0}


def kwarg_key(key: str) -> tuple[str, str] | None:
    """(block, name) for `optimizer.kwargs.NAME` / `schedule.kwargs.NAME`, else None."""
    parts = key.split(".")
    if len(parts) == 3 and parts[0] in KWARG_BLOCKS and parts[1] == "kwargs":
        return parts[0], parts[2]
    return None


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Mapping[str, Any]
) -> ml_collections.ConfigDict:
    """A copy of `config` with each dotted key set; kwargs may be new keys.

    Raises:
      ValueError: a key that does not exist, or a value the key's type refuses (naming both).
    """
    config = copy.deepcopy(config)
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = config
        try:
            for name in parents:
                node = node[name]
        except (KeyError, AttributeError):
            raise ValueError(f"config has no key {key!r}") from None
        if not isinstance(node, ml_collections.ConfigDict):
            raise ValueError(f"config has no key {key!r}")
        if leaf not in node and kwarg_key(key) is None:
            raise ValueError(f"config has no key {key!r}")
        try:
            with node.unlocked():
                node[leaf] = value
        except TypeError:
            old = node[leaf]
            raise ValueError(
                f"{key}={value!r} does not parse as {type(old).__name__}, the type of {key} "
                f"(the config's value is {old!r})"
            ) from None
    return config


def blockers(
    config: ml_collections.ConfigDict,
    values: Mapping[str, list],
    abstract_params: Any = None,
) -> dict[str, str]:
    """{key: why} for every key in `values` ({dotted key: its lanes' values}) that keeps the
    lanes from sharing one program; empty when they can.

    `abstract_params` (the workload's params as ShapeDtypeStructs) lets numeric kwargs be
    checked by tracing the lane optimizer with that key as an array; without it they are
    assumed traceable.
    """
    out = {}
    traced = []
    for key, vals in values.items():
        if key in SEED_KEYS:
            continue
        if key in ("optimizer.name", "schedule.name"):
            out[key] = f"it changes the {key.split('.')[0]}"
        elif kwarg_key(key) is None:
            out[key] = "it is not an optimizer or schedule hyperparameter or a seed"
            if key.startswith("workload.") or key in ("steps", "microbatches"):
                out[key] = "it changes shapes or the length of the run"
            elif key.startswith("mesh."):
                out[key] = "it changes the mesh"
        elif not all(_is_number(v) for v in vals):
            odd = next(v for v in vals if not _is_number(v))
            out[key] = f"it takes a non-numeric value ({odd!r})"
        else:
            traced.append(key)
    if abstract_params is not None and traced:
        entry = _entry(config)
        for key in traced:
            reason = _trace_failure(config, entry, abstract_params, key, values[key][0])
            if reason:
                out[key] = f"it cannot be an array in one program ({reason})"
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def _entry(config):
    import optlib.registry

    return optlib.registry.get(config.optimizer.name)


def _ident(key: str) -> str:
    block, name = kwarg_key(key)
    return f"{block}_{name}"


def _injected(config, entry, keys: tuple[str, ...], build_schedule: Callable) -> Callable:
    """`optax.inject_hyperparams` around a factory of the lane's schedule and optimizer.

    The factory takes the swept kwargs (named `<block>_<name>`) and builds the schedule from
    the config's schedule kwargs with the swept ones replaced, then the optimizer from its
    kwargs likewise; inject_hyperparams keeps the swept values as arrays in the state, so one
    traced update serves every lane.
    """

    def factory(**swept):
        kwargs = {b: dict(config[b].kwargs.to_dict()) for b in KWARG_BLOCKS}
        for key in keys:
            block, name = kwarg_key(key)
            kwargs[block][name] = swept[_ident(key)]
        return entry.build(build_schedule(kwargs["schedule"]), **kwargs["optimizer"])

    factory.__signature__ = inspect.Signature(
        [inspect.Parameter(_ident(k), inspect.Parameter.KEYWORD_ONLY) for k in keys]
    )
    return optax.inject_hyperparams(factory)


def _trace_failure(config, entry, abstract_params, key: str, example) -> str | None:
    """Why the lane optimizer cannot take `key` as a traced value, or None if it can."""
    from experiments import train

    build_schedule = lambda kwargs: train.build_schedule(config, kwargs)
    inject = _injected(config, entry, (key,), build_schedule)

    def run(params, value):
        opt = inject(**{_ident(key): value})
        state = opt.init(params)
        extra = entry.update_kwargs(loss=jnp.zeros(()), grad_fn=lambda p: p)
        return opt.update(params, state, params, **extra)

    value = jax.ShapeDtypeStruct((), np.asarray(example).dtype)
    try:
        jax.eval_shape(run, abstract_params, value)
    except Exception as err:  # whatever stops the trace is the reason
        text = str(err).strip().splitlines()
        return f"{type(err).__name__}: {text[0] if text else ''}"[:300]
    return None


@dataclasses.dataclass(frozen=True)
class LaneSet:
    """The lanes of one program: names, per-lane configs, seeds and swept hyperparameters."""

    names: tuple[str, ...]
    overrides: tuple[dict, ...]
    configs: tuple[ml_collections.ConfigDict, ...]
    keys: tuple[str, ...]  # the swept optimizer/schedule kwargs, dotted
    hyperparams: dict  # {ident: np.ndarray [L]}

    @classmethod
    def of(cls, config, lanes: Mapping[str, Mapping[str, Any]], abstract_params=None) -> LaneSet:
        """Checks `lanes` ({name: overrides}) against `config`; ValueError naming the lane."""
        if not lanes:
            raise ValueError("lanes: at least one lane is needed")
        names = tuple(lanes)
        for name in names:
            if not name or "/" in name or name in (".", ".."):
                raise ValueError(f"lane name {name!r} cannot name a directory")
        if config.init_params_from:
            raise ValueError(
                "init_params_from cannot start lanes (their state is stacked); use --mode=processes"
            )
        overrides = tuple(dict(lanes[n]) for n in names)
        values: dict[str, list] = {}
        for o in overrides:
            for key, value in o.items():
                values.setdefault(key, []).append(value)
        problems = blockers(config, values, abstract_params)
        if problems:
            key, why = next(iter(problems.items()))
            raise ValueError(f"lanes: {key} forces --mode=processes: {why}")
        configs = []
        for name, o in zip(names, overrides, strict=True):
            try:
                configs.append(apply_overrides(config, o))
            except ValueError as e:
                raise ValueError(f"lane {name}: {e}") from None
        keys = tuple(sorted(k for k in values if kwarg_key(k)))
        hyperparams = {}
        for key in keys:
            block, kwarg = kwarg_key(key)
            column = []
            for name, c in zip(names, configs, strict=True):
                if kwarg not in c[block].kwargs:
                    raise ValueError(
                        f"lane {name} does not set {key}, which other lanes set and the "
                        "config does not"
                    )
                column.append(c[block].kwargs[kwarg])
            array = np.asarray(column)
            hyperparams[_ident(key)] = array.astype(
                np.float32 if array.dtype.kind == "f" else np.int32
            )
        return cls(names, overrides, tuple(configs), keys, hyperparams)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def seeds(self) -> np.ndarray:
        return np.array([c.seed for c in self.configs], np.int64)

    @property
    def data_seeds(self) -> np.ndarray:
        return np.array([c.workload.seed for c in self.configs], np.int64)

    def check_each(self, build_one: Callable[[ml_collections.ConfigDict], Any]) -> None:
        """Builds every lane's schedule and optimizer concretely: bad values fail here."""
        for name, c in zip(self.names, self.configs, strict=True):
            try:
                build_one(c)
            except ValueError as e:
                raise ValueError(f"lane {name}: {e}") from None

    def optimizer(self, config, entry, build_schedule: Callable) -> Callable:
        """`hyperparams -> GradientTransformation` whose state holds them (inject_hyperparams).

        Call it with one lane's values (arrays or tracers, by ident) to initialise that
        lane's state; its `update` reads the values from the state, so any lane's values
        serve for the update of every lane.
        """
        return lambda hyperparams: _injected(config, entry, self.keys, build_schedule)(
            **hyperparams
        )

    def schedule(self, config, hyperparams: dict, build_schedule: Callable) -> Callable:
        """One lane's schedule from its (traced) hyperparams, for the learning rate logged."""
        kwargs = config.schedule.kwargs.to_dict()
        for key in self.keys:
            block, name = kwarg_key(key)
            if block == "schedule":
                kwargs[name] = hyperparams[_ident(key)]
        return build_schedule(kwargs)

    # Sharding -------------------------------------------------------------------------------

    def mesh(self, mesh: jax.sharding.Mesh) -> jax.sharding.Mesh:
        """The config mesh with its `data` axis split into (`lanes`, `data`)."""
        data, fsdp = mesh.shape["data"], mesh.shape["fsdp"]
        group = math.gcd(len(self), data)
        devices = np.asarray(mesh.devices).reshape(group, data // group, fsdp)
        auto = jax.sharding.AxisType.Auto
        return jax.sharding.Mesh(devices, (AXIS, *sharding.AXES), axis_types=(auto,) * 3)

    @staticmethod
    def state_shardings(per_lane_abstract: dict, mesh) -> dict:
        """The FSDP rule on one lane's leaves, with the lane axis in front split over `lanes`."""
        per_lane = sharding.tree_shardings(per_lane_abstract, mesh)
        stacked = jax.tree.map(lambda s: NamedSharding(mesh, P(AXIS, *s.spec)), per_lane)
        return {**stacked, "step": sharding.replicated(mesh)}

    @staticmethod
    def batch_sharding(mesh) -> NamedSharding:
        return NamedSharding(mesh, P(AXIS, sharding.BATCH_AXES))

    # Data -----------------------------------------------------------------------------------

    def host_batches(self, make_workload: Callable) -> Callable[[int], dict]:
        """`step -> batch` stacked over lanes, each lane's rows from its own data seed."""
        by_seed = {}
        for c in self.configs:
            if c.workload.seed not in by_seed:
                by_seed[c.workload.seed] = make_workload(c.workload)
        first = next(iter(by_seed.values()))
        for seed, w in by_seed.items():
            same = jax.tree.map(np.array_equal, first.eval_batch(), w.eval_batch())
            if not all(jax.tree.leaves(same)):
                raise ValueError(
                    f"workload.seed={seed} changes the eval set of {w.name!r}, so its lanes "
                    "cannot share one program; use --mode=processes"
                )
        order = [c.workload.seed for c in self.configs]

        def host_batch(step: int) -> dict:
            batches = {seed: w.batch(step) for seed, w in by_seed.items()}
            return jax.tree.map(lambda *xs: np.stack(xs), *[batches[s] for s in order])

        return host_batch

    def init_inputs(self) -> tuple[jax.Array, dict]:
        """Per lane: the init key of its `seed`, and its hyperparameters."""
        keys = jnp.stack([jax.random.PRNGKey(int(s)) for s in self.seeds])
        return keys, {k: jnp.asarray(v) for k, v in self.hyperparams.items()}

    # Directories ----------------------------------------------------------------------------

    def record(self) -> dict:
        pairs = zip(self.names, self.overrides, strict=True)
        return {"lanes": [{"name": n, "overrides": o} for n, o in pairs]}

    def check_workdir(self, workdir: pathlib.Path, fork_parent: str = "") -> None:
        """A resumed lanes run, and the lanes run a new one forks, must hold these lanes in
        this order (their state holds each lane's hyperparameters)."""
        mine = json.loads(json.dumps(self.record()))
        own = pathlib.Path(workdir) / LANES_FILE
        if own.exists():
            self._compare(json.loads(own.read_text()), mine, workdir, "resumes")
        elif fork_parent:
            parent = pathlib.Path(fork_parent) / LANES_FILE
            if not parent.exists():
                raise ValueError(f"fork.parent {fork_parent} is not a lanes run (no {LANES_FILE})")
            self._compare(json.loads(parent.read_text()), mine, fork_parent, "forks")

    def _compare(self, theirs: dict, mine: dict, where, what: str) -> None:
        if theirs != mine:
            old = ", ".join(lane["name"] for lane in theirs["lanes"])
            raise ValueError(
                f"{where} holds other lanes ({old}); this run {what} it with "
                f"{', '.join(self.names)}. Use a new workdir."
            )

    def write_dirs(self, workdir: pathlib.Path, origin: dict) -> list[pathlib.Path]:
        """lanes.json and each lane's directory with its config (and lineage for a fork)."""
        workdir = pathlib.Path(workdir)
        (workdir / LANES_FILE).write_text(json.dumps(self.record(), indent=2) + "\n")
        dirs = self.dirs(workdir)
        for name, d, c in zip(self.names, dirs, self.configs, strict=True):
            d.mkdir(parents=True, exist_ok=True)
            rundir.write_config(d, c)
            if origin["kind"] == "fork":
                parent = pathlib.Path(origin["parent"]) / LANES_DIR / name
                record = {"parent": str(parent), "step": origin["step"], "lanes_run": True}
                (d / "lineage.json").write_text(json.dumps(record, indent=2) + "\n")
        return dirs

    def dirs(self, workdir: pathlib.Path) -> list[pathlib.Path]:
        return [pathlib.Path(workdir) / LANES_DIR / n for n in self.names]
