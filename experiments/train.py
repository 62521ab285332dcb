"""The training loop: one file, top to bottom.

    config -> workload, mesh, optimizer (optlib.registry), schedule (schedules.registry)
           -> abstract state (jax.eval_shape) -> shardings (FSDP rule)
           -> restore (resume | fork | params only) or a jitted, sharded init
           -> jitted step (in/out shardings, state donated) -> periodic eval, logs, checkpoints

The state is a dict {"step", "params", "opt_state"}; `step` counts updates applied, so the
learning rate of the update from state step t is `schedule(t)` and a state restored at step k
continues exactly where its run was. Data of step t is `workload.batch(t)`, so a resumed or
forked run sees the same examples it would have seen without interruption.

The optimizer is driven only through its registry entry: `entry.update_kwargs` supplies the
extra arguments its update takes (MoMo's loss, SAM's gradient function) and
`entry.eval_params` the params to evaluate (schedule-free's x, an iterate average).

Measurements of the training dynamics (`experiments.probes`) are switched on in
`config.probes`: the gradient noise scale from the pieces a step already has (microbatches,
or each `data` shard's gradient), per-layer update/param norm ratios, and the sharpness every
`sharpness_every` steps on a fixed batch. Everything is off by default, and when off the step
and the state are what they were without probes.

A run directory holds `config.json` (`experiments.rundir`), `metrics.jsonl` and TensorBoard
events (`experiments.metrics`), `checkpoints/` and, for forks, `lineage.json`
(`experiments.checkpointing`).

Lanes: `build(config, lanes={name: overrides})` makes the same step for many lanes at once
(`experiments.lanes`): the per-run step under `jax.vmap` over a leading lane axis of params and
optimizer state, each lane with its own seed, data order and swept hyperparameters (held in
the optimizer state by `optax.inject_hyperparams`). `train(config, workdir, lanes=...)` runs
that program in this same loop; each lane gets its own metrics stream under
`<workdir>/lanes/<name>/`, one checkpoint holds every lane's state, and a lane whose loss
stops being finite is reported and left to run (the others go on; all of them non-finite
stops the run as a single run stops).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import optlib.registry
import schedules
import schedules.registry
from experiments import checkpointing, metrics, probes, rundir, sharding, workloads
from experiments import lanes as lanes_lib


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the step."""


class Interrupted(KeyboardInterrupt):
    """Training was interrupted (Ctrl-C); the message says where and how to resume."""


def build_schedule(config: ml_collections.ConfigDict, kwargs: dict | None = None):
    """`config.schedule`, built with the run's `steps` where it takes a total, then branched.

    `kwargs` replaces `config.schedule.kwargs` (a lane's, whose swept values may be traced).
    A bad name or argument is a ValueError that names the config keys to change.
    """
    name = config.schedule.name
    kwargs = config.schedule.kwargs.to_dict() if kwargs is None else dict(kwargs)
    schedules.registry.check_kwargs(name, kwargs)
    try:
        base = schedules.registry.build(name, total_steps=config.steps, **kwargs)
    except ValueError as e:
        total = ""
        if schedules.registry.takes_total_steps(name) and "total_steps" not in kwargs:
            total = f" (its total_steps is config.steps = {config.steps})"
        raise ValueError(f"config.schedule{total}: {e}") from e
    branch = config.schedule.branch
    if branch.at_step < 0:
        return base
    return schedules.branch(
        base,
        at_step=branch.at_step,
        decay_steps=branch.decay_steps,
        shape=branch.shape,
        end_value=branch.end_value,
    )


@dataclasses.dataclass(frozen=True)
class ProbeSettings:
    """`config.probes`, checked: what the loop measures besides loss and norms.

    Attributes:
      noise_source: "microbatches" or "data" (`probes.noise_scale_source`), None when the
        noise scale is off.
      small_batch: examples behind each small-batch gradient of the noise scale.
      decay: the EMA decay of the noise-scale terms.
      sharpness_every: steps between sharpness measurements (0: never).
      sharpness_iterations: power iterations per measurement.
      sharpness_batch_size: examples of the fixed sharpness batch.
      layer_ratios: whether per-layer update/param norm ratios are logged.
    """

    noise_source: str | None = None
    small_batch: int = 0
    decay: float = 0.99
    sharpness_every: int = 0
    sharpness_iterations: int = 20
    sharpness_batch_size: int = 0
    layer_ratios: bool = False


def check_probes(config: ml_collections.ConfigDict, batch_size: int, mesh) -> ProbeSettings:
    """`config.probes` as `ProbeSettings`; a bad value is a ValueError naming its key.

    Asking for the noise scale with neither microbatches nor more than one `data` shard is an
    error that says how to get one (`probes.noise_scale_source`).
    """
    block = config.probes

    def flag(key):
        value = block[key]
        if not isinstance(value, bool):
            raise ValueError(f"config.probes.{key} must be True or False, got {value!r}")
        return value

    def integer(key, low):
        value = block[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"config.probes.{key} must be an int >= {low}, got {value!r}")
        return value

    decay = block.noise_scale_decay
    if isinstance(decay, bool) or not isinstance(decay, int | float) or not 0 <= decay < 1:
        raise ValueError(f"config.probes.noise_scale_decay must be in [0, 1), got {decay!r}")
    settings = ProbeSettings(
        decay=float(decay),
        sharpness_every=integer("sharpness_every", 0),
        sharpness_iterations=integer("sharpness_iterations", 1),
        sharpness_batch_size=integer("sharpness_batch_size", 0),
        layer_ratios=flag("layer_ratios"),
    )
    if settings.sharpness_every:
        size = settings.sharpness_batch_size or batch_size // config.microbatches
        shards = math.prod(mesh.shape[a] for a in sharding.BATCH_AXES)
        if size % shards:
            raise ValueError(
                f"config.probes.sharpness_batch_size={size} must be divisible by the {shards} "
                f"devices of the mesh axes {sharding.BATCH_AXES} (0 means the microbatch size, "
                f"batch_size / microbatches = {batch_size // config.microbatches})"
            )
        settings = dataclasses.replace(settings, sharpness_batch_size=size)
    if flag("noise_scale"):
        source, small = probes.noise_scale_source(
            batch_size, config.microbatches, mesh.shape["data"]
        )
        settings = dataclasses.replace(settings, noise_source=source, small_batch=small)
    return settings


@dataclasses.dataclass(frozen=True)
class Program:
    """Everything compiled for one config on one mesh, before any array exists.

    `abstract_state` holds ShapeDtypeStructs that carry the state's shardings, so the step
    can be lowered and compiled ahead of time (`experiments.aot`) and checkpoints restored
    straight into place. A lanes program (`lanes` set) stacks every lane on a leading axis of
    params, optimizer state, batches, metrics and eval metrics.
    """

    workload: workloads.Workload
    mesh: jax.sharding.Mesh
    entry: optlib.registry.OptimizerEntry
    schedule: Any
    abstract_state: dict
    state_shardings: dict
    batch_sharding: jax.sharding.NamedSharding
    init: Any  # init(params or None) -> a sharded state
    step_fn: Any  # jitted (state, batch) -> (state, metrics); donates the state
    eval_fn: Any  # jitted (state, eval_batch) -> metrics, at the optimizer's eval params
    host_batch: Any = None  # step -> host batch (default: the workload's)
    lanes: lanes_lib.LaneSet | None = None
    probes: ProbeSettings = ProbeSettings()
    # The probes' own state (the noise-scale EMAs), when there is one: not checkpointed, so a
    # resumed or forked run starts it afresh (the averages are bias-corrected).
    init_probes: Any = None  # () -> {"noise_scale": NoiseScaleState} with its shardings
    sharpness_fn: Any = None  # jitted (state, batch) -> metrics, when sharpness_every > 0

    def batch(self, step: int) -> dict:
        """The training batch of `step`, placed on the mesh (each process reads its own rows)."""
        if self.host_batch is None:
            return sharding.shard_step_batch(self.workload, step, self.mesh)
        return sharding.place(self.host_batch(step), self.batch_sharding)

    def xla_flops_per_step(self) -> float | None:
        """FLOPs of one step by XLA's cost analysis, summed over the devices (None if XLA
        gives none). Cheap once the step has run: lowering hits jax's compilation cache."""
        compiled = self.step_fn.lower(self.abstract_state, self.abstract_batch()).compile()
        analysis = compiled.cost_analysis()
        if isinstance(analysis, list | tuple):
            analysis = analysis[0] if analysis else {}
        flops = (analysis or {}).get("flops")
        return None if flops is None or flops < 0 else float(flops) * self.mesh.devices.size

    def abstract_batch(self) -> dict:
        host = self.workload.batch(0) if self.host_batch is None else self.host_batch(0)
        return jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=self.batch_sharding), host
        )

    def sharpness_batch(self) -> dict:
        """The fixed batch of the sharpness (host numpy): the first examples of the training
        batches of steps 0, 1, ..., as many as `probes.sharpness_batch_size`."""
        size, pieces, step = self.probes.sharpness_batch_size, [], 0
        while sum(len(jax.tree.leaves(p)[0]) for p in pieces) < size:
            pieces.append(self.workload.batch(step))
            step += 1
        batch = jax.tree.map(lambda *xs: np.concatenate(xs), *pieces)
        return jax.tree.map(lambda x: x[:size], batch)


def check_loop_settings(config: ml_collections.ConfigDict) -> None:
    """A ValueError naming the key when one of the loop's counts is out of range."""
    at_least = {
        "steps": 1,
        "log_every": 1,
        "eval_every": 0,  # 0: evaluate only at the end
        "microbatches": 1,
        "checkpoint.every": 0,  # 0: only the final step, the kept steps and Ctrl-C
    }
    for key, low in at_least.items():
        value = config
        for part in key.split("."):
            value = value[part]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"config.{key} must be an integer >= {low}, got {value!r}")
    keep = config.checkpoint.keep
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        raise ValueError(
            f"config.checkpoint.keep must be None (all) or an integer >= 1, got {keep!r}"
        )


@dataclasses.dataclass(frozen=True)
class _Driver:
    """How the step drives the optimizer (one of three ways, see `build`).

    `inner(opt_state)` is the registry entry's own state (inside `inject_hyperparams` when the
    rate or the lanes' hyperparameters live in the state); `lr_of(old, new, step)` is the
    rate the update from `old` to `new` applied at `step`; `optimizer_of(hyperparams)` makes a
    lane's optimizer (lanes only).
    """

    optimizer: optax.GradientTransformation
    inner: Callable
    lr_of: Callable
    lane_set: lanes_lib.LaneSet | None = None
    optimizer_of: Callable | None = None


def _driver(config, entry, schedule, workload, lanes, learning_rate_in_state) -> _Driver:
    kwargs = config.optimizer.kwargs.to_dict()
    if lanes is not None and learning_rate_in_state:
        raise ValueError("learning_rate_in_state does not combine with lanes")
    if lanes is None and not learning_rate_in_state:
        return _Driver(
            optimizer=entry.build(schedule, **kwargs),
            inner=lambda opt_state: opt_state,
            lr_of=lambda old, new, step: entry.applied_lr(new, schedule(step)),
        )
    if lanes is None:
        optimizer = optax.inject_hyperparams(
            lambda learning_rate: entry.build(learning_rate, **kwargs)
        )(learning_rate=float(schedule(0)))
        return _Driver(
            optimizer=optimizer,
            inner=lambda opt_state: opt_state.inner_state,
            # The rate this update applied, read from the state before the update.
            lr_of=lambda old, new, step: entry.applied_lr(
                new.inner_state, old.hyperparams["learning_rate"]
            ),
        )
    abstract_params = jax.eval_shape(workload.init_params, jax.random.PRNGKey(0))
    lane_set = lanes_lib.LaneSet.of(config, lanes, abstract_params)
    lane_set.check_each(lambda c: entry.build(build_schedule(c), **c.optimizer.kwargs.to_dict()))
    lane_schedule = functools.partial(build_schedule, config)
    optimizer_of = lane_set.optimizer(config, entry, lane_schedule)
    return _Driver(
        optimizer=optimizer_of(lane_set.hyperparams),  # its update reads the lane's state
        inner=lambda opt_state: opt_state.inner_state,
        lr_of=lambda old, new, step: entry.applied_lr(
            new.inner_state, lane_set.schedule(config, new.hyperparams, lane_schedule)(step)
        ),
        lane_set=lane_set,
        optimizer_of=optimizer_of,
    )


def build(
    config: ml_collections.ConfigDict,
    devices=None,
    lanes: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    learning_rate_in_state: bool = False,
) -> Program:
    """The workload, mesh, optimizer, schedule, shardings and jitted functions of `config`.

    With `lanes` ({name: dotted overrides}, see `experiments.lanes`) the program trains every
    lane at once: the same step, vmapped over a leading lane axis.

    With `learning_rate_in_state` the learning rate is not the schedule's but a value in the
    optimizer state (`optax.inject_hyperparams`, at `opt_state.hyperparams["learning_rate"]`,
    starting at the schedule's value at step 0), which a driver sets between steps without
    recompiling: how `experiments.autolrs` tries its candidate rates.
    """
    check_loop_settings(config)
    workload = workloads.make(config.workload)
    mesh = sharding.make_mesh(config.mesh.to_dict(), devices)
    entry = optlib.registry.get(config.optimizer.name)
    entry.check_kwargs(config.optimizer.kwargs)
    schedule = build_schedule(config)
    driver = _driver(config, entry, schedule, workload, lanes, learning_rate_in_state)
    lane_set = driver.lane_set
    if lane_set is not None:
        mesh = lane_set.mesh(mesh)
    sharding.check_batch_size(workload.batch_size, mesh, config.microbatches)
    settings = check_probes(config, workload.batch_size, mesh)
    if lanes is not None and settings != ProbeSettings():
        raise ValueError("config.probes: probes measure one run; switch them off for lanes")

    def init_probes():
        return {"noise_scale": probes.noise_scale_init()}

    def init_state(params, opt=driver.optimizer):
        state = {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": opt.init(params)}
        if settings.noise_source:
            state["probes"] = init_probes()
        return state

    # The state is never materialised unsharded: shapes first, then shardings from the FSDP
    # rule, then a jitted init that writes each shard where it belongs.
    if lane_set is None:
        init_fresh = lambda: init_state(workload.init_params(jax.random.PRNGKey(config.seed)))
        abstract = jax.eval_shape(init_fresh)
        state_shardings = sharding.tree_shardings(abstract, mesh)
        fresh = jax.jit(init_fresh, out_shardings=state_shardings)
        around = jax.jit(init_state, out_shardings=state_shardings)
        init = lambda params: fresh() if params is None else around(params)
        batch_sharding = sharding.batch_sharding(mesh)
    else:
        keys, hyperparams = lane_set.init_inputs()

        def init_lane(key, lane_hyperparams):
            return init_state(workload.init_params(key), driver.optimizer_of(lane_hyperparams))

        init_lanes = jax.vmap(init_lane, out_axes=lanes_lib.STATE_AXES)
        per_lane = jax.eval_shape(init_lane, keys[0], jax.tree.map(lambda x: x[0], hyperparams))
        abstract = jax.eval_shape(init_lanes, keys, hyperparams)
        state_shardings = lane_set.state_shardings(per_lane, mesh)
        fresh = jax.jit(init_lanes, out_shardings=state_shardings)
        init = lambda params: fresh(keys, hyperparams)  # LaneSet.of refuses init_params_from
        batch_sharding = lane_set.batch_sharding(mesh)
    abstract = checkpointing.abstract_with_shardings(abstract, state_shardings)

    train_step = _train_step(config, workload, entry, driver, settings)

    def eval_step(state, batch):
        params = entry.eval_params(driver.inner(state["opt_state"]), state["params"])
        return workload.eval_metrics(params, batch)

    if lane_set is not None:
        # Sharding constraints inside the step (the LM's gathered embedding table) get the
        # lane axis split over `lanes` rather than replicated.
        axes = lanes_lib.STATE_AXES
        train_step = jax.vmap(
            train_step, in_axes=(axes, 0), out_axes=(axes, 0), spmd_axis_name=lanes_lib.AXIS
        )
        eval_step = jax.vmap(eval_step, in_axes=(axes, None), spmd_axis_name=lanes_lib.AXIS)

    replicated = sharding.replicated(mesh)
    sharpness_fn = None
    if settings.sharpness_every:
        measure = _under_mesh(
            mesh, sharpness_measurement(config, workload.loss, settings, driver.lr_of)
        )
        abstract_batch = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(
                (settings.sharpness_batch_size, *x.shape[1:]), x.dtype, sharding=batch_sharding
            ),
            workload.batch(0),
        )
        # Traced once now, so a loss that is not scalar (or any other error of the
        # measurement) stops the run before it starts, not at step `sharpness_every`.
        jax.eval_shape(measure, abstract, abstract_batch)
        sharpness_fn = jax.jit(
            measure, in_shardings=(state_shardings, batch_sharding), out_shardings=replicated
        )

    return Program(
        workload=workload,
        mesh=mesh,
        entry=entry,
        schedule=schedule,
        abstract_state=abstract,
        state_shardings=state_shardings,
        batch_sharding=batch_sharding,
        init=init,
        step_fn=jax.jit(
            _under_mesh(mesh, train_step),
            in_shardings=(state_shardings, batch_sharding),
            out_shardings=(state_shardings, replicated),
            donate_argnums=0,
        ),
        eval_fn=jax.jit(eval_step, out_shardings=replicated),
        host_batch=None if lane_set is None else lane_set.host_batches(workloads.make),
        lanes=lane_set,
        probes=settings,
        init_probes=(
            jax.jit(init_probes, out_shardings=state_shardings["probes"])
            if settings.noise_source
            else None
        ),
        sharpness_fn=sharpness_fn,
    )


def _under_mesh(mesh, fn):
    """`fn` traced with the mesh visible, so workloads can constrain shardings (the LM gathers
    its FSDP-split embedding table whole at the lookup) and the probes pin microbatches and
    data shards to the devices that hold them."""

    def traced(*args):
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return fn(*args)

    return traced


def _train_step(config, workload, entry, driver: _Driver, settings: ProbeSettings):
    """`(state, batch) -> (state, metrics)` of one run (`build` vmaps it over lanes)."""
    value_and_grad = split_value_and_grad(workload.loss, config.microbatches, settings.noise_source)

    def train_step(state, batch):
        params = state["params"]
        split = value_and_grad(params, batch)
        # The whole batch's loss and gradient function, so SAM and MoMo take the same step
        # with microbatches (or data shards) as without.
        if config.microbatches > 1:
            grad_fn = lambda p: value_and_grad(p, batch).grads
        else:
            grad_fn = lambda p: jax.grad(workload.loss)(p, batch)
        extra = entry.update_kwargs(loss=split.loss, grad_fn=grad_fn)
        updates, opt_state = driver.optimizer.update(
            split.grads, state["opt_state"], params, **extra
        )
        new_params = optax.apply_updates(params, updates)
        lr = driver.lr_of(state["opt_state"], opt_state, state["step"])
        step_metrics = {
            "loss": split.loss,
            "grad_norm": optax.tree.norm(split.grads),
            "update_norm": optax.tree.norm(updates),
            "param_norm": optax.tree.norm(new_params),
            "lr": jnp.asarray(lr, jnp.float32),
        }
        new_state = {"step": state["step"] + 1, "params": new_params, "opt_state": opt_state}
        if settings.noise_source:
            g2, trace_sigma = probes.noise_scale_terms(
                split.small_sq_norm, split.big_sq_norm, settings.small_batch, workload.batch_size
            )
            noise = probes.noise_scale_update(
                state["probes"]["noise_scale"], g2, trace_sigma, settings.decay
            )
            new_state["probes"] = {"noise_scale": noise}
            step_metrics.update(probes.noise_scale_estimates(noise))
        if settings.layer_ratios:
            ratios = probes.update_param_ratios(updates, params)
            step_metrics.update({f"{RATIO_PREFIX}{k}": v for k, v in ratios.items()})
        return new_state, step_metrics

    return train_step


# Per-layer update/param norm ratios are logged as "update_ratio/<param path>".
RATIO_PREFIX = "update_ratio/"


def split_value_and_grad(loss_fn, microbatches: int, noise_source: str | None = None):
    """`(params, batch) -> probes.SplitGradients`: the whole batch's loss and mean gradient,
    plus the small-batch squared norm the noise scale needs when it has a source.

    * `microbatches > 1`: gradient accumulation (`probes.microbatch_value_and_grad`, a
      `lax.scan` over k microbatches with one gradient in memory);
    * `noise_source == "data"`: each `data` shard's gradient
      (`probes.data_parallel_value_and_grad`, the same reductions as a plain step);
    * otherwise `jax.value_and_grad` (the small-batch norms are None).
    """
    if microbatches > 1:
        return lambda p, b: probes.microbatch_value_and_grad(loss_fn, p, b, microbatches)
    if noise_source == "data":
        return lambda p, b: probes.data_parallel_value_and_grad(loss_fn, p, b)

    def plain(params, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        return probes.SplitGradients(loss, grads, None, None)

    return plain


def _adam_hyperparams(config: ml_collections.ConfigDict) -> dict:
    """b1, b2, eps as the config gives them to the optimizer (or to SAM's base optimizer)."""
    kwargs = config.optimizer.kwargs.to_dict()
    merged = {**(kwargs.get("base_kwargs") or {}), **kwargs}
    return {k: merged[k] for k in ("b1", "b2", "eps") if k in merged}


def sharpness_measurement(config, loss_fn, settings: ProbeSettings, lr_of):
    """`(state, batch) -> metrics`: the top Hessian eigenvalue next to its stability threshold.

    * `sharpness`: the top eigenvalue of the Hessian of the loss on `batch` at the trained
      params (power iteration on HVPs, `probes.top_hessian_eigenvalue`);
    * `sharpness_threshold`: the edge of stability of the lr the next update applies, 2/lr,
      or (2 + 2 beta)/lr for SGD with heavy-ball momentum beta (`probes.stability_threshold`);
      for LARS, LAMB and adaptive methods the step per direction is not lr, so this is only
      the plain-GD reference;
    * where the optimizer keeps an Adam-type second moment (`probes.find_second_moment`):
      `preconditioned_sharpness`, the top eigenvalue of P^-1 H with P from the state and the
      config's b1/b2/eps (`probes.adam_preconditioner`), and its threshold
      (2 + 2 b1)/((1 - b1) lr), 38/lr for b1 = 0.9 (Cohen et al. 2022).
    """
    hyper = _adam_hyperparams(config)
    kwargs = config.optimizer.kwargs.to_dict()
    momentum = 0.0
    if config.optimizer.name in ("sgd", "sgd_momentum"):
        default = 0.9 if config.optimizer.name == "sgd_momentum" else 0.0
        momentum = float(kwargs.get("momentum") or default)
    bias_correction = not (
        config.optimizer.name == "schedule_free_adamw" and kwargs.get("variant") == "paper"
    )

    def measure(state, batch):
        params, opt_state = state["params"], state["opt_state"]
        loss = lambda p: loss_fn(p, batch)
        # The rate the next update applies (`lr_of(old, new, step)` of `build`).
        lr = jnp.asarray(lr_of(opt_state, opt_state, state["step"]), jnp.float32)
        iterations = settings.sharpness_iterations
        out = {
            "sharpness": probes.top_hessian_eigenvalue(loss, params, iterations),
            "sharpness_threshold": probes.stability_threshold(lr, momentum),
        }
        try:
            found = probes.find_second_moment(opt_state)
        except ValueError:  # no second moment (SGD, LARS, DoG, ...): no preconditioned variant
            return out
        precond = probes.adam_preconditioner(opt_state, bias_correction=bias_correction, **hyper)
        b1 = hyper.get("b1", 0.9) if found.kind in ("adam", "lamb") else 0.0
        out["preconditioned_sharpness"] = probes.top_hessian_eigenvalue(
            loss, params, iterations, preconditioner=precond
        )
        out["preconditioned_sharpness_threshold"] = probes.stability_threshold(lr, b1, ema=True)
        return out

    return measure


def train(
    config: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    *,
    devices=None,
    stop_after: int | None = None,
    stop_at_target: bool = False,
    return_state: bool = False,
    lanes: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Trains `config` in `workdir`; returns a summary (final step, last eval metrics, origin).

    Args:
      config: an experiment config (see `experiments/configs/common.py`).
      workdir: the run directory; created when the config has been checked and built.
      devices: devices of the mesh (default: all).
      stop_after: stop (without a final checkpoint) once this step is reached: a stand-in
        for a crash in tests of resumption.
      stop_at_target: stop (with a checkpoint) at the first evaluation that reaches the
        workload's target, so `summary["step"]` is the steps to target (the batch-size
        study's S(B)); a run reopened after stopping there does not train on.
      return_state: also return the final (sharded, live) state under "state". Off by default,
        so a study holding many summaries does not keep every run's arrays alive.
      lanes: {name: dotted overrides}: train these lanes as one program (`experiments.lanes`).
        The summary then has "lanes": {name: {"eval", "target_reached"}} instead of "eval"
        and "target_reached".

    Raises:
      NonFiniteLossError: the loss became NaN or infinite (the message names the step and
        the last good checkpoint); with lanes, when it has in every lane.
      Interrupted: Ctrl-C; the message names the step reached and the checkpoint to resume.
    """
    workdir = pathlib.Path(workdir)
    program, checkpointer, state, origin = _open(config, workdir, devices, lanes)
    workload, lane_set = program.workload, program.lanes
    names = ("",) if lane_set is None else lane_set.names
    run_dirs = [workdir] if lane_set is None else lane_set.dirs(workdir)
    start = done = int(state["step"])
    log = _RunLog(program, config, run_dirs, start)
    eval_batch = sharding.replicate(workload.eval_batch(), program.mesh)
    sharpness_every = program.probes.sharpness_every
    if sharpness_every:
        sharpness_batch = sharding.shard_batch(program.sharpness_batch(), program.mesh)
    # XLA:CPU can deadlock when several steps with collectives are in flight (DESIGN.md):
    # on the CPU backend wait for every step; elsewhere only when logging.
    sync_every = 1 if jax.default_backend() == "cpu" else config.log_every
    last_eval: list[dict[str, float]] = []
    non_finite: set[int] = set()  # lanes whose loss has stopped being finite

    def stop_here(evaluated: bool) -> bool:
        # With lanes: once every lane has reached it.
        return bool(
            stop_at_target and evaluated and all(workload.target.reached(e) for e in last_eval)
        )

    try:
        end = config.steps
        if stop_at_target and start:
            last_eval = log.evaluate(start, state, eval_batch)
            if stop_here(True):  # reopened after stopping at its target: stays there
                end = start
        for step in range(start, end):
            if stop_after is not None and step >= stop_after:
                break
            state, step_metrics = program.step_fn(state, program.batch(step))
            done = step + 1
            log.started(done, step_metrics)
            final = done == config.steps
            record = done % config.log_every == 0 or final
            # The loss is checked before any checkpoint is written, so a non-finite state is
            # never saved over the last good one (with lanes: unless some lanes are finite).
            if done % sync_every == 0 or record or checkpointer.should_save(done):
                checked = "" if sync_every == 1 else f" (checked every {sync_every} steps)"
                non_finite = _check_finite(
                    step_metrics["loss"], done, names, non_finite, config, checked, checkpointer
                )
            # The sharpness of the params after `done` updates (never at step 0, where an
            # Adam preconditioner is still zero), in that step's train record.
            measured = {}
            if sharpness_every and done % sharpness_every == 0:
                measured = program.sharpness_fn(state, sharpness_batch)
            if record or measured:
                log.train(done, {**step_metrics, **measured})
            evaluated = final or (config.eval_every and done % config.eval_every == 0)
            if evaluated:
                last_eval = log.evaluate(done, state, eval_batch)
            log.progress.update(1)
            checkpointer.save(done, state, force=final or stop_here(evaluated))
            if stop_here(evaluated):
                break
        if not last_eval and stop_after is None:
            # A finished run reopened: where it ended.
            last_eval = log.evaluate(int(state["step"]), state, eval_batch)
    except KeyboardInterrupt:
        log.close(checkpointer)
        raise Interrupted(
            f"interrupted at step {done} of {config.steps}; {workdir} resumes from "
            f"{_checkpoint_name(checkpointer)} when run again with the same command"
        ) from None
    except BaseException:
        log.close(checkpointer)
        raise
    log.close(checkpointer)
    results = [
        {"eval": e, "target_reached": bool(e) and workload.target.reached(e)}
        for e in last_eval or [{} for _ in names]
    ]
    summary: dict[str, Any] = {"step": int(state["step"]), "origin": origin}
    if lane_set is None:
        summary.update(results[0])
    else:
        summary["lanes"] = dict(zip(names, results, strict=True))
    if return_state:
        summary["state"] = state
    return summary


def _open(config, workdir: pathlib.Path, devices, lanes):
    """Checks and builds `config`, then creates the workdir and restores or inits the state:
    (program, checkpointer, state, origin). Prints the run's one-line header."""
    rundir.check_config(workdir, config)
    # Everything that can fail on a bad config fails here, before the workdir exists.
    program = build(config, devices, lanes)
    lane_set = program.lanes
    if lane_set is not None:
        lane_set.check_workdir(workdir, config.fork.parent)
    workdir.mkdir(parents=True, exist_ok=True)
    checkpointer = checkpointing.Checkpointer(
        workdir,
        every=config.checkpoint.every,
        keep=config.checkpoint.keep,
        keep_steps=tuple(config.checkpoint.keep_steps),
    )
    state, origin = checkpointing.restore_or_init(
        workdir,
        checkpointer,
        program.abstract_state,
        init=program.init,
        fork_parent=config.fork.parent or None,
        fork_step=config.fork.step if config.fork.step >= 0 else None,
        init_params_from=config.init_params_from or None,
        lineage=rundir.lineage_fields(config),
    )
    if program.init_probes is not None and "probes" not in state:
        state = {**state, "probes": program.init_probes()}  # resumed or forked: not saved
    if jax.process_index() == 0:
        rundir.write_config(workdir, config)
        num_params, shown = rundir.num_params(program.abstract_state), ""
        if lane_set is not None:
            lane_set.write_dirs(workdir, origin)
            num_params //= len(lane_set)
            shown = f", {len(lane_set)} lanes"
        print(
            f"{config.workload.name}: {num_params:,} params, "
            f"optimizer {config.optimizer.name}, schedule {config.schedule.name}, "
            f"mesh {dict(program.mesh.shape)}{shown}, start {origin}",
            file=sys.stderr,
        )
    return program, checkpointer, state, origin


class _RunLog:
    """A run's records: one metrics stream per lane, throughput since the last record, the
    progress bar. Only process 0 writes."""

    def __init__(self, program: Program, config, run_dirs, start: int):
        main = jax.process_index() == 0
        self.program, self.config = program, config
        self.writers = [metrics.Writer(d, enabled=main) for d in run_dirs]
        self.progress = metrics.progress(start, config.steps, config.progress_bar and main)
        self.tic = time.perf_counter()
        self.throughput = None  # after the first step: its compile time is not throughput
        self.since = (start, self.tic)

    def per_lane(self, values: dict) -> list[dict[str, float]]:
        """{key: scalar or [lanes]} -> one {key: float} per lane."""
        columns = {k: np.asarray(v, np.float64).reshape(-1) for k, v in values.items()}
        return [{k: float(c[i]) for k, c in columns.items()} for i in range(len(self.writers))]

    def started(self, done: int, step_metrics: dict) -> None:
        """After each step; the first one (compiled) starts the throughput clock."""
        if self.throughput is not None:
            return
        jax.block_until_ready(step_metrics["loss"])
        lanes = self.program.lanes
        self.throughput = metrics.Throughput(
            self.program.workload,
            self.program.mesh.devices.flat,
            self.program.xla_flops_per_step(),
            lanes=1 if lanes is None else len(lanes),
        )
        self.since = (done, time.perf_counter())

    def train(self, done: int, values: dict) -> None:
        """The train record of step `done` (updates applied; the loss is that of this
        update's batch, taken at the params before the update), throughput of the whole
        program (all lanes) since the last record."""
        now = time.perf_counter()
        examples = done * self.program.workload.examples_per_step()
        speed = self.throughput.record(done - self.since[0], now - self.since[1])
        self.since = (done, now)
        records = self.per_lane(values)
        for writer, record in zip(self.writers, records, strict=True):
            record.update(split="train", step=done, examples=examples, seconds=now - self.tic)
            writer.write({**record, **speed})
        best = min((r["loss"] for r in records if math.isfinite(r["loss"])), default=None)
        self.progress.set_postfix(loss=f"{best:.4f}", refresh=False)

    def evaluate(self, step: int, state, eval_batch) -> list[dict[str, float]]:
        results = self.per_lane(self.program.eval_fn(state, eval_batch))
        for writer, result in zip(self.writers, results, strict=True):
            writer.write({"split": "eval", "step": step, **result})
        return results

    def close(self, checkpointer) -> None:
        self.progress.close()
        checkpointer.close()
        for writer in self.writers:
            writer.close()


def _check_finite(loss, done, names, non_finite, config, checked, checkpointer) -> set[int]:
    """The lanes whose loss is not finite, reporting the new ones; NonFiniteLossError when
    none is left (a single run: its loss)."""
    losses = np.asarray(loss, np.float64).reshape(-1)
    bad = set(np.flatnonzero(~np.isfinite(losses)).tolist())
    if len(bad) == len(losses):
        where = "" if len(names) == 1 else f" in all {len(losses)} lanes"
        raise NonFiniteLossError(
            f"loss is {losses[0]}{where} at step {done}{checked} "
            f"({config.workload.name}, {config.optimizer.name}); training "
            f"stopped. Last good checkpoint: {_checkpoint_name(checkpointer)}"
        )
    for i in sorted(bad - non_finite):
        print(f"lane {names[i]}: loss is {losses[i]} at step {done}; the other lanes go on",
              file=sys.stderr)  # fmt: skip
    return non_finite | bad


def _checkpoint_name(checkpointer: checkpointing.Checkpointer) -> str:
    step = checkpointer.latest_step()
    where = checkpointer.directory
    return f"none in {where}" if step is None else f"step {step} in {where}"
