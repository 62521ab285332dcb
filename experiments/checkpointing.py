"""Checkpoints: save, restore with target shardings, and fork. The only module importing Orbax.

A checkpoint of step k holds two items: `params` and `train` (the step counter and the
optimizer state), so a run can start from another run's params alone. Orbax writes each
checkpoint into a temporary directory and renames it when complete, so a crash never leaves a
half-written step behind; saves here are synchronous, so a step reported saved is on disk.

Restores go into an *abstract* state (ShapeDtypeStructs that carry the target shardings), so
a run can resume or branch on a mesh of another shape than the one that saved it.

`restore_or_init` is the one entry point, and its order is:

1. **resume**: the workdir has checkpoints of its own -> continue from the latest;
2. **fork**: `config.fork.parent` names a parent workdir -> its full state at
   `config.fork.step` (params, optimizer state and step), and a lineage record is written;
3. **params only**: `config.init_params_from` names a workdir -> its latest params, a fresh
   optimizer state at step 0;
4. **init**: a fresh state.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy, save_decision_policy

CHECKPOINT_DIR = "checkpoints"
LINEAGE_FILE = "lineage.json"


class Checkpointer:
    """Periodic checkpoints of one workdir.

    Args:
      workdir: the run directory; checkpoints go to `workdir/checkpoints/<step>`.
      every: save every this many steps (the loop also saves the final step).
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
        policies: list = [preservation_policy.LatestN(keep)]
        if keep_steps:
            policies.append(preservation_policy.CustomSteps(list(keep_steps)))
        saves: list = [save_decision_policy.FixedIntervalPolicy(every)]
        if keep_steps:
            saves.append(save_decision_policy.SpecificStepsPolicy(list(keep_steps)))
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
    latest = checkpointer.latest_step()
    if latest is not None:
        state = checkpointer.restore(latest, abstract_state)
        return state, {"kind": "resume", "step": latest}
    if fork_parent:
        if fork_step is None:
            raise ValueError("fork.step must be set when fork.parent is")
        parent = Checkpointer(fork_parent, read_only=True)
        try:
            state = parent.restore(fork_step, abstract_state)
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
            step = source.latest_step()
            if step is None:
                raise ValueError(f"init_params_from={init_params_from!r} has no checkpoints")
            params = source.restore(step, abstract_state, params_only=True)["params"]
        finally:
            source.close()
        return init(params), {"kind": "params", "source": init_params_from, "step": step}
    return init(None), {"kind": "init"}
