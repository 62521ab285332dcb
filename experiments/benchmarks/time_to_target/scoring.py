"""Costs per track, AlgoPerf's performance profiles and scores, and the markdown tables.

Cost = gradient evaluations until the first evaluation at which the target is reached (steps
x the optimizer's gradient evaluations per step), median over seeds; a run that never reaches
the target costs infinity, and so does a median over seeds where most fail. For workload w let
c*_w be the smallest cost of any method in the track; method m's profile rho_m(tau) is the
fraction of workloads with c_{m,w} <= tau c*_w, and its score is the integral of rho_m over
tau in [1, 4] divided by 3: 1 for a method that is fastest everywhere, 0 for one that never
solves anything within 4x of the best.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from experiments.benchmarks.time_to_target.methods import Lanes, Method

TAU_MAX = 4.0
TRACKS = (("tuned", "tuned (best of 5)"), ("self", "self-tuning (defaults)"))


def costs_by_track(method: Method, lanes: Lanes, steps: np.ndarray, num_seeds: int) -> dict:
    """Median over seeds of the gradient evaluations to target, per track."""
    out = {}
    for track, mask in (("tuned", lanes.tuned), ("self", ~lanes.tuned)):
        if not mask.any():
            continue
        per_seed = [
            np.min(steps[mask & (lanes.seed_index == s)]) * method.grads_per_step
            for s in range(num_seeds)
        ]
        out[track] = float(np.median(per_seed))
    return out


def performance_profiles(
    costs: dict[str, dict[str, float]], taus: np.ndarray
) -> dict[str, np.ndarray]:
    """rho_m(tau) for each method m of `costs[m][workload]` (inf = never reached)."""
    methods = list(costs)
    workloads = sorted({w for c in costs.values() for w in c})
    table = np.array([[costs[m].get(w, np.inf) for w in workloads] for m in methods], float)
    best = np.min(table, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(np.isfinite(best), table / best, np.inf)
    return {
        m: np.mean(ratio[i][None, :] <= taus[:, None], axis=1) if workloads else np.zeros_like(taus)
        for i, m in enumerate(methods)
    }


def profile_scores(costs: dict[str, dict[str, float]], tau_max: float = TAU_MAX) -> dict:
    """AlgoPerf score: the profile integrated over tau in [1, tau_max], divided by tau_max - 1."""
    taus = np.linspace(1.0, tau_max, 3001)
    profiles = performance_profiles(costs, taus)
    return {m: float(np.trapezoid(rho, taus) / (tau_max - 1.0)) for m, rho in profiles.items()}


def geomean(costs: dict[str, float], workloads: Sequence[str]) -> float:
    """Geometric mean cost over `workloads` (inf when any is unsolved): the tie-breaker."""
    return float(np.exp(np.mean([np.log(costs.get(w, np.inf)) for w in workloads])))


def ranked(costs: dict[str, dict[str, float]], workloads: Sequence[str]) -> list[str]:
    """Methods by score, then geometric-mean cost, then name."""
    scores = profile_scores(costs)
    return sorted(costs, key=lambda m: (-scores[m], geomean(costs[m], workloads), m))


def _fmt_cost(cost: float) -> str:
    return "inf" if not np.isfinite(cost) else f"{cost:,.0f}"


def markdown(results: dict, workloads: Sequence[str]) -> str:
    """One table per track: cost per workload per method, and the score; best score first."""
    out = []
    for track, title in TRACKS:
        costs = {m: r[track] for m, r in results.items() if track in r}
        if not costs:
            continue
        scores = profile_scores(costs)
        out.append(f"Track: {title}. Cost = gradient evaluations to target, median of seeds.\n")
        out.append("| method | " + " | ".join(workloads) + " | score |")
        out.append("|---|" + "---:|" * (len(workloads) + 1))
        for m in ranked(costs, workloads):
            cells = " | ".join(_fmt_cost(costs[m].get(w, np.inf)) for w in workloads)
            out.append(f"| {m} | {cells} | {scores[m]:.3f} |")
        out.append("")
    return "\n".join(out)
