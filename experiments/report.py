"""Tables and figures from run directories.

    python -m experiments.report runs/wsd runs/cosine_* [--out runs/report]

Each argument is a workdir; a WSD main branch's decayed branches (`<dir>/branches/at_<k>`) are
included with it. Writes `report.md` (one row per run: steps, examples seen, final eval
metrics, whether the workload's target was reached) and `loss.png` (train and eval loss
against steps and against examples seen) and `lr.png` (the learning rate applied) to `--out`.
A branch's curves start at its fork point; the main branch is drawn dashed. Runs with probes
(`config.probes`) add `noise_scale.png` (B_simple and its terms), `sharpness.png` (next to
its stability threshold) and `layer_ratios.png` (per-layer |update| / |param|).

A sweep directory (`experiments.sweep`, with `sweep.json`) gets its own section: a table of
the final eval metrics per configuration with mean and spread (sample standard deviation)
over seeds and the lanes that diverged, the best configuration by the workload's target
metric, a heat map of that metric over the first two swept keys (`<name>_heatmap.png`), and
the eval and train loss curves of the best lanes (`<name>_curves.png`); the sweeps branched
off it (`branches/at_<k>`) follow it.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import statistics
from collections.abc import Sequence

from experiments.metrics import read_metrics


def expand(workdirs: Sequence[str]) -> list[pathlib.Path]:
    """The workdirs and, after each, its branches in fork-step order."""
    runs = []
    for workdir in workdirs:
        path = pathlib.Path(workdir)
        if not (path / "config.json").exists():
            raise ValueError(f"{workdir} is not a run directory (no config.json)")
        runs.append(path)
        branches = path / "branches"
        if branches.is_dir():
            found = [p for p in branches.iterdir() if (p / "config.json").exists()]
            runs.extend(sorted(found, key=lambda p: int(p.name.split("_")[-1])))
    return runs


def summarize(workdir: pathlib.Path) -> dict:
    config = json.loads((workdir / "config.json").read_text())
    records = read_metrics(workdir)
    train = [r for r in records if r["split"] == "train"]
    evals = [r for r in records if r["split"] == "eval"]
    lineage_path = workdir / "lineage.json"
    lineage = json.loads(lineage_path.read_text()) if lineage_path.exists() else None
    if lineage is not None:
        # Draw a branch from its fork point: the parent's last records at or before it.
        parent = read_metrics(lineage["parent"])
        for split, records in (("train", train), ("eval", evals)):
            before = [r for r in parent if r["split"] == split and r["step"] <= lineage["step"]]
            records[:0] = before[-1:]
    last_train = train[-1] if train else {}
    return {
        "workdir": workdir,
        "name": _label(workdir, config, lineage),
        "config": config,
        "lineage": lineage,
        "train": train,
        "eval": evals,
        "steps": last_train.get("step", 0),  # train records count the updates applied
        "examples": last_train.get("examples", 0),
        "final_eval": evals[-1] if evals else {},
        "throughput": throughput(train),
    }


THROUGHPUT_COLUMNS = {
    "examples_per_second": "examples/s",
    "tokens_per_second": "tokens/s",
    "model_flops_per_step": "GFLOP/step (6N+attn)",
    "xla_flops_per_step": "GFLOP/step (XLA)",
    "mfu": "MFU",
}


def throughput(train: list[dict]) -> dict:
    """The medians over a run's train records of its throughput fields (None where absent, as
    MFU on a device with no known peak)."""
    out = {}
    for key in THROUGHPUT_COLUMNS:
        values = [r[key] for r in train if r.get(key) is not None]
        out[key] = float(statistics.median(values)) if values else None
    return out


def _label(workdir: pathlib.Path, config: dict, lineage: dict | None) -> str:
    schedule = config["schedule"]["name"]
    if lineage is not None:
        branch = config["schedule"].get("branch") or {}
        if branch.get("at_step", -1) >= 0:  # a WSD branch (experiments.branch)
            return f"{workdir.parent.parent.name}/decay@{lineage['step']}"
        return f"{workdir.name} (fork of {pathlib.Path(lineage['parent']).name}@{lineage['step']})"
    return f"{workdir.name} ({config['optimizer']['name']}, {schedule})"


def compute_of(run: dict) -> int:
    """Steps this run computed itself: a branch's steps before its fork were its parent's."""
    start = run["lineage"]["step"] if run["lineage"] else 0
    return max(0, run["steps"] - start)


def table(runs: list[dict]) -> str:
    """One row per run: steps, examples, final eval metrics, then throughput (medians)."""
    metric_keys = sorted({k for r in runs for k in r["final_eval"] if k not in ("split", "step")})
    speed_keys = [k for k in THROUGHPUT_COLUMNS if any(r["throughput"][k] for r in runs)]
    if speed_keys:
        speed_keys.append("mfu")  # shown as n/a where the device's peak is unknown
        speed_keys = list(dict.fromkeys(speed_keys))
    header = ["run", "steps", "own steps", "examples"] + metric_keys
    header += [THROUGHPUT_COLUMNS[k] for k in speed_keys]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run in runs:
        values = [
            run["name"],
            str(run["steps"]),
            str(compute_of(run)),
            f"{run['examples']:,}",
        ] + [_fmt(run["final_eval"].get(k)) for k in metric_keys]
        values += [_speed(k, run["throughput"][k]) for k in speed_keys]
        lines.append("| " + " | ".join(values) + " |")
    return "\n".join(lines)


def _speed(key: str, value) -> str:
    if value is None:
        return "n/a"
    if key == "mfu":
        return f"{value:.1%}"
    if key.endswith("flops_per_step"):
        return f"{value / 1e9:.3g}"
    return f"{value:,.0f}"


def _fmt(value) -> str:
    return "" if value is None else f"{value:.4f}"


def figures(runs: list[dict], out: pathlib.Path) -> list[pathlib.Path]:
    """Every figure that the runs have data for; each is one small function below."""
    import matplotlib

    matplotlib.use("Agg")
    makers = (loss_figure, lr_figure, noise_scale_figure, sharpness_figure, layer_ratio_figure)
    paths = [make(runs, out) for make in makers]
    return [p for p in paths if p is not None]


def _save(fig, path: pathlib.Path) -> pathlib.Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _series(records: list[dict], key: str) -> tuple[list, list]:
    """(steps, values) of the records that hold `key`."""
    kept = [r for r in records if key in r]
    return [r["step"] for r in kept], [r[key] for r in kept]


def loss_figure(runs: list[dict], out: pathlib.Path) -> pathlib.Path:
    """Eval loss against steps and against examples seen; main WSD branches dashed."""
    import matplotlib.pyplot as plt

    fig, (by_step, by_examples) = plt.subplots(1, 2, figsize=(12, 4.5))
    for run in runs:
        style = "--" if run["workdir"].joinpath("branches").is_dir() else "-"
        steps, losses = _series(run["eval"], "eval_loss")
        examples_per_step = run["examples"] / max(run["steps"], 1)
        (line,) = by_step.plot(steps, losses, style, label=run["name"], marker=".")
        by_examples.plot(
            [s * examples_per_step for s in steps], losses, style, color=line.get_color()
        )
    for axis, xlabel in ((by_step, "step"), (by_examples, "examples seen")):
        axis.set_xlabel(xlabel)
        axis.set_ylabel("eval loss")
        axis.grid(alpha=0.3)
    by_step.legend(fontsize=7)
    return _save(fig, out / "loss.png")


def lr_figure(runs: list[dict], out: pathlib.Path) -> pathlib.Path:
    """The learning rate each run applied."""
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(6, 4))
    for run in runs:
        axis.plot(*_series(run["train"], "lr"), label=run["name"])
    axis.set_xlabel("step")
    axis.set_ylabel("learning rate")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    return _save(fig, out / "lr.png")


def noise_scale_figure(runs: list[dict], out: pathlib.Path) -> pathlib.Path | None:
    """B_simple = tr(Sigma) / |G|^2 and its two averaged terms over training."""
    import matplotlib.pyplot as plt

    measured = [run for run in runs if any("noise_scale" in r for r in run["train"])]
    if not measured:
        return None
    keys = (
        ("noise_scale", "noise scale B_simple"),
        ("g2", "|G|^2 (EMA)"),
        ("trace_sigma", "tr Sigma (EMA)"),
    )
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for axis, (key, label) in zip(axes, keys, strict=True):
        for run in measured:
            steps, values = _series(run["train"], key)
            axis.plot(steps, values, label=run["name"])
        axis.set_yscale("log")  # early estimates can be negative: not drawn
        axis.set_xlabel("step")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7)
    return _save(fig, out / "noise_scale.png")


def sharpness_figure(runs: list[dict], out: pathlib.Path) -> pathlib.Path | None:
    """The sharpness (solid) next to its stability threshold (dotted): 2/lr for gradient
    descent, and the preconditioned pair where the optimizer has a second moment."""
    import matplotlib.pyplot as plt

    measured = [run for run in runs if any("sharpness" in r for r in run["train"])]
    if not measured:
        return None
    panels = [("sharpness", "sharpness (top Hessian eigenvalue)")]
    if any("preconditioned_sharpness" in r for run in measured for r in run["train"]):
        panels.append(("preconditioned_sharpness", "preconditioned sharpness (P^-1 H)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    for axis, (key, label) in zip(axes[0], panels, strict=True):
        for run in measured:
            (line,) = axis.plot(*_series(run["train"], key), ".-", label=run["name"])
            steps, threshold = _series(run["train"], f"{key}_threshold")
            axis.plot(steps, threshold, ":", color=line.get_color())
        axis.set_yscale("log")
        axis.set_xlabel("step")
        axis.set_ylabel(f"{label}; dotted: threshold")
        axis.grid(alpha=0.3, which="both")
        axis.legend(fontsize=7)
    return _save(fig, out / "sharpness.png")


def layer_ratio_figure(runs: list[dict], out: pathlib.Path) -> pathlib.Path | None:
    """Per-layer |update| / |param| over training, one panel per run (at most six)."""
    import matplotlib.pyplot as plt

    from experiments.train import RATIO_PREFIX

    measured = [
        run for run in runs if any(k.startswith(RATIO_PREFIX) for r in run["train"] for k in r)
    ][:6]
    if not measured:
        return None
    fig, axes = plt.subplots(1, len(measured), figsize=(6 * len(measured), 4.5), squeeze=False)
    for axis, run in zip(axes[0], measured, strict=True):
        layers = sorted({k for r in run["train"] for k in r if k.startswith(RATIO_PREFIX)})
        for key in layers:
            axis.plot(*_series(run["train"], key), label=key.removeprefix(RATIO_PREFIX))
        axis.set_yscale("log")
        axis.set_title(run["name"], fontsize=9)
        axis.set_xlabel("step")
        axis.set_ylabel("|update| / |param| per layer")
        axis.grid(alpha=0.3, which="both")
        axis.legend(fontsize=6)
    return _save(fig, out / "layer_ratios.png")


# Sweeps --------------------------------------------------------------------------------------


def _sweeps(workdir: pathlib.Path) -> list[pathlib.Path]:
    """A sweep and, after it, the sweeps that branch off it (`branches/at_<k>`)."""
    found = [workdir]
    branches = workdir / "branches"
    if branches.is_dir():
        more = [p for p in branches.iterdir() if (p / "sweep.json").exists()]
        found += sorted(more, key=lambda p: int(p.name.split("_")[-1]))
    return found


def _target(config: dict) -> tuple[str, str]:
    """(metric, mode) of the workload's target; eval_loss and min when it cannot be built."""
    try:
        import ml_collections

        from experiments import workloads

        target = workloads.make(ml_collections.ConfigDict(config["workload"])).target
        return target.metric, target.mode
    except Exception:  # a report must not fail on a workload it cannot rebuild
        return "eval_loss", "min"


def _configurations(record: dict) -> list[dict]:
    """The lanes grouped by their swept values (the seed left out), in grid order."""
    groups: dict[tuple, dict] = {}
    for lane in record["lanes"]:
        point = tuple((k, json.dumps(lane["overrides"].get(k))) for k in record["keys"])
        group = groups.setdefault(
            point,
            {"values": {k: lane["overrides"].get(k) for k in record["keys"]}, "lanes": []},
        )
        group["lanes"].append(lane)
    return list(groups.values())


def _stats(lanes: list[dict], metric: str) -> tuple[float, float, int]:
    """(mean, spread, number diverged) of a metric over lanes; spread = sample std (0 for 1)."""
    values = [lane["eval"].get(metric) for lane in lanes]
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan, len(values)
    mean = sum(finite) / len(finite)
    var = sum((v - mean) ** 2 for v in finite) / max(len(finite) - 1, 1)
    return mean, math.sqrt(var), len(values) - len(finite)


def summarize_sweep(workdir: pathlib.Path) -> dict:
    record = json.loads((workdir / "sweep.json").read_text())
    config = json.loads((workdir / "config.json").read_text())
    metric, mode = _target(config)
    groups = _configurations(record)
    metrics = sorted({k for lane in record["lanes"] for k in lane["eval"]})
    for group in groups:
        group["stats"] = {m: _stats(group["lanes"], m) for m in metrics}
    ranked = [g for g in groups if math.isfinite(g["stats"].get(metric, (math.nan,))[0])]
    ranked.sort(key=lambda g: g["stats"][metric][0] * (1 if mode == "min" else -1))
    lanes = [lane for lane in record["lanes"] if lane["eval"].get(metric) is not None]
    lanes.sort(key=lambda lane: lane["eval"][metric] * (1 if mode == "min" else -1))
    return {
        "workdir": workdir,
        "record": record,
        "metric": metric,
        "mode": mode,
        "metrics": metrics,
        "groups": groups,
        "best": ranked[0] if ranked else None,
        "best_lanes": lanes,
    }


def _short(key: str) -> str:
    return key.split(".")[0] if key.endswith(".name") else key.split(".")[-1]


def sweep_table(sweep: dict) -> str:
    keys = sweep["record"]["keys"]
    header = [_short(k) for k in keys] + ["seeds"]
    header += [f"{m} (mean ± sd)" for m in sweep["metrics"]] + ["diverged"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for group in sweep["groups"]:
        cells = [str(group["values"][k]) for k in keys] + [str(len(group["lanes"]))]
        for m in sweep["metrics"]:
            mean, spread, _ = group["stats"][m]
            cells.append("diverged" if math.isnan(mean) else f"{mean:.4g} ± {spread:.2g}")
        diverged = max(group["stats"][m][2] for m in sweep["metrics"]) if sweep["metrics"] else 0
        cells.append(f"{diverged}/{len(group['lanes'])}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _best_line(sweep: dict) -> str:
    best = sweep["best"]
    if best is None:
        return f"No configuration has a finite {sweep['metric']}."
    point = ", ".join(f"{k}={v}" for k, v in best["values"].items()) or "(the base config)"
    mean, spread, _ = best["stats"][sweep["metric"]]
    return (
        f"Best configuration ({sweep['metric']}, {sweep['mode']} of the mean over seeds): "
        f"{point}: {mean:.4g} ± {spread:.2g} over {len(best['lanes'])} seed(s)."
    )


def sweep_figures(sweep: dict, out: pathlib.Path, prefix: str, top: int = 5) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    keys = sweep["record"]["keys"]
    if len(keys) >= 2:
        # Rows: the first swept key, columns: the second; other keys at their best.
        rows = _ordered({json.dumps(g["values"][keys[0]]) for g in sweep["groups"]})
        cols = _ordered({json.dumps(g["values"][keys[1]]) for g in sweep["groups"]})
        sign = 1 if sweep["mode"] == "min" else -1
        grid = [[math.nan] * len(cols) for _ in rows]
        for g in sweep["groups"]:
            r = rows.index(json.dumps(g["values"][keys[0]]))
            c = cols.index(json.dumps(g["values"][keys[1]]))
            mean = g["stats"][sweep["metric"]][0]
            if not math.isnan(mean) and (math.isnan(grid[r][c]) or sign * mean < sign * grid[r][c]):
                grid[r][c] = mean
        fig, axis = plt.subplots(figsize=(1.2 * len(cols) + 3, 0.6 * len(rows) + 2))
        image = axis.imshow(grid, cmap="viridis" if sign > 0 else "viridis_r", aspect="auto")
        for r, row in enumerate(grid):
            for c, value in enumerate(row):
                text = "div." if math.isnan(value) else f"{value:.3g}"
                axis.text(c, r, text, ha="center", va="center", color="w", fontsize=8)
        axis.set_xticks(range(len(cols)), [json.loads(c) for c in cols])
        axis.set_yticks(range(len(rows)), [json.loads(r) for r in rows])
        axis.set_xlabel(keys[1])
        axis.set_ylabel(keys[0])
        others = f"; {', '.join(keys[2:])} at their best" if len(keys) > 2 else ""
        axis.set_title(f"{sweep['metric']}, mean over seeds{others}", fontsize=9)
        fig.colorbar(image, ax=axis)
        fig.tight_layout()
        path = out / f"{prefix}heatmap.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    fig, axis = plt.subplots(figsize=(7, 4.5))
    for lane in sweep["best_lanes"][:top]:
        run = summarize(sweep["workdir"] / "lanes" / lane["name"])
        steps = [r["step"] for r in run["eval"] if "eval_loss" in r]
        (line,) = axis.plot(
            steps,
            [r["eval_loss"] for r in run["eval"] if "eval_loss" in r],
            marker=".",
            label=lane["name"],
        )
        axis.plot(
            [r["step"] for r in run["train"]],
            [r["loss"] for r in run["train"]],
            color=line.get_color(),
            alpha=0.3,
            lw=0.8,
        )
    axis.set_xlabel("step")
    axis.set_ylabel("eval loss (train loss faint)")
    axis.set_title(f"the {min(top, len(sweep['best_lanes']))} best lanes by {sweep['metric']}")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    fig.tight_layout()
    path = out / f"{prefix}curves.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return paths + [path]


def _ordered(values: set[str]) -> list[str]:
    """JSON-encoded values, numbers in numeric order, anything else after them by text."""
    decoded = [(json.loads(v), v) for v in values]
    numbers = sorted((d, v) for d, v in decoded if isinstance(d, int | float))
    rest = sorted(v for d, v in decoded if not isinstance(d, int | float))
    return [v for _, v in numbers] + rest


def sweep_section(workdir: pathlib.Path, out: pathlib.Path, prefix: str) -> list[str]:
    sweep = summarize_sweep(workdir)
    record = sweep["record"]
    seeds = len({lane["seed"] for lane in record["lanes"]})
    text = [
        f"## Sweep {workdir} ({record['mode']}, {len(record['lanes'])} lanes, {seeds} seed(s))",
        "",
        sweep_table(sweep),
        "",
        _best_line(sweep),
        "",
    ]
    try:
        paths = sweep_figures(sweep, out, prefix)
        text += [f"![{p.stem}]({p.name})" for p in paths] + [""]
    except ImportError:
        text.append("(figures need matplotlib: `pip install -e .[plots]`)")
    return text


def report(workdirs: Sequence[str], out: str | pathlib.Path) -> pathlib.Path:
    """Writes report.md and the figures to `out`; returns the path of report.md."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sweeps = [pathlib.Path(w) for w in workdirs if (pathlib.Path(w) / "sweep.json").exists()]
    plain = [w for w in workdirs if pathlib.Path(w) not in sweeps]
    text = ["# Report", ""]
    if plain:
        runs = [summarize(w) for w in expand(plain)]
        text += [table(runs), ""]
        try:
            paths = figures(runs, out)
            text += [f"![{p.stem}]({p.name})" for p in paths] + [""]
        except ImportError:
            text.append("(figures need matplotlib: `pip install -e .[plots]`)")
    for i, sweep in enumerate(sweeps):
        for j, workdir in enumerate(_sweeps(sweep)):
            text += sweep_section(
                workdir, out, f"sweep{i}_{j}_" if len(sweeps) > 1 else f"sweep{j}_"
            )
    path = out / "report.md"
    path.write_text("\n".join(text) + "\n")
    return path


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdirs", nargs="+")
    parser.add_argument("--out", default="runs/report")
    args = parser.parse_args(argv)
    path = report(args.workdirs, args.out)
    print(path.read_text())
    print(f"report: {path}")


if __name__ == "__main__":
    main()
