"""One WSD run, many budgets: run (or reuse) the main branch, then branch a decay off each fork.

    python -m experiments.branch --config=experiments/configs/lm_wsd.py --parent=runs/wsd \
        --at=800,1600 --decay_fraction=0.2 --shape=1-sqrt [--config.key=value ...]

`--parent` is the main branch's workdir. Its config must hold the learning rate at a level
that does not depend on the run length (schedule `warmup` or `constant`: warm-up, then
stable). The main branch runs to the last fork step, keeping a checkpoint at every fork step;
if it already exists it is resumed or reused (and `--config` may be omitted).

Each fork step k yields a finished model in `<parent>/branches/at_<k>`: the main branch's full
state at k, then a decay of D steps from the main branch's learning rate at k down to
`--end_value`, where `--decay_fraction` f is the decay's share of the branch's total steps
(D = round(f k / (1 - f)), so k + D is the compute budget the branch finishes). Each branch
writes `lineage.json` (parent, step, config diff).

With `--mode=wsd-s` no copies are made: the main branch itself decays before each fork step
and resumes at the peak right after it (WSD-S, Wen et al. 2025), so the checkpoint at each k
is a finished model and no compute is thrown away; here f is the decay's share of each cycle.

When `--parent` is a sweep (`experiments.sweep`, run first with a `warmup` or `constant`
schedule), every lane is branched: `<parent>/branches/at_<k>` is a sweep of the same lanes
and mode, each lane decaying off its own main branch.
"""

from __future__ import annotations

import copy
import json
import pathlib
import sys

import ml_collections
from absl import app, flags
from ml_collections import config_flags


def define_flags() -> dict:
    """The command's flags; defined only when run as a command, so importing this module
    (tests, the study) never collides with `experiments.main`'s --config."""
    holders = {
        "config": config_flags.DEFINE_config_file(
            "config",
            None,
            "the main branch's config (optional when --parent exists)",
            lock_config=True,
        ),
        "parent": flags.DEFINE_string("parent", None, "workdir of the main branch"),
        "at": flags.DEFINE_list("at", None, "fork steps of the main branch, e.g. 800,1600"),
        "decay_fraction": flags.DEFINE_float(
            "decay_fraction", 0.2, "the decay's share of each branch's steps"
        ),
        "shape": flags.DEFINE_string("shape", "1-sqrt", "decay shape (schedules.DECAY_SHAPES)"),
        "end_value": flags.DEFINE_float("end_value", 0.0, "learning rate at the end of a decay"),
        "mode": flags.DEFINE_enum("mode", "wsd", ["wsd", "wsd-s"], "branch copies, or WSD-S"),
    }
    flags.mark_flags_as_required(["parent", "at"])
    return holders


STABLE_SCHEDULES = ("warmup", "constant")


def decay_steps_for(at_step: int, decay_fraction: float) -> int:
    """D such that D is `decay_fraction` of the branch's k + D steps (at least 1)."""
    if not 0.0 < decay_fraction < 1.0:
        raise ValueError(f"decay_fraction must be in (0, 1), got {decay_fraction}")
    return max(1, round(decay_fraction * at_step / (1.0 - decay_fraction)))


def check_branch_arguments(
    at: list[int], decay_fraction: float, shape: str, end_value: float
) -> None:
    """Every branch argument checked before any step is computed (ValueError naming it)."""
    import schedules

    if not at or at[0] < 1:
        raise ValueError(f"--at must list fork steps >= 1, got {at}")
    decay_steps_for(at[0], decay_fraction)  # raises for a fraction outside (0, 1)
    if shape not in schedules.DECAY_SHAPES:
        raise ValueError(f"--shape={shape!r} is unknown; choose one of {schedules.DECAY_SHAPES}")
    if not end_value >= 0.0:
        raise ValueError(f"--end_value must be >= 0, got {end_value}")


def main_config(
    config: ml_collections.ConfigDict, at: list[int], mode: str, decay_fraction: float, shape: str
) -> ml_collections.ConfigDict:
    """The main branch's config: runs to the last fork step, keeps every fork checkpoint."""
    if config.schedule.name not in STABLE_SCHEDULES:
        raise ValueError(
            f"the main branch of a WSD run needs a stable learning rate: schedule.name must be "
            f"one of {STABLE_SCHEDULES}, got {config.schedule.name!r}"
        )
    config = copy.deepcopy(config)
    with config.unlocked():
        config.steps = max(at)
        config.checkpoint.keep_steps = sorted(set(config.checkpoint.keep_steps) | set(at))
        if mode == "wsd-s":
            kwargs = config.schedule.kwargs.to_dict()
            peak = kwargs.pop("peak", kwargs.pop("value", None))
            config.schedule.name = "wsd_s"
            config.schedule.kwargs = ml_collections.ConfigDict(
                {
                    "peak": peak,
                    "checkpoints": sorted(at),
                    "warmup_steps": kwargs.get("warmup_steps", 0),
                    "decay_fraction": decay_fraction,
                    "decay_shape": shape,
                }
            )
    return config


def branch_config(
    main: ml_collections.ConfigDict,
    parent: str,
    at_step: int,
    decay_fraction: float,
    shape: str,
    end_value: float,
) -> ml_collections.ConfigDict:
    """The config of the branch that decays off the main branch at `at_step`."""
    config = copy.deepcopy(main)
    decay = decay_steps_for(at_step, decay_fraction)
    with config.unlocked():
        config.steps = at_step + decay
        config.schedule.branch.at_step = at_step
        config.schedule.branch.decay_steps = decay
        config.schedule.branch.shape = shape
        config.schedule.branch.end_value = end_value
        config.fork.parent = str(pathlib.Path(parent).absolute())
        config.fork.step = at_step
        config.checkpoint.keep_steps = []
    return config


def load_config(parent: pathlib.Path) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(json.loads((parent / "config.json").read_text()))


def run(
    config: ml_collections.ConfigDict | None,
    parent: str,
    at: list[int],
    decay_fraction: float = 0.2,
    shape: str = "1-sqrt",
    end_value: float = 0.0,
    mode: str = "wsd",
) -> dict[str, dict]:
    """Runs the main branch and its decays; returns {workdir: summary} of finished models.

    When `parent` is a sweep (`experiments.sweep`), the main branch is that sweep and every
    branch is a sweep of the same lanes and mode: each lane decays off its own main branch
    (in vmap mode all lanes fork together from the sweep's stacked checkpoint). Its summaries
    are the sweeps' records (sweep.json).
    """
    from experiments import sweep, train

    parent_dir = pathlib.Path(parent)
    train_fn = train.train
    if sweep.is_sweep(parent_dir):
        grid, lane_mode = sweep.grid_of(parent_dir)
        train_fn = lambda c, workdir: sweep.run(c, workdir, grid, lane_mode)
    at = sorted({int(k) for k in at})
    check_branch_arguments(at, decay_fraction, shape, end_value)
    if config is None:
        if not (parent_dir / "config.json").exists():
            raise ValueError(f"--parent={parent} has no run yet: give --config to start one")
        config = load_config(parent_dir)
        if config.schedule.name == "wsd_s":
            raise ValueError(f"{parent} is a WSD-S run; extend it with its original --config")
    main = main_config(config, at, mode, decay_fraction, shape)
    results = {str(parent_dir): train_fn(main, parent_dir)}
    if mode == "wsd-s":
        return results  # the checkpoints at `at` are the decayed models
    for k in at:
        workdir = parent_dir / "branches" / f"at_{k}"
        child = branch_config(main, str(parent_dir), k, decay_fraction, shape, end_value)
        results[str(workdir)] = train_fn(child, workdir)
    return results


def main(argv, holders: dict, overrides=None) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from experiments import cli
    from experiments.distributed import maybe_initialize_distributed

    maybe_initialize_distributed()
    value = {name: holder.value for name, holder in holders.items()}

    def run_all():
        config = value["config"]
        if config is not None:
            config = cli.apply_kwargs_overrides(config, overrides or cli.KwargsOverrides())
        return run(
            config,
            value["parent"],
            [int(k) for k in value["at"]],
            value["decay_fraction"],
            value["shape"],
            value["end_value"],
            value["mode"],
        )

    results = cli.run_reporting_errors(run_all)
    for workdir, summary in results.items():
        if "lanes" in summary:  # a sweep's record
            lanes = [{k: lane[k] for k in ("name", "step", "eval")} for lane in summary["lanes"]]
            print(json.dumps({"workdir": workdir, "lanes": lanes}))
            continue
        print(json.dumps({"workdir": workdir, "step": summary["step"], "eval": summary["eval"]}))
    sys.stdout.flush()


if __name__ == "__main__":
    from experiments import cli

    cli.run_command(main, define_flags())
