"""Checkpoints: save, restore with target shardings, and fork. The only module importing Orbax.

A checkpoint of step k holds two items: `params` and `train` (the step counter and the
optimizer state), so a run can start from another run's params alone. Orbax writes each
checkpoint into a temporary directory and renames it when complete, so a crash never leaves a
half-written step behind; saves here are synchronous, so a step reported saved is on disk.

Restores go into an *abstract* state (ShapeDtypeStructs that carry the target shardings), so
a run can resume or branch on a mesh of another shape than the one that saved it.

`restore_or_init` is the one entry point, and its order is:

1. **resume**: the workdir has checkpoints of its own -> continue from the newest one that
   restores. A newer checkpoint whose files are truncated or corrupt is skipped with a message
   saying which step and why, and moved to `checkpoints_unrestorable/<step>` (kept for
   inspection, and out of the way of the next save at that step). If none restores, the run
   stops with an error that lists each step and its error, and nothing is moved;
2. **fork**: `config.fork.parent` names a parent workdir -> its full state at
   `config.fork.step` (params, optimizer state and step), and a lineage record is written;
3. **params only**: `config.init_params_from` names a workdir -> the params of its newest
   checkpoint that restores (another run's files are never moved), a fresh optimizer state at
   step 0;
4. **init**: a fresh state.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy, save_decision_policy

CHECKPOINT_DIR = "checkpoints"
UNRESTORABLE_DIR = "checkpoints_unrestorable"  # where skipped checkpoints are kept
LINEAGE_FILE = "lineage.json"


class CheckpointRestoreError(RuntimeError):
    """No checkpoint of a workdir restores, or a fork's parent checkpoint does not."""


def _describe(err: BaseException) -> str:
    """One line naming the error: its type and the first line of its message, shortened."""
    lines = str(err).strip().splitlines()
    text = lines[0] if lines else ""
    text = text if len(text) <= 300 else text[:297] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


@contextlib.contextmanager
def _quiet_absl(quiet: bool):
    """absl's warnings off inside the block when `quiet` (back to what they were after)."""
    from absl import logging

    before = logging.get_verbosity()
    if quiet:
        logging.set_verbosity(logging.ERROR)
    try:
        yield
    finally:
        logging.set_verbosity(before)


class Checkpointer:
    """Periodic checkpoints of one workdir.

    Args:
      workdir: the run directory; checkpoints go to `workdir/checkpoints/<step>`.
      every: save every this many steps; 0: no periodic saves (the loop still saves the
        final step, and on Ctrl-C).
      keep: how many of the latest checkpoints to keep (None: all).
      keep_steps: steps that are never deleted (e.g. the fork points of a WSD run).
      read_only: open someone else's checkpoints (a fork's parent) without changing them.
    """

    def __init__(
        self,
        workdir: str | pathlib.Path,
        every: int = 1000,
        keep: int | None = 3,
        keep_steps: Sequence[int] = (),
        read_only: bool = False,
    ):
        self.directory = pathlib.Path(workdir).absolute() / CHECKPOINT_DIR
        self.read_only = read_only
        policies: list = [preservation_policy.LatestN(keep)]
        if keep_steps:
            policies.append(preservation_policy.CustomSteps(list(keep_steps)))
        saves: list = [save_decision_policy.FixedIntervalPolicy(every)] if every else []
        if keep_steps:
            saves.append(save_decision_policy.SpecificStepsPolicy(list(keep_steps)))
        # Orbax warns that a read-only manager saves nothing, which is the point of one.
        with _quiet_absl(read_only):
            options = ocp.CheckpointManagerOptions(
                save_decision_policy=save_decision_policy.AnySavePolicy(saves),
                preservation_policy=preservation_policy.AnyPreservationPolicy(policies),
                enable_async_checkpointing=False,
                read_only=read_only,
                create=not read_only,
            )
            self.manager = ocp.CheckpointManager(
                self.directory, options=options, item_names=("params", "train")
            )

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def should_save(self, step: int) -> bool:
        """Whether `save(step, ...)` would write (the loop checks the loss before it does)."""
        return self.manager.should_save(step)

    def save(self, step: int, state: dict, force: bool = False) -> bool:
        """Saves `state` (a dict with step, params, opt_state) at `step`; True if written."""
        saved = self.manager.save(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(state["params"]),
                train=ocp.args.StandardSave(
                    {"step": state["step"], "opt_state": state["opt_state"]}
                ),
            ),
            force=force,
        )
        self.manager.wait_until_finished()
        return saved

    def restore(self, step: int, abstract_state: dict, params_only: bool = False) -> dict:
        """The state of `step`, placed as `abstract_state`'s shardings say.

        With `params_only`, returns only {"params": ...} (the optimizer state is not read).
        """
        if step not in self.steps():
            raise ValueError(
                f"{self.directory} has no checkpoint at step {step}; it has steps {self.steps()}"
            )
        items: dict[str, Any] = {"params": ocp.args.StandardRestore(abstract_state["params"])}
        if not params_only:
            items["train"] = ocp.args.StandardRestore(
                {"step": abstract_state["step"], "opt_state": abstract_state["opt_state"]}
            )
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        if params_only:
            return {"params": restored["params"]}
        return {"params": restored["params"], **restored["train"]}

    def restore_latest(
        self, abstract_state: dict, params_only: bool = False
    ) -> tuple[dict, int, list[dict]]:
        """The newest checkpoint that restores: (state, its step, the newer ones skipped).

        Tries the steps newest first. Each one that fails to restore (truncated or corrupt
        files, or any other error while reading it) is reported on stderr with its step and
        error, and listed in the returned records ({"step", "error", "kept_at"}). Once an
        older one restores, the skipped ones are moved to `<workdir>/checkpoints_unrestorable/`
        (for a read-only checkpointer they stay where they are), so they stay available for
        inspection and the run can save those steps again. A transient read error would be
        treated the same way; move the directory back to use it.

        Raises:
          CheckpointRestoreError: no checkpoint restores; it lists each step and its error,
            and moves nothing (the cause may be the abstract state rather than the files).
        """
        failures: list[dict] = []
        for step in reversed(self.steps()):
            try:
                state = self.restore(step, abstract_state, params_only)
            except Exception as err:  # whatever the cause, it does not restore
                failures.append({"step": step, "error": _describe(err)})
                continue
            for record in failures:
                record["kept_at"] = str(self._set_aside(record["step"]))
                print(
                    f"checkpoint at step {record['step']} in {self.directory} does not restore "
                    f"({record['error']}); skipped, kept at {record['kept_at']}. "
                    f"Restored step {step} instead.",
                    file=sys.stderr,
                )
            return state, step, failures
        listing = "".join(f"\n  step {r['step']}: {r['error']}" for r in failures)
        raise CheckpointRestoreError(
            f"none of the {len(failures)} checkpoints in {self.directory} restores (nothing "
            f"was moved):{listing}"
        )

    def _set_aside(self, step: int) -> pathlib.Path:
        """Moves checkpoint `step` out of the checkpoint directory; returns where it is now.

        A read-only checkpointer (someone else's run) moves nothing.
        """
        source = self.directory / str(step)
        if self.read_only:
            return source
        target = self.directory.parent / UNRESTORABLE_DIR / str(step)
        suffix = 0
        while target.exists():  # the same step failed before: keep both
            suffix += 1
            target = target.with_name(f"{step}.{suffix}")
        if jax.process_index() == 0:
            target.parent.mkdir(parents=True, exist_ok=True)
            source.rename(target)
        if jax.process_count() > 1:
            ocp.multihost.sync_global_processes(f"checkpointing_set_aside_{step}")
        self.manager.reload()
        return target

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_with_shardings(abstract_state, shardings):
    """ShapeDtypeStructs that carry the shardings the restored arrays must have."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_state, shardings
    )


def restore_or_init(
    workdir: str | pathlib.Path,
    checkpointer: Checkpointer,
    abstract_state: dict,
    init: Callable[[Any], dict],
    fork_parent: str | None = None,
    fork_step: int | None = None,
    init_params_from: str | None = None,
    lineage: dict | None = None,
) -> tuple[dict, dict]:
    """The state to start from and where it came from, in the order of the module docstring.

    Args:
      workdir: this run's directory.
      checkpointer: this run's checkpointer.
      abstract_state: ShapeDtypeStructs with target shardings (`abstract_with_shardings`).
      init: `init(params)` builds a fresh, sharded state around `params`, or around freshly
        initialised params when `params` is None (a jitted init with out_shardings); the
        optimizer state is built from the params it will train (DoG keeps a copy of them).
      fork_parent, fork_step: the parent workdir and step to fork from.
      init_params_from: a workdir whose latest params start this run.
      lineage: extra fields for the fork's lineage record (e.g. the config diff).

    Returns:
      (state, origin) where origin is {"kind": "resume"|"fork"|"params"|"init", ...}.
    """
    if checkpointer.latest_step() is not None:
        state, step, skipped = checkpointer.restore_latest(abstract_state)
        origin = {"kind": "resume", "step": step}
        return state, ({**origin, "skipped": skipped} if skipped else origin)
    if fork_parent:
        if fork_step is None:
            raise ValueError("fork.step must be set when fork.parent is")
        parent = Checkpointer(fork_parent, read_only=True)
        try:
            state = parent.restore(fork_step, abstract_state)
        except Exception as err:  # name the checkpoint whatever the error
            if fork_step not in parent.steps():
                raise  # a ValueError that lists the steps the parent has
            raise CheckpointRestoreError(
                f"the fork's parent checkpoint {parent.directory / str(fork_step)} does not "
                f"restore: {_describe(err)}"
            ) from err
        finally:
            parent.close()
        record = {
            "parent": str(pathlib.Path(fork_parent).absolute()),
            "step": fork_step,
            **(lineage or {}),
        }
        path = pathlib.Path(workdir) / LINEAGE_FILE
        path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        return state, {"kind": "fork", **record}
    if init_params_from:
        source = Checkpointer(init_params_from, read_only=True)
        try:
            if source.latest_step() is None:
                raise ValueError(f"init_params_from={init_params_from!r} has no checkpoints")
            restored, step, _ = source.restore_latest(abstract_state, params_only=True)
            params = restored["params"]
        finally:
            source.close()
        return init(params), {"kind": "params", "source": init_params_from, "step": step}
    return init(None), {"kind": "init"}
