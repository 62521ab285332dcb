"""The training loop: one file, top to bottom.

    config -> workload, mesh, optimizer, schedule
           -> abstract state (jax.eval_shape) -> shardings (FSDP rule)
           -> restore (resume | fork | params only) or a jitted, sharded init
           -> jitted step (in/out shardings, state donated) -> periodic eval, logs, checkpoints

The state is a dict {"step", "params", "opt_state"}; `step` counts updates applied, so the
learning rate of the update from state step t is `schedule(t)` and a state restored at step k
continues exactly where its run was. Data of step t is `workload.batch(t)`, so a resumed or
forked run sees the same examples it would have seen without interruption.

Logs (workdir): `config.json`, `metrics.jsonl` (one JSON record per logged step: loss,
gradient, update and param norms, the learning rate applied; and eval records), TensorBoard
events under `tb/`, checkpoints under `checkpoints/`, and `lineage.json` for forks.
"""

from __future__ import annotations

import dataclasses
import json
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
from experiments import checkpointing, sharding, workloads
from experiments.configs import common


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the step."""


def build_schedule(config: ml_collections.ConfigDict):
    base = schedules.registry.build(
        config.schedule.name, total_steps=config.steps, **config.schedule.kwargs.to_dict()
    )
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


def check_workdir_config(workdir: pathlib.Path, config: ml_collections.ConfigDict) -> None:
    """Refuses a workdir that holds another run: only a resumption of the same run may reuse it.

    `steps` may grow when the schedule does not depend on it (a WSD main branch at constant
    learning rate is extended this way); keys that only change logging may differ.
    """
    path = workdir / "config.json"
    if not path.exists():
        return
    differences = common.diff(json.loads(path.read_text()), config.to_dict())
    for key in common.WATCH_ONLY_KEYS:
        differences.pop(key, None)
    steps_change = differences.pop("steps", None)
    if steps_change is not None:
        built_with_total = "total_steps" in _schedule_params(config.schedule.name)
        if built_with_total and "total_steps" not in config.schedule.kwargs:
            differences["steps"] = steps_change
    if differences:
        lines = "\n".join(f"  {k}: {old!r} -> {new!r}" for k, (old, new) in differences.items())
        raise ValueError(
            f"workdir {workdir} holds another run's config; these keys differ:\n{lines}\n"
            "Use a new --workdir, or fork this run with --config.fork.parent."
        )


def _schedule_params(name: str) -> tuple[str, ...]:
    import inspect

    return tuple(inspect.signature(schedules.registry.SCHEDULES[name]).parameters)


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


def build(config: ml_collections.ConfigDict, devices=None) -> Program:
    """The workload, mesh, optimizer, schedule, shardings and jitted functions of `config`."""
    workload = workloads.make(config.workload)
    mesh = sharding.make_mesh(config.mesh.to_dict(), devices)
    sharding.check_batch_size(workload.batch_size, mesh)
    entry = optlib.registry.get(config.optimizer.name)
    schedule = build_schedule(config)
    optimizer = entry.factory(schedule, **config.optimizer.kwargs.to_dict())

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

    def _train_step(state, batch):
        loss_fn = lambda params: workload.loss(params, batch)
        loss, grads = jax.value_and_grad(loss_fn)(state["params"])
        extra = {}
        if "value" in entry.needs:
            extra["value"] = loss
        if "grad_fn" in entry.needs:
            extra["grad_fn"] = jax.grad(loss_fn)
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"], **extra)
        params = optax.apply_updates(state["params"], updates)
        metrics = {
            "loss": loss,
            "grad_norm": optax.tree.norm(grads),
            "update_norm": optax.tree.norm(updates),
            "param_norm": optax.tree.norm(params),
            "lr": jnp.asarray(schedule(state["step"]), jnp.float32),
        }
        new_state = {"step": state["step"] + 1, "params": params, "opt_state": opt_state}
        return new_state, metrics

    step_fn = jax.jit(
        train_step,
        in_shardings=(state_shardings, batch_sharding),
        out_shardings=(state_shardings, replicated),
        donate_argnums=0,
    )

    def eval_step(state, batch):
        params = state["params"]
        if entry.eval_params is not None:
            params = entry.eval_params(state["opt_state"], params)
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


def train(
    config: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    *,
    devices=None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Trains `config` in `workdir`; returns a summary (final step, last eval metrics, origin).

    Args:
      config: an experiment config (see `experiments/configs/common.py`).
      workdir: the run directory; created if missing.
      devices: devices of the mesh (default: all).
      stop_after: stop (without a final checkpoint) once this step is reached: a stand-in
        for a crash in tests of resumption.
    """
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    check_workdir_config(workdir, config)
    is_main_process = jax.process_index() == 0
    program = build(config, devices)
    workload, mesh, abstract = program.workload, program.mesh, program.abstract_state

    # --- restore or init -----------------------------------------------------------------
    checkpointer = checkpointing.Checkpointer(
        workdir,
        every=config.checkpoint.every,
        keep=config.checkpoint.keep,
        keep_steps=tuple(config.checkpoint.keep_steps),
    )
    lineage = None
    if config.fork.parent:
        parent_config = pathlib.Path(config.fork.parent) / "config.json"
        if parent_config.exists():
            lineage = {"config_diff": common.diff(json.loads(parent_config.read_text()), config)}
    state, origin = checkpointing.restore_or_init(
        workdir,
        checkpointer,
        abstract,
        init=program.init,
        fork_parent=config.fork.parent or None,
        fork_step=config.fork.step if config.fork.step >= 0 else None,
        init_params_from=config.init_params_from or None,
        lineage=lineage,
    )
    if is_main_process:
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=2) + "\n")
    step_fn, eval_fn = program.step_fn, program.eval_fn
    eval_batch = sharding.replicate(workload.eval_batch(), mesh)

    # --- the loop ------------------------------------------------------------------------
    writer = _Writer(workdir, enabled=is_main_process)
    start = int(state["step"])
    last_eval: dict[str, float] = {}
    # XLA:CPU can deadlock when several steps with collectives are in flight (DESIGN.md):
    # on the CPU backend wait for every step; elsewhere only when logging.
    sync_every = 1 if jax.default_backend() == "cpu" else config.log_every
    progress = _progress(start, config.steps, enabled=config.progress_bar and is_main_process)
    if is_main_process:
        num_params = sum(math.prod(x.shape) for x in jax.tree.leaves(abstract["params"]))
        print(
            f"{config.workload.name}: {num_params:,} params, optimizer {config.optimizer.name}, "
            f"schedule {config.schedule.name}, mesh {dict(mesh.shape)}, start {origin}",
            file=sys.stderr,
        )

    def evaluate(step):
        metrics = {k: float(v) for k, v in eval_fn(state, eval_batch).items()}
        writer.write({"split": "eval", "step": step, **metrics})
        return metrics

    tic = time.perf_counter()
    for step in range(start, config.steps):
        if stop_after is not None and step >= stop_after:
            break
        batch = sharding.shard_batch(workload.batch(step), mesh)
        state, metrics = step_fn(state, batch)
        done = step + 1
        # The loss is checked before any checkpoint is written, so a non-finite state is
        # never saved over the last good one.
        if (
            done % sync_every == 0
            or done % config.log_every == 0
            or done == config.steps
            or checkpointer.manager.should_save(done)
        ):
            loss = float(metrics["loss"])
            if not math.isfinite(loss):
                checkpointer.close()
                writer.close()
                last_good = checkpointer.latest_step()
                checked = "" if sync_every == 1 else f" (checked every {sync_every} steps)"
                raise NonFiniteLossError(
                    f"loss is {loss} at step {step}{checked} ({config.workload.name}, "
                    f"{config.optimizer.name}); training stopped. Last good checkpoint: "
                    f"{'none' if last_good is None else f'step {last_good}'} in "
                    f"{checkpointer.directory}"
                )
        if done % config.log_every == 0 or done == config.steps:
            record = {k: float(v) for k, v in metrics.items()}
            record.update(
                split="train",
                step=step,
                examples=done * workload.examples_per_step(),
                seconds=time.perf_counter() - tic,
            )
            writer.write(record)
            progress.set_postfix(loss=f"{record['loss']:.4f}", refresh=False)
        if done == config.steps or (config.eval_every and done % config.eval_every == 0):
            last_eval = evaluate(done)
        progress.update(1)
        checkpointer.save(done, state, force=done == config.steps)
    progress.close()
    final_step = int(state["step"])
    if not last_eval and stop_after is None:
        last_eval = evaluate(final_step)  # a finished run reopened: report where it ended
    checkpointer.close()
    writer.close()
    target = workload.target
    return {
        "step": final_step,
        "eval": last_eval,
        "origin": origin,
        "target_reached": bool(last_eval) and target.reached(last_eval),
        "state": state,
    }


class _Writer:
    """metrics.jsonl plus TensorBoard scalars (when tensorboardX is installed)."""

    def __init__(self, workdir: pathlib.Path, enabled: bool):
        self.enabled = enabled
        self.file = open(workdir / "metrics.jsonl", "a") if enabled else None  # noqa: SIM115
        self.tb = None
        if enabled:
            try:
                from tensorboardX import SummaryWriter

                self.tb = SummaryWriter(str(workdir / "tb"))
            except ImportError:  # TensorBoard events are optional; the JSONL is the record
                pass

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for key, value in record.items():
                if isinstance(value, float) and key not in ("step",):
                    self.tb.add_scalar(f"{record['split']}/{key}", value, record["step"])

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.tb is not None:
            self.tb.close()


def _progress(start: int, total: int, enabled: bool):
    try:
        from tqdm import tqdm
    except ImportError:
        enabled = False
    if not enabled:
        return _NoProgress()
    return tqdm(initial=start, total=total, dynamic_ncols=True, file=sys.stderr)


class _NoProgress:
    def update(self, n):
        pass

    def set_postfix(self, **kwargs):
        pass

    def close(self):
        pass


def read_metrics(workdir: str | pathlib.Path) -> list[dict]:
    """The records of `metrics.jsonl` by (split, step), the last written winning.

    A run resumed after a crash repeats the steps after its last checkpoint; the repeat is
    what the final model saw, so it replaces the earlier records.
    """
    path = pathlib.Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    records = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            records[(record["split"], record["step"])] = record
    return sorted(records.values(), key=lambda r: (r["step"], r["split"]))
