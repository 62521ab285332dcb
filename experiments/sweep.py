"""Sweeps: a grid of lanes, trained as one program (vmap) or as separate resumable runs.

    python -m experiments.sweep --config=experiments/configs/lm.py --workdir=runs/lr_sweep \
        --sweep=schedule.kwargs.peak=1e-3,3e-3,1e-2 --sweep=optimizer.kwargs.weight_decay=0,0.1 \
        --seeds=3 [--mode=auto|vmap|processes] [--config.any.key=value ...]

The repeated `--sweep=KEY=V1,V2,...` flags and `--seeds=N` span a product grid; each point is a
lane named by its overrides (`peak=0.001,weight_decay=0.1,seed=2`). KEY is any dotted config
key, or `optimizer.kwargs.X` / `schedule.kwargs.X` for any argument of the factory; values are
Python literals as in `experiments.cli`. Seed i (0-based) adds i to both `seed` (the init)
and `workload.seed` (the data order), so a lane equals `experiments.main` with its overrides.

Modes:

* `vmap`: every lane in one jitted, sharded program (`experiments.lanes`): the swept
  hyperparameters are arrays in the optimizer state, the lane axis is split over the devices
  (see `experiments.lanes` for how), and one checkpoint holds every lane's state, so a killed
  sweep resumes exactly. Only seeds and numeric optimizer/schedule kwargs can be lanes.
* `processes`: one run per lane, one after another, each a resumable run directory; finished
  (and diverged) lanes are skipped when the sweep runs again.
* `auto` (default): `vmap` when every swept key leaves shapes and the optimizer unchanged,
  else `processes` (it says which key decided).

The workdir holds `config.json` (the base config), `sweep.json` (mode, swept keys and, per
lane, `{"name", "overrides", "seed", "status", "step", "eval"}`), and per lane
`lanes/<name>/` with its config and metrics stream (in processes mode also its checkpoints;
in vmap mode `checkpoints/` of the stacked state sits in the workdir). A WSD sweep (schedule
`warmup` or `constant`) branches every lane with `python -m experiments.branch
--parent=<sweep workdir> --at=...`; `python -m experiments.report <workdir>` draws it.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import json
import math
import pathlib
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from experiments import cli, lanes, rundir
from experiments.configs import common

SWEEP_FILE = "sweep.json"
MODES = ("auto", "vmap", "processes")


# The grid ------------------------------------------------------------------------------------


def parse_sweep(text: str) -> tuple[str, list]:
    """`KEY=V1,V2,...` -> (KEY, [values]); commas inside brackets or quotes do not split."""
    key, sep, rest = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"--sweep={text}: write --sweep=KEY=V1,V2,...")
    pieces, depth, quote, current = [], 0, "", ""
    for char in rest:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            pieces.append(current)
            current = ""
            continue
        current += char
    pieces.append(current)
    if rest.strip() == "":
        raise ValueError(f"--sweep={text}: {key} has no values (an empty grid)")
    values = []
    for piece in pieces:
        if not piece.strip():
            raise ValueError(f"--sweep={text}: value {piece!r} of {key} does not parse")
        values.append(cli.parse_value(piece.strip()))
    shown = [json.dumps(v, default=repr) for v in values]
    if len(set(shown)) != len(shown):
        raise ValueError(f"--sweep={text}: {key} lists a value twice")
    return key, values


def check_key(config: ml_collections.ConfigDict, key: str, swept: Mapping[str, list]) -> None:
    """ValueError listing the nearest keys when `key` is neither a config key nor a kwarg of
    the optimizer's or schedule's factory (of every optimizer/schedule the grid sweeps)."""
    flat = common.flatten(config)
    kwarg = lanes.kwarg_key(key)
    if kwarg is None and key in flat:
        return
    candidates = set(flat)
    if kwarg is not None:
        block, name = kwarg
        factories = swept.get(f"{block}.name", [config[block].name])
        for factory in factories:
            accepted = cli.accepted_kwargs(block, factory)
            candidates |= {f"{block}.kwargs.{k}" for k in accepted}
            if name not in accepted:
                raise ValueError(
                    f"--sweep key {key} does not exist: {block} {factory!r} takes no argument "
                    f"{name!r}; nearest: {_nearest(key, candidates)}"
                )
        return
    for block in lanes.KWARG_BLOCKS:
        candidates |= {
            f"{block}.kwargs.{k}" for k in cli.accepted_kwargs(block, config[block].name)
        }
    raise ValueError(f"--sweep key {key} does not exist; nearest: {_nearest(key, candidates)}")


def _nearest(key: str, candidates) -> str:
    close = difflib.get_close_matches(key, sorted(candidates), n=5, cutoff=0.4)
    if not close:  # fall back on the keys that end like it
        tail = key.split(".")[-1]
        close = sorted(c for c in candidates if c.split(".")[-1][:3] == tail[:3])[:5]
    return ", ".join(close) if close else "(none close; see the config file)"


def make_grid(
    config: ml_collections.ConfigDict, sweeps: Sequence[tuple[str, list]], seeds: int = 1
) -> dict[str, dict[str, Any]]:
    """{lane name: overrides} of the product of `sweeps` and `seeds` seeds, the first key
    outermost and the seed innermost; every lane's config is checked here."""
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    keys = [k for k, _ in sweeps]
    if len(set(keys)) != len(keys):
        twice = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"--sweep: {', '.join(twice)} swept twice; give one list of values")
    if seeds > 1 and set(keys) & set(lanes.SEED_KEYS):
        raise ValueError("--seeds sets seed and workload.seed; do not also sweep them")
    if not sweeps and seeds == 1:
        raise ValueError("empty grid: give --sweep=KEY=V1,V2,... and/or --seeds=N with N > 1")
    swept = dict(sweeps)
    for key in keys:
        check_key(config, key, swept)
    # Short names (`peak`, `optimizer` for optimizer.name) unless two keys would share one.
    short = {k: k.split(".")[0] if k.endswith(".name") else k.split(".")[-1] for k in keys}
    if len(set(short.values())) != len(short) or "seed" in short.values():
        short = {k: k for k in keys}
    grid = {}
    for point in itertools.product(*(values for _, values in sweeps)):
        for i in range(seeds):
            overrides = dict(zip(keys, point, strict=True))
            parts = [f"{short[k]}={_show(v)}" for k, v in overrides.items()]
            if seeds > 1:
                overrides["seed"] = config.seed + i
                overrides["workload.seed"] = config.workload.seed + i
                parts.append(f"seed={config.seed + i}")
            grid[",".join(parts)] = overrides
    for name, overrides in grid.items():
        lane_config(config, name, overrides)
    return grid


def _show(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text.replace("/", "-").replace(" ", "")


def lane_config(
    config: ml_collections.ConfigDict, name: str, overrides: Mapping[str, Any]
) -> ml_collections.ConfigDict:
    """The lane's full config, its optimizer, schedule and workload checked (naming the lane)."""
    from experiments import train, workloads

    try:
        c = lanes.apply_overrides(config, overrides)
        if "optimizer.name" in overrides or "schedule.name" in overrides:
            c = cli.apply_kwargs_overrides(c, _switched(overrides), log=lambda *a, **k: None)
        import optlib.registry

        entry = optlib.registry.get(c.optimizer.name)
        entry.check_kwargs(c.optimizer.kwargs)
        entry.build(train.build_schedule(c), **c.optimizer.kwargs.to_dict())
        if any(k.startswith("workload.") and k != "workload.seed" for k in overrides):
            workloads.make(c.workload)
    except ValueError as e:
        raise ValueError(f"lane {name}: {e}") from None
    return c


def _switched(overrides) -> cli.KwargsOverrides:
    """A swept optimizer or schedule name drops the base kwargs its factory does not take."""
    result = cli.KwargsOverrides()
    for block in lanes.KWARG_BLOCKS:
        if f"{block}.name" in overrides:
            result.switched.add(block)
            for key, value in overrides.items():
                kwarg = lanes.kwarg_key(key)
                if kwarg and kwarg[0] == block:
                    result.kwargs[block][kwarg[1]] = value
    return result


def swept_keys(grid: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The swept keys in grid order, without the seed keys."""
    keys: list[str] = []
    for overrides in grid.values():
        keys += [k for k in overrides if k not in keys and k not in lanes.SEED_KEYS]
    return keys


def choose_mode(
    config: ml_collections.ConfigDict, grid: Mapping[str, Mapping[str, Any]], mode: str = "auto"
) -> tuple[str, str]:
    """(mode, why): `vmap` when no swept key changes shapes or the optimizer."""
    if mode not in MODES:
        raise ValueError(f"--mode={mode!r}: choose one of {', '.join(MODES)}")
    if mode == "processes":
        return mode, "asked for"
    from experiments import workloads

    values: dict[str, list] = {}
    for overrides in grid.values():
        for key, value in overrides.items():
            values.setdefault(key, []).append(value)
    import jax

    workload = workloads.make(config.workload)
    abstract_params = jax.eval_shape(workload.init_params, jax.random.PRNGKey(0))
    problems = lanes.blockers(config, values, abstract_params)
    if config.init_params_from:
        problems["init_params_from"] = "lanes cannot start from another run's params"
    if not problems:
        return "vmap", "every swept key is a seed or a numeric hyperparameter"
    key, why = next(iter(problems.items()))
    if mode == "vmap":
        raise ValueError(f"--mode=vmap: {key} forces --mode=processes: {why}")
    return "processes", f"{key}: {why}"


# Running -------------------------------------------------------------------------------------


def run(
    config: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    grid: Mapping[str, Mapping[str, Any]],
    mode: str = "auto",
    *,
    devices=None,
    stop_after: int | None = None,
    log=print,
) -> dict:
    """Trains every lane of `grid` ({name: overrides}); returns the sweep record (sweep.json).

    `stop_after` stops a vmap sweep at that step (a stand-in for a crash in tests).
    """
    import jax

    from experiments import train

    workdir = pathlib.Path(workdir)
    if not grid:
        raise ValueError("empty grid: no lanes to train")
    previous = _read(workdir)
    if previous is not None and mode == "auto":
        mode = previous["mode"]
        why = "as before"
    else:
        mode, why = choose_mode(config, grid, mode)
    _check_same_sweep(workdir, previous, grid, mode)
    record = {
        "mode": mode,
        "keys": swept_keys(grid),
        "steps": config.steps,
        "lanes": [
            {
                "name": name,
                "overrides": dict(overrides),
                "seed": overrides.get("seed", config.seed),
                "status": "pending",
                "step": 0,
                "eval": {},
            }
            for name, overrides in grid.items()
        ],
    }
    if previous is not None:
        old = {lane["name"]: lane for lane in previous["lanes"]}
        for lane in record["lanes"]:
            for field in ("status", "step", "eval"):
                lane[field] = old.get(lane["name"], lane)[field]
    log(f"sweep: {len(grid)} lanes, mode {mode} ({why})", file=sys.stderr)
    rundir.check_config(workdir, config)
    _write(workdir, record)
    if mode == "vmap":
        try:
            summary = train.train(
                config, workdir, devices=devices, stop_after=stop_after, lanes=grid
            )
        except train.NonFiniteLossError:
            for lane in record["lanes"]:
                lane["status"] = "diverged"
            _write(workdir, record)
            raise
        for lane in record["lanes"]:
            result = summary["lanes"][lane["name"]]["eval"]
            lane["step"] = summary["step"]
            lane["eval"] = _finite(result)
            lane["status"] = _status(result, summary["step"], config.steps)
        _write(workdir, record)
        return record
    if jax.process_index() == 0:
        rundir.write_config(workdir, config)
    for lane in record["lanes"]:
        name = lane["name"]
        lane_dir = workdir / lanes.LANES_DIR / name
        if lane["status"] in ("done", "diverged") and _finished(lane_dir, lane, config.steps):
            log(f"sweep: lane {name} is {lane['status']}; skipped", file=sys.stderr)
            continue
        c = lane_config(config, name, grid[name])
        if c.fork.parent and (pathlib.Path(c.fork.parent) / SWEEP_FILE).exists():
            with c.unlocked():  # a branch of a sweep: each lane forks its own parent lane
                c.fork.parent = str(pathlib.Path(c.fork.parent) / lanes.LANES_DIR / name)
        log(f"sweep: lane {name}", file=sys.stderr)
        try:
            summary = train.train(c, lane_dir, devices=devices)
        except train.NonFiniteLossError as e:
            lane.update(status="diverged", error=str(e), eval={})
            _write(workdir, record)
            log(f"sweep: lane {name} diverged: {e}", file=sys.stderr)
            continue
        lane.update(
            step=summary["step"],
            eval=_finite(summary["eval"]),
            status=_status(summary["eval"], summary["step"], config.steps),
        )
        _write(workdir, record)
    return record


def _status(result: dict, step: int, steps: int) -> str:
    if result and not all(math.isfinite(v) for v in result.values()):
        return "diverged"
    return "done" if step >= steps else "pending"


def _finite(result: dict) -> dict:
    """Eval metrics for JSON: a non-finite value becomes null."""
    return {k: (v if math.isfinite(v) else None) for k, v in result.items()}


def _finished(lane_dir: pathlib.Path, lane: dict, steps: int) -> bool:
    """A processes-mode lane that needs no more steps: done at `steps`, or diverged."""
    if lane["status"] == "diverged":
        return True
    return lane["step"] >= steps and (lane_dir / "metrics.jsonl").exists()


def _read(workdir: pathlib.Path) -> dict | None:
    path = workdir / SWEEP_FILE
    return json.loads(path.read_text()) if path.exists() else None


def _write(workdir: pathlib.Path, record: dict) -> None:
    import jax

    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / SWEEP_FILE).write_text(json.dumps(record, indent=2) + "\n")


def _check_same_sweep(workdir, previous: dict | None, grid, mode: str) -> None:
    if previous is None:
        return
    old = {lane["name"]: lane["overrides"] for lane in previous["lanes"]}
    new = json.loads(json.dumps({n: dict(o) for n, o in grid.items()}))
    if old != new or previous["mode"] != mode:
        raise ValueError(
            f"workdir {workdir} holds another sweep ({len(old)} lanes, mode "
            f"{previous['mode']}; this one: {len(new)} lanes, mode {mode}). Use a new --workdir."
        )


def grid_of(workdir: str | pathlib.Path) -> tuple[dict, str]:
    """The grid and mode of the sweep in `workdir` (for branching it)."""
    record = _read(pathlib.Path(workdir))
    if record is None:
        raise ValueError(f"{workdir} is not a sweep (no {SWEEP_FILE})")
    return {lane["name"]: lane["overrides"] for lane in record["lanes"]}, record["mode"]


def is_sweep(workdir: str | pathlib.Path) -> bool:
    return (pathlib.Path(workdir) / SWEEP_FILE).exists()


# The command ---------------------------------------------------------------------------------


def define_flags() -> dict:
    from absl import flags
    from ml_collections import config_flags

    holders = {
        "config": config_flags.DEFINE_config_file(
            "config", None, "the base config of every lane", lock_config=True
        ),
        "workdir": flags.DEFINE_string("workdir", None, "the sweep's directory"),
        "sweep": flags.DEFINE_multi_string(
            "sweep", [], "KEY=V1,V2,...: a swept config key and its values (repeatable)"
        ),
        "seeds": flags.DEFINE_integer("seeds", 1, "seeds per grid point (init and data order)"),
        "mode": flags.DEFINE_enum("mode", "auto", list(MODES), "one program, or one per lane"),
    }
    flags.mark_flags_as_required(["config", "workdir"])
    return holders


def table(record: dict) -> str:
    """One line per lane: status, step and the final eval metrics."""
    keys = sorted({k for lane in record["lanes"] for k in lane["eval"]})
    lines = [" | ".join(["lane", "status", "step", *keys])]
    for lane in record["lanes"]:
        values = [lane["eval"].get(k) for k in keys]
        shown = ["-" if v is None else f"{v:.4g}" for v in values]
        lines.append(" | ".join([lane["name"], lane["status"], str(lane["step"]), *shown]))
    return "\n".join(lines)


def main(argv, holders: dict, overrides: cli.KwargsOverrides | None = None) -> None:
    from absl import app

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from experiments.distributed import maybe_initialize_distributed

    maybe_initialize_distributed()
    value = {name: holder.value for name, holder in holders.items()}

    def run_sweep():
        config = cli.apply_kwargs_overrides(
            copy.deepcopy(value["config"]), overrides or cli.KwargsOverrides()
        )
        sweeps = [parse_sweep(text) for text in value["sweep"]]
        grid = make_grid(config, sweeps, value["seeds"])
        return run(config, value["workdir"], grid, value["mode"])

    record = cli.run_reporting_errors(run_sweep)
    print(table(record))
    print(f"sweep: {pathlib.Path(value['workdir']) / SWEEP_FILE}")
    sys.stdout.flush()


if __name__ == "__main__":
    cli.run_command(main, define_flags())
