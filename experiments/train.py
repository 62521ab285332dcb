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

A run directory holds `config.json` (`experiments.rundir`), `metrics.jsonl` and TensorBoard
events (`experiments.metrics`), `checkpoints/` and, for forks, `lineage.json`
(`experiments.checkpointing`).
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

import optlib.registry
import schedules
import schedules.registry
from experiments import checkpointing, metrics, rundir, sharding, workloads


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the step."""


class Interrupted(KeyboardInterrupt):
    """Training was interrupted (Ctrl-C); the message says where and how to resume."""


def build_schedule(config: ml_collections.ConfigDict):
    """`config.schedule`, built with the run's `steps` where it takes a total, then branched.

    A bad name or argument is a ValueError that names the config keys to change.
    """
    name, kwargs = config.schedule.name, config.schedule.kwargs.to_dict()
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
class Program:
    """Everything compiled for one config on one mesh, before any array exists.

    `abstract_state` holds ShapeDtypeStructs that carry the state's shardings, so the step
    can be lowered and compiled ahead of time (`experiments.aot`) and checkpoints restored
    straight into place.
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

    def abstract_batch(self) -> dict:
        return jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=self.batch_sharding),
            self.workload.batch(0),
        )


def build(
    config: ml_collections.ConfigDict, devices=None, *, learning_rate_in_state: bool = False
) -> Program:
    """The workload, mesh, optimizer, schedule, shardings and jitted functions of `config`.

    With `learning_rate_in_state` the learning rate is not the schedule's but a value in the
    optimizer state (`optax.inject_hyperparams`, at `opt_state.hyperparams["learning_rate"]`,
    starting at the schedule's value at step 0), which a driver sets between steps without
    recompiling: how `experiments.autolrs` tries its candidate rates.
    """
    workload = workloads.make(config.workload)
    mesh = sharding.make_mesh(config.mesh.to_dict(), devices)
    sharding.check_batch_size(workload.batch_size, mesh, config.microbatches)
    entry = optlib.registry.get(config.optimizer.name)
    entry.check_kwargs(config.optimizer.kwargs)
    schedule = build_schedule(config)
    kwargs = config.optimizer.kwargs.to_dict()
    optimizer = entry.build(schedule, **kwargs)
    inner = lambda opt_state: opt_state
    if learning_rate_in_state:
        optimizer = optax.inject_hyperparams(
            lambda learning_rate: entry.build(learning_rate, **kwargs)
        )(learning_rate=float(schedule(0)))
        inner = lambda opt_state: opt_state.inner_state

    def init_state(params):
        return {
            "step": jnp.zeros((), jnp.int32),
            "params": params,
            "opt_state": optimizer.init(params),
        }

    def init_fresh():
        return init_state(workload.init_params(jax.random.PRNGKey(config.seed)))

    # The state is never materialised unsharded: shapes first, then shardings from the FSDP
    # rule, then a jitted init that writes each shard where it belongs.
    abstract = jax.eval_shape(init_fresh)
    state_shardings = sharding.tree_shardings(abstract, mesh)
    abstract = checkpointing.abstract_with_shardings(abstract, state_shardings)
    fresh = jax.jit(init_fresh, out_shardings=state_shardings)
    around = jax.jit(init_state, out_shardings=state_shardings)

    batch_sharding = sharding.batch_sharding(mesh)
    replicated = sharding.replicated(mesh)

    def train_step(state, batch):
        # The mesh is visible while tracing, so workloads can constrain shardings (the LM
        # gathers its FSDP-split embedding table whole at the lookup).
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return _train_step(state, batch)

    value_and_grad = accumulated_value_and_grad(
        workload.loss, config.microbatches, sharding.microbatch_sharding(mesh)
    )

    def applied_lr(old_opt_state, opt_state, step):
        if learning_rate_in_state:  # the rate this update applied, read before the update
            return entry.applied_lr(inner(opt_state), old_opt_state.hyperparams["learning_rate"])
        return entry.applied_lr(opt_state, schedule(step))

    def _train_step(state, batch):
        params = state["params"]
        loss, grads = value_and_grad(params, batch)
        # The whole batch's loss and gradient function, so SAM and MoMo take the same step
        # with microbatches as without.
        grad_fn = lambda p: value_and_grad(p, batch)[1]
        extra = entry.update_kwargs(loss=loss, grad_fn=grad_fn)
        updates, opt_state = optimizer.update(grads, state["opt_state"], params, **extra)
        params = optax.apply_updates(params, updates)
        step_metrics = {
            "loss": loss,
            "grad_norm": optax.tree.norm(grads),
            "update_norm": optax.tree.norm(updates),
            "param_norm": optax.tree.norm(params),
            "lr": jnp.asarray(
                applied_lr(state["opt_state"], opt_state, state["step"]), jnp.float32
            ),
        }
        new_state = {"step": state["step"] + 1, "params": params, "opt_state": opt_state}
        return new_state, step_metrics

    step_fn = jax.jit(
        train_step,
        in_shardings=(state_shardings, batch_sharding),
        out_shardings=(state_shardings, replicated),
        donate_argnums=0,
    )

    def eval_step(state, batch):
        params = entry.eval_params(inner(state["opt_state"]), state["params"])
        return workload.eval_metrics(params, batch)

    return Program(
        workload=workload,
        mesh=mesh,
        entry=entry,
        schedule=schedule,
        abstract_state=abstract,
        state_shardings=state_shardings,
        batch_sharding=batch_sharding,
        init=lambda params: fresh() if params is None else around(params),
        step_fn=step_fn,
        eval_fn=jax.jit(eval_step, out_shardings=replicated),
    )


def accumulated_value_and_grad(loss_fn, microbatches: int, microbatch_sharding=None):
    """`(params, batch) -> (loss, grads)` of the whole batch, from `microbatches` pieces.

    With k > 1 the batch is split into k equal microbatches, example i going to microbatch
    i mod k (so each microbatch stays spread over every device when the batch is split over
    them in blocks), and a `lax.scan` sums their losses and gradients (in float32 at least):
    memory for one microbatch's activations and one gradient, and the mean of the k
    microbatch means equals the whole batch's mean loss and gradient.
    """
    if microbatches == 1:
        return jax.value_and_grad(loss_fn)

    def split(x):
        x = x.reshape(x.shape[0] // microbatches, microbatches, *x.shape[1:]).swapaxes(0, 1)
        if microbatch_sharding is None:
            return x
        return jax.lax.with_sharding_constraint(x, microbatch_sharding)

    def value_and_grad(params, batch):
        def add(total, microbatch):
            loss, grads = jax.value_and_grad(loss_fn)(params, microbatch)
            return jax.tree.map(lambda t, x: t + x.astype(t.dtype), total, (loss, grads)), None

        zeros = jax.tree.map(
            lambda x: jnp.zeros(jnp.shape(x), jnp.promote_types(x.dtype, jnp.float32)),
            (jnp.zeros((), jnp.float32), params),
        )
        (loss, grads), _ = jax.lax.scan(add, zeros, jax.tree.map(split, batch))
        grads = jax.tree.map(lambda g, p: (g / microbatches).astype(p.dtype), grads, params)
        return loss / microbatches, grads

    return value_and_grad


def train(
    config: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    *,
    devices=None,
    stop_after: int | None = None,
    return_state: bool = False,
) -> dict[str, Any]:
    """Trains `config` in `workdir`; returns a summary (final step, last eval metrics, origin).

    Args:
      config: an experiment config (see `experiments/configs/common.py`).
      workdir: the run directory; created when the config has been checked and built.
      devices: devices of the mesh (default: all).
      stop_after: stop (without a final checkpoint) once this step is reached: a stand-in
        for a crash in tests of resumption.
      return_state: also return the final (sharded, live) state under "state". Off by default,
        so a study holding many summaries does not keep every run's arrays alive.

    Raises:
      NonFiniteLossError: the loss became NaN or infinite (the message names the step and
        the last good checkpoint).
      Interrupted: Ctrl-C; the message names the step reached and the checkpoint to resume.
    """
    workdir = pathlib.Path(workdir)
    rundir.check_config(workdir, config)
    # Everything that can fail on a bad config fails here, before the workdir exists.
    program = build(config, devices)
    workdir.mkdir(parents=True, exist_ok=True)
    is_main_process = jax.process_index() == 0
    workload, mesh = program.workload, program.mesh
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
    if is_main_process:
        rundir.write_config(workdir, config)
        print(
            f"{config.workload.name}: {rundir.num_params(program.abstract_state):,} params, "
            f"optimizer {config.optimizer.name}, schedule {config.schedule.name}, "
            f"mesh {dict(mesh.shape)}, start {origin}",
            file=sys.stderr,
        )
    eval_batch = sharding.replicate(workload.eval_batch(), mesh)
    writer = metrics.Writer(workdir, enabled=is_main_process)
    start = int(state["step"])
    progress = metrics.progress(start, config.steps, config.progress_bar and is_main_process)
    # XLA:CPU can deadlock when several steps with collectives are in flight (DESIGN.md):
    # on the CPU backend wait for every step; elsewhere only when logging.
    sync_every = 1 if jax.default_backend() == "cpu" else config.log_every
    last_eval: dict[str, float] = {}
    done = start

    def evaluate(step):
        result = {k: float(v) for k, v in program.eval_fn(state, eval_batch).items()}
        writer.write({"split": "eval", "step": step, **result})
        return result

    def close():
        progress.close()
        checkpointer.close()
        writer.close()

    tic = time.perf_counter()
    try:
        for step in range(start, config.steps):
            if stop_after is not None and step >= stop_after:
                break
            batch = sharding.shard_step_batch(workload, step, mesh)
            state, step_metrics = program.step_fn(state, batch)
            done = step + 1
            final = done == config.steps
            log = done % config.log_every == 0 or final
            # The loss is checked before any checkpoint is written, so a non-finite state is
            # never saved over the last good one.
            if done % sync_every == 0 or log or checkpointer.should_save(done):
                loss = float(step_metrics["loss"])
                if not math.isfinite(loss):
                    checked = "" if sync_every == 1 else f" (checked every {sync_every} steps)"
                    raise NonFiniteLossError(
                        f"loss is {loss} at step {done}{checked} ({config.workload.name}, "
                        f"{config.optimizer.name}); training stopped. Last good checkpoint: "
                        f"{_checkpoint_name(checkpointer)}"
                    )
            if log:
                # `step` counts the updates applied, as in eval records; the loss is that of
                # this update's batch, taken at the params before the update.
                record = {k: float(v) for k, v in step_metrics.items()}
                record.update(
                    split="train",
                    step=done,
                    examples=done * workload.examples_per_step(),
                    seconds=time.perf_counter() - tic,
                )
                writer.write(record)
                progress.set_postfix(loss=f"{record['loss']:.4f}", refresh=False)
            if final or (config.eval_every and done % config.eval_every == 0):
                last_eval = evaluate(done)
            progress.update(1)
            checkpointer.save(done, state, force=final)
        if not last_eval and stop_after is None:
            last_eval = evaluate(int(state["step"]))  # a finished run reopened: where it ended
    except KeyboardInterrupt:
        close()
        raise Interrupted(
            f"interrupted at step {done} of {config.steps}; {workdir} resumes from "
            f"{_checkpoint_name(checkpointer)} when run again with the same command"
        ) from None
    except BaseException:
        close()
        raise
    close()
    summary = {
        "step": int(state["step"]),
        "eval": last_eval,
        "origin": origin,
        "target_reached": bool(last_eval) and workload.target.reached(last_eval),
    }
    if return_state:
        summary["state"] = state
    return summary


def _checkpoint_name(checkpointer: checkpointing.Checkpointer) -> str:
    step = checkpointer.latest_step()
    where = checkpointer.directory
    return f"none in {where}" if step is None else f"step {step} in {where}"
