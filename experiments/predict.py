"""Fit a loss law on finished runs; rank candidate schedules before training any of them.

    python -m experiments.predict --fit runs/study/wsd runs/study/cosine_1000 \
        [--measured runs/study] [--laws multipower,annealing] \
        [--fractions 0.1,0.2,0.4 --shapes linear,1-sqrt --budgets 600,1000] \
        [--schedule cosine --schedule rex:alpha=0.5 ...] [--optimal] [--out runs/predict]
    python -m experiments.predict verify [--workdir runs/predict_verify] [--seeds 0,1,2]

The first form fits each law of `--laws` (`schedules.laws`) on the eval curves of the `--fit`
runs (a run is read whole: a branch's curve starts with its parent's records up to the fork),
then predicts the final loss of every candidate and prints them ranked by the first law:

* the `--measured` runs (a directory of runs expands to them; a WSD main branch brings its
  branches), with their measured final loss and the relative error of each prediction. A run
  that is also in `--fit` is marked "fit": its error is in-sample;
* WSD schedules `decay fraction x shape x budget` (`schedules.wsd`, warm-up then peak then the
  decay to 0), from `--fractions`, `--shapes`, `--budgets`;
* any registered schedule (`schedules.registry`), `--schedule NAME[:KEY=VALUE,...]` for each
  budget; `peak` and `warmup_steps` default to those of the first `--fit` run where the
  schedule takes them;
* with `--optimal`, each law's law-optimal schedule for each budget (`laws.optimal_lrs`).

It writes `predict.md` (the table and the fitted parameters), `predict.json` and
`predict.png` (the predicted curves over the measured ones) to `--out`. `verify` runs the
char-LM verification of `experiments/predict_verify.py`.

Steps: every record's `step` counts the updates applied. An eval record at step s is the loss
after s updates, which is what the laws take (`lrs[k] = schedule(k)`, the rate of update k).
A train record at step s holds the loss of update s's batch, taken at the params before that
update (after s - 1 updates), and the rate applied in update s, `schedule(s - 1)`; `read_run`
checks the rebuilt schedule against those logged rates.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

KIND_LABELS = {"multipower": "multi-power", "annealing": "annealing"}
DEFAULT_LAWS = ("multipower", "annealing")
ANNEALING_DECAYS = (0.9, 0.95, 0.98, 0.99, 0.995, 0.999)


class Run(NamedTuple):
    """A run's eval curve and the rate of each of its updates.

    Attributes:
      name: a short label (the workdir relative to the runs' common directory).
      workdir: the run directory.
      config: its config.json.
      lrs: `schedule(k)` for k = 0 .. steps - 1 (float64 of the float32 rates trained with).
      steps: the eval steps (updates applied), the parent's before a fork included.
      losses: the eval losses at those steps.
      fork_step: the step a branch forked from its parent, else None.
    """

    name: str
    workdir: pathlib.Path
    config: dict
    lrs: np.ndarray
    steps: np.ndarray
    losses: np.ndarray
    fork_step: int | None

    @property
    def total_steps(self) -> int:
        return int(self.config["steps"])

    @property
    def final_loss(self) -> float | None:
        """The eval loss after the run's last update, None while it is unfinished."""
        if len(self.steps) and int(self.steps[-1]) == self.total_steps:
            return float(self.losses[-1])
        return None

    def curve(self, min_step: int = 1):
        """`(lrs, steps, losses)` for `schedules.laws`, the points before `min_step` left out."""
        keep = self.steps >= min_step
        return self.lrs, self.steps[keep], self.losses[keep]


# ----------------------------------------------------------------------------------------
# Reading runs
# ----------------------------------------------------------------------------------------


def _eval_records(workdir: pathlib.Path, metric: str, until: int | None = None):
    from experiments.metrics import read_metrics

    lineage_path = workdir / "lineage.json"
    points, fork = [], 0
    if lineage_path.exists():  # a branch: its parent's records up to the fork come first
        lineage = json.loads(lineage_path.read_text())
        fork = int(lineage["step"])
        points = _eval_records(pathlib.Path(lineage["parent"]), metric, fork)
    records = read_metrics(workdir)
    own = [
        (r["step"], r[metric])
        for r in records
        if r["split"] == "eval" and metric in r and r["step"] > fork
    ]
    points = points + own
    if until is not None:
        points = [p for p in points if p[0] <= until]
    return points


def schedule_rates(config: dict) -> np.ndarray:
    """The rate of every update of a run, `schedule(k)` for k < steps, rebuilt from its config."""
    import jax
    import jax.numpy as jnp
    import ml_collections

    from experiments import train

    schedule = train.build_schedule(ml_collections.ConfigDict(config))
    steps = jnp.arange(int(config["steps"]), dtype=jnp.int32)
    return np.asarray(jax.jit(schedule)(steps), np.float64)


def read_run(
    workdir: str | pathlib.Path, name: str | None = None, metric: str = "eval_loss"
) -> Run:
    """A run's eval curve (its parent's records up to the fork first) and its per-update rates.

    Raises:
      ValueError: not a run directory; no eval records; a logged learning rate that is not the
        rebuilt schedule's (the laws need the rate of every update, so a run whose optimizer
        applies another rate than its schedule cannot be read this way).
    """
    from experiments import rundir
    from experiments.metrics import read_metrics

    workdir = pathlib.Path(workdir)
    name = name or workdir.name
    if not (workdir / rundir.CONFIG_FILE).exists():
        raise ValueError(f"{name}: {workdir} is not a run directory (no {rundir.CONFIG_FILE})")
    config = rundir.read_config(workdir)
    lrs = schedule_rates(config)
    points = _eval_records(workdir, metric)
    if not points:
        raise ValueError(f"{name}: {workdir} has no eval records with {metric!r}")
    steps = np.array([p[0] for p in points], dtype=np.int64)
    losses = np.array([p[1] for p in points], dtype=np.float64)
    for record in read_metrics(workdir):
        if record["split"] != "train" or "lr" not in record:
            continue
        s = int(record["step"])  # the rate of update s, schedule(s - 1)
        if 1 <= s <= len(lrs) and not math.isclose(
            record["lr"], lrs[s - 1], rel_tol=1e-5, abs_tol=1e-12
        ):
            raise ValueError(
                f"{name}: the learning rate logged at step {s} ({record['lr']!r}) is not the "
                f"rebuilt schedule's rate of that update ({lrs[s - 1]!r}); the laws need the "
                "rate of every update, so this run cannot be fitted or compared"
            )
    lineage = workdir / "lineage.json"
    fork = int(json.loads(lineage.read_text())["step"]) if lineage.exists() else None
    return Run(name, workdir, config, lrs, steps, losses, fork)


def expand(paths: Sequence[str | pathlib.Path]) -> list[pathlib.Path]:
    """Run directories: each path that is a run, then its branches (`branches/*`); a path that
    is not a run stands for the runs directly inside it."""
    from experiments import report

    out = []
    for path in map(pathlib.Path, paths):
        if (path / "config.json").exists():
            out.extend(report.expand([str(path)]))
        elif path.is_dir():
            inside = sorted(p for p in path.iterdir() if (p / "config.json").exists())
            if not inside:
                raise ValueError(f"{path} is neither a run directory nor a directory of runs")
            out.extend(report.expand([str(p) for p in inside]))
        else:
            raise ValueError(f"{path} does not exist")
    seen, unique = set(), []
    for p in out:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique


def read_runs(
    paths: Sequence[str | pathlib.Path], metric: str = "eval_loss", branches: bool = True
) -> list[Run]:
    """`read_run` of every directory of `expand(paths)` (of `paths` as given, each a run, when
    not `branches`), named relative to their common root."""
    if branches:
        dirs = expand(paths)
    else:
        dirs = [pathlib.Path(p) for p in paths]
    names = _short_names(dirs)
    return [read_run(d, n, metric) for d, n in zip(dirs, names, strict=True)]


def _short_names(dirs: list[pathlib.Path]) -> list[str]:
    resolved = [d.resolve() for d in dirs]
    if len(resolved) == 1:
        return [resolved[0].name]
    root = pathlib.Path(*_common_prefix([p.parts for p in resolved]))
    names = []
    for p in resolved:
        rel = p.relative_to(root).as_posix() if p != root else p.name
        names.append(rel.replace("/branches/", "/") or p.name)
    return names


def _common_prefix(parts: list[tuple[str, ...]]) -> tuple[str, ...]:
    prefix = []
    for items in zip(*parts, strict=False):
        if len(set(items)) != 1:
            break
        prefix.append(items[0])
    return tuple(prefix)


# ----------------------------------------------------------------------------------------
# Fitting
# ----------------------------------------------------------------------------------------


def check_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    from schedules import laws

    kinds = tuple(kinds)
    for kind in kinds:
        if kind not in laws.KINDS:
            raise ValueError(
                f"unknown law kind {kind!r}; choose one or more of: {', '.join(laws.KINDS)}"
            )
    if not kinds:
        raise ValueError(f"give at least one law kind: {', '.join(laws.KINDS)}")
    return kinds


def fit_laws(
    runs: Sequence[Run],
    kinds: Sequence[str] = DEFAULT_LAWS,
    min_step: int = 1,
    decays: Sequence[float] = ANNEALING_DECAYS,
    options: dict | None = None,
) -> dict:
    """Each law fitted on the runs' eval curves (points at steps >= `min_step`).

    The annealing law's lambda is chosen on the fitted curves only, among `decays`: the fit with
    the lowest objective is kept (its `.decay` says which). The first lambda is fitted from the
    law's full grid of starts; each next one from the optimum of the one before and the best
    so far (a continuation: one grid instead of one per lambda).

    Args:
      runs: the runs to fit on.
      kinds: law kinds, "multipower" and/or "annealing".
      min_step: leave out the eval points before this step.
      decays: the annealing law's candidate lambdas.
      options: per kind, keyword arguments for `schedules.laws.fit` (e.g. {"multipower":
        {"stage2": "lbfgsb"}}).

    Returns:
      {kind: fitted law}.

    Raises:
      ValueError: bad curves (the message names the run) or an unknown kind.
      schedules.laws.FitError: no starting point converged.
    """
    from schedules import laws

    kinds = check_kinds(kinds)
    options = dict(options or {})
    unknown = sorted(set(options) - set(kinds))
    if unknown:
        raise ValueError(f"fit options for {unknown}, which are not among the laws {list(kinds)}")
    curves = {run.name: run.curve(min_step) for run in runs}
    fitted = {}
    for kind in kinds:
        extra = dict(options.get(kind, {}))
        if kind != "annealing":
            fitted[kind] = laws.fit(kind, curves, **extra)
            continue
        if not decays:
            raise ValueError("give at least one annealing lambda (decays)")
        best, previous, failures = None, None, []
        for decay in decays:
            grid = extra.pop("grid", None) if previous is None else _starts(previous, best)
            try:
                law = laws.fit(kind, curves, decay=decay, grid=grid, **extra)
            except laws.FitError as e:
                failures.append(f"lambda={decay:g}: {e}")
                continue
            previous = law
            if best is None or law.fit_info.objective < best.fit_info.objective:
                best = law
        if best is None:
            raise laws.FitError("; ".join(failures))
        fitted[kind] = best
    return fitted


def _starts(*fitted) -> list[dict]:
    points = []
    for law in fitted:
        if law is not None and law.params not in points:
            points.append(law.params)
    return points


def describe_law(law) -> str:
    params = ", ".join(f"{k}={v:.4g}" for k, v in law.params.items())
    extra = f", lambda={law.decay:g}" if law.kind == "annealing" else ""
    info = law.fit_info
    where = f"; fitted on {', '.join(info.curves)}" if info is not None else ""
    err = f", fit error {law.fit_error:.3%}" if info is not None else ""
    return f"{KIND_LABELS[law.kind]}: {params}{extra}{err}{where}"


# ----------------------------------------------------------------------------------------
# Candidates
# ----------------------------------------------------------------------------------------


class Candidate(NamedTuple):
    """A schedule to predict: its per-update rates, and its measured run if it was trained."""

    name: str
    lrs: np.ndarray
    run: Run | None = None
    in_fit: bool = False


def _rates(schedule, total: int) -> np.ndarray:
    import jax
    import jax.numpy as jnp

    return np.asarray(jax.jit(schedule)(jnp.arange(total, dtype=jnp.int32)), np.float64)


def _check_budgets(budgets: Sequence[int], warmup_steps: int) -> list[int]:
    out = []
    for b in budgets:
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b <= warmup_steps:
            raise ValueError(
                f"budgets must be integers > the warm-up ({warmup_steps} steps), got {b!r}"
            )
        out.append(int(b))
    return out


def wsd_candidates(
    peak: float,
    warmup_steps: int,
    fractions: Sequence[float],
    shapes: Sequence[str],
    budgets: Sequence[int],
    end_value: float = 0.0,
) -> list[Candidate]:
    """WSD (`schedules.wsd`): warm-up, the peak, then a decay over `f * budget` steps."""
    import schedules.registry

    budgets = _check_budgets(budgets, warmup_steps)
    out = []
    for budget in budgets:
        for fraction in fractions:
            if not 0.0 < fraction < 1.0:
                raise ValueError(f"decay fractions must be in (0, 1), got {fraction!r}")
            for shape in shapes:
                if shape not in schedules.DECAY_SHAPES:
                    raise ValueError(
                        f"unknown decay shape {shape!r}; choose one of {schedules.DECAY_SHAPES}"
                    )
                lr = schedules.registry.build(
                    "wsd",
                    total_steps=budget,
                    peak=peak,
                    warmup_steps=warmup_steps,
                    decay_fraction=fraction,
                    decay_shape=shape,
                    end_value=end_value,
                )
                name = f"wsd {shape} f={fraction:g} T={budget}"
                out.append(Candidate(name, _rates(lr, budget)))
    return out


def parse_schedule_spec(spec: str) -> tuple[str, dict]:
    """`NAME[:KEY=VALUE,...]` -> (name, kwargs); values are Python literals or strings."""
    from experiments import cli

    name, _, rest = spec.partition(":")
    kwargs = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"--schedule {spec!r}: write NAME:KEY=VALUE,KEY=VALUE, got {item!r}")
        kwargs[key.strip()] = cli.parse_value(value.strip())
    return name.strip(), kwargs


def registered_candidates(
    specs: Sequence[str], budgets: Sequence[int], peak: float, warmup_steps: int
) -> list[Candidate]:
    """Registered schedules by spec, one per budget; peak/warmup_steps filled where taken."""
    import schedules.registry

    budgets = _check_budgets(budgets, warmup_steps)
    out = []
    for spec in specs:
        name, kwargs = parse_schedule_spec(spec)
        accepted = schedules.registry.accepted_kwargs(name)  # unknown name: lists the choices
        schedules.registry.check_kwargs(name, kwargs)
        defaults = {"peak": peak, "warmup_steps": warmup_steps}
        for key, value in defaults.items():
            if key in accepted and key not in kwargs:
                kwargs[key] = value
        for budget in budgets:
            try:
                lr = schedules.registry.build(name, total_steps=budget, **kwargs)
            except (TypeError, ValueError) as e:
                raise ValueError(f"--schedule {spec!r} at {budget} steps: {e}") from e
            label = spec if ":" in spec else name
            out.append(Candidate(f"{label} T={budget}", _rates(lr, budget)))
    return out


def optimal_candidates(
    fitted: dict, budgets: Sequence[int], peak: float, warmup_steps: int, iterations: int = 10_000
) -> list[Candidate]:
    """Each law's law-optimal schedule (`laws.optimal_lrs`, floor 0) for each budget."""
    from schedules import laws

    budgets = _check_budgets(budgets, warmup_steps)
    return [
        Candidate(
            f"{KIND_LABELS[kind]}-optimal T={budget}",
            laws.optimal_lrs(law, budget, peak, warmup_steps, iterations=iterations),
        )
        for kind, law in fitted.items()
        for budget in budgets
    ]


def measured_candidates(runs: Sequence[Run], fit_runs: Sequence[Run]) -> list[Candidate]:
    fitted = {r.workdir.resolve() for r in fit_runs}
    return [Candidate(r.name, r.lrs, r, r.workdir.resolve() in fitted) for r in runs]


# ----------------------------------------------------------------------------------------
# Predictions
# ----------------------------------------------------------------------------------------


def predict_rows(fitted: dict, candidates: Sequence[Candidate]) -> list[dict]:
    """One row per candidate: predicted final loss per law, measured final, relative errors;
    ranked by the first law's prediction."""
    rows = []
    for c in candidates:
        row = {
            "schedule": c.name,
            "steps": len(c.lrs),
            "in_fit": c.in_fit,
            "fork_step": c.run.fork_step if c.run is not None else None,
            "predicted": {},
        }
        measured = c.run.final_loss if c.run is not None else None
        row["measured"] = measured
        row["error"] = {}
        for kind, law in fitted.items():
            value = float(law.predict(c.lrs, [len(c.lrs)])[0])
            row["predicted"][kind] = value
            if measured is not None:
                row["error"][kind] = (value - measured) / measured
        rows.append(row)
    first = next(iter(fitted))
    rows.sort(key=lambda r: r["predicted"][first])
    return rows


def table(rows: Sequence[dict], kinds: Sequence[str]) -> str:
    """The ranked rows as a markdown table."""
    head = ["rank", "schedule", "steps"] + [f"{KIND_LABELS[k]} law" for k in kinds]
    head += ["measured"] + [f"error ({KIND_LABELS[k]})" for k in kinds]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for i, row in enumerate(rows, 1):
        name = row["schedule"] + (" (fit)" if row["in_fit"] else "")
        cells = [str(i), name, str(row["steps"])]
        cells += [f"{row['predicted'][k]:.4f}" for k in kinds]
        measured = row["measured"]
        cells.append("" if measured is None else f"{measured:.4f}")
        cells += [f"{row['error'][k]:+.2%}" if k in row["error"] else "" for k in kinds]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mean_abs_error(rows: Sequence[dict], kind: str, held_out_only: bool = True) -> float | None:
    errors = [
        abs(r["error"][kind])
        for r in rows
        if kind in r["error"] and not (held_out_only and r["in_fit"])
    ]
    return float(np.mean(errors)) if errors else None


def plot(
    fitted: dict,
    candidates: Sequence[Candidate],
    path: str | pathlib.Path,
    max_unmeasured: int = 8,
    title: str = "",
):
    """Predicted curves (lines) over measured eval losses (dots), one panel per law."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(fitted)
    fig, axes = plt.subplots(1, len(kinds), figsize=(6.5 * len(kinds), 4.6), squeeze=False)
    measured = [c for c in candidates if c.run is not None]
    first = fitted[kinds[0]]
    others = sorted(
        (c for c in candidates if c.run is None),
        key=lambda c: float(first.predict(c.lrs, [len(c.lrs)])[0]),
    )[:max_unmeasured]
    lows, highs = [], []
    for ax, kind in zip(axes[0], kinds, strict=True):
        law = fitted[kind]
        for i, c in enumerate(measured + others):
            color = f"C{i % 10}"
            total = len(c.lrs)
            start = c.run.fork_step if c.run is not None and c.run.fork_step else 1
            first = int(np.argmax(np.cumsum(c.lrs) > 0)) + 1  # the laws need S1 > 0
            grid = np.unique(np.linspace(max(start, first), total, 120).astype(int))
            pred = law.predict(c.lrs, grid)
            style = "--" if c.in_fit else ("-" if c.run is not None else ":")
            label = f"{c.name}{' (fit)' if c.in_fit else ''}"
            ax.plot(grid, pred, style, color=color, lw=1.2, label=label)
            if c.run is not None:
                keep = c.run.steps >= (c.run.fork_step or 0)
                ax.plot(c.run.steps[keep], c.run.losses[keep], ".", color=color, ms=3)
                lows.append(float(c.run.losses.min()))
                highs.append(float(np.quantile(c.run.losses, 0.7)))
            lows.append(float(pred[-1]))
        ax.set_title(f"{KIND_LABELS[kind]} law: lines predicted, dots measured", fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("eval loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    if lows and highs:
        lo, hi = min(lows), max(highs)
        for ax in axes[0]:
            ax.set_ylim(lo - 0.05 * (hi - lo), hi)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return pathlib.Path(path)


def reference_schedule(run: Run) -> tuple[float, int]:
    """(peak, warm-up steps) of a run: its schedule kwargs, else its largest rate and the step
    it first reaches it."""
    kwargs = run.config["schedule"]["kwargs"]
    peak = kwargs.get("peak", kwargs.get("value"))
    warmup = kwargs.get("warmup_steps")
    if peak is None:
        peak = float(run.lrs.max())
    if warmup is None:
        warmup = int(np.argmax(run.lrs >= run.lrs.max()))
    return float(peak), int(warmup)


def predict(
    fit: Sequence[str | pathlib.Path],
    measured: Sequence[str | pathlib.Path] = (),
    kinds: Sequence[str] = DEFAULT_LAWS,
    fractions: Sequence[float] = (),
    shapes: Sequence[str] = ("linear", "1-sqrt"),
    budgets: Sequence[int] = (),
    schedules_: Sequence[str] = (),
    optimal: bool = False,
    peak: float | None = None,
    warmup_steps: int | None = None,
    min_step: int = 1,
    out: str | pathlib.Path | None = None,
    iterations: int = 10_000,
    decays: Sequence[float] = ANNEALING_DECAYS,
    fit_options: dict | None = None,
) -> dict:
    """The command's work: fit, build candidates, rank, write the report. Returns a dict with
    the fitted laws, the ranked rows and the paths written."""
    kinds = check_kinds(kinds)
    if not fit:
        raise ValueError("--fit: name at least one run to fit the laws on")
    # The fitted runs as named (a WSD main branch without its branches), the measured ones
    # expanded; one naming for both.
    fit_dirs = [pathlib.Path(p) for p in fit]
    measured_dirs = expand(measured) if measured else []
    names = dict(zip(fit_dirs + measured_dirs, _short_names(fit_dirs + measured_dirs), strict=True))
    fit_runs = [read_run(d, names[d]) for d in fit_dirs]
    measured_runs = [read_run(d, names[d]) for d in measured_dirs]
    ref_peak, ref_warmup = reference_schedule(fit_runs[0])
    peak = ref_peak if peak is None else float(peak)
    warmup_steps = ref_warmup if warmup_steps is None else int(warmup_steps)
    if (fractions or schedules_ or optimal) and not budgets:
        budgets = sorted({r.total_steps for r in fit_runs})
    # Every candidate that does not need the laws is built (and checked) before fitting.
    candidates = measured_candidates(measured_runs, fit_runs)
    if fractions:
        candidates += wsd_candidates(peak, warmup_steps, fractions, shapes, budgets)
    if schedules_:
        candidates += registered_candidates(schedules_, budgets, peak, warmup_steps)
    if optimal:
        _check_budgets(budgets, warmup_steps)
    elif not candidates:
        raise ValueError(
            "nothing to predict: give --measured runs, --fractions, --schedule or --optimal"
        )
    fitted = fit_laws(fit_runs, kinds, min_step, decays, fit_options)
    if optimal:
        candidates += optimal_candidates(fitted, budgets, peak, warmup_steps, iterations)
    rows = predict_rows(fitted, candidates)
    result = {"laws": fitted, "rows": rows, "candidates": candidates}
    if out is not None:
        out = pathlib.Path(out)
        out.mkdir(parents=True, exist_ok=True)
        text = ["# Predicted final losses", ""]
        text += [f"- {describe_law(law)}" for law in fitted.values()]
        text += ["", table(rows, kinds), ""]
        for kind in kinds:
            error = mean_abs_error(rows, kind)
            if error is not None:
                text.append(
                    f"Mean |relative error| of the {KIND_LABELS[kind]} law on the measured runs "
                    f"not in the fit: {error:.2%}."
                )
        try:
            figure = plot(fitted, candidates, out / "predict.png")
            text += ["", f"![predicted and measured]({figure.name})"]
            result["figure"] = figure
        except ImportError:
            text.append("(the figure needs matplotlib: `pip install -e .[plots]`)")
        (out / "predict.md").write_text("\n".join(text) + "\n")
        (out / "predict.json").write_text(
            json.dumps(
                {
                    "laws": {k: law_record(law) for k, law in fitted.items()},
                    "rows": rows,
                },
                indent=1,
            )
            + "\n"
        )
        result["report"] = out / "predict.md"
    return result


def law_record(law) -> dict:
    record = {"kind": law.kind, "params": law.params, "fit_error": law.fit_error}
    if law.kind == "annealing":
        record["decay"] = law.decay
    if law.fit_info is not None:
        record["fitted_on"] = list(law.fit_info.curves)
        record["fit_message"] = law.fit_info.message
    return record


# ----------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"expected comma-separated numbers, got {text!r}") from None


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"expected comma-separated integers, got {text!r}") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.predict",
        description=__doc__.splitlines()[0],
        epilog="`python -m experiments.predict verify --help`: the char-LM verification.",
    )
    p.add_argument("--fit", nargs="+", required=True, help="runs whose eval curves are fitted")
    p.add_argument("--measured", nargs="*", default=[], help="runs to predict and compare")
    p.add_argument("--laws", default=",".join(DEFAULT_LAWS), help="multipower,annealing")
    p.add_argument("--fractions", default="", help="WSD decay fractions, e.g. 0.1,0.2,0.4")
    p.add_argument("--shapes", default="linear,1-sqrt", help="WSD decay shapes")
    p.add_argument("--budgets", default="", help="total steps of the candidates")
    p.add_argument(
        "--schedule",
        action="append",
        default=[],
        help="a registered schedule NAME[:KEY=VALUE,...] (repeatable)",
    )
    p.add_argument("--optimal", action="store_true", help="each law's law-optimal schedule")
    p.add_argument("--peak", type=float, default=None, help="default: the first --fit run's")
    p.add_argument("--warmup_steps", type=int, default=None, help="default: the first run's")
    p.add_argument("--min_step", type=int, default=1, help="fit the eval points from this step")
    p.add_argument("--iterations", type=int, default=10_000, help="law-optimal descent steps")
    p.add_argument("--out", default="runs/predict")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["verify"]:
        from experiments import predict_verify

        predict_verify.main(argv[1:])
        return
    args = parser().parse_args(argv)
    from experiments import cli
    from schedules import laws

    def run():
        return predict(
            args.fit,
            args.measured,
            [k.strip() for k in args.laws.split(",") if k.strip()],
            _floats(args.fractions),
            [s.strip() for s in args.shapes.split(",") if s.strip()],
            _ints(args.budgets),
            args.schedule,
            args.optimal,
            args.peak,
            args.warmup_steps,
            args.min_step,
            args.out,
            args.iterations,
        )

    try:
        result = cli.run_reporting_errors(run)
    except laws.FitError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    print(result["report"].read_text())
    print(f"report: {result['report']}")


if __name__ == "__main__":
    main()
