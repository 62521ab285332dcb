"""The performance-profile figure: the leading methods in colour, labelled at their lines.

With twenty-odd methods a legend cannot be read, so each track's panel draws its `top`
methods in distinct colours, labels each at the right end of its line (labels pushed apart
where lines end together), and draws every other method as a thin grey line.
"""

from __future__ import annotations

import numpy as np

from experiments.benchmarks.time_to_target.scoring import (
    TAU_MAX,
    TRACKS,
    performance_profiles,
    profile_scores,
    ranked,
)


def _spread(ys: list[float], gap: float) -> list[float]:
    """Label heights near `ys`, at least `gap` apart; ties keep their given order, top first."""
    order = np.lexsort((-np.arange(len(ys)), ys))  # by height; among equals the first on top
    placed = np.array(ys, float)
    for rank in range(1, len(order)):
        below, here = order[rank - 1], order[rank]
        placed[here] = max(placed[here], placed[below] + gap)
    overflow = placed.max() - 1.05 if len(placed) else 0.0
    return list(placed - max(overflow, 0.0))


def plot_profiles(results: dict, path: str, top: int = 6) -> bool:
    """Performance profiles of both tracks as a PNG; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    taus = np.linspace(1.0, TAU_MAX, 601)
    tracks = [(t, title) for t, title in TRACKS if any(t in r for r in results.values())]
    fig, axes = plt.subplots(1, len(tracks), figsize=(6.5 * len(tracks), 5.0), squeeze=False)
    colours = plt.get_cmap("tab10").colors
    styles = ("-", "--", "-.", ":")  # lines that coincide stay distinguishable
    for ax, (track, title) in zip(axes[0], tracks, strict=True):
        costs = {m: r[track] for m, r in results.items() if track in r}
        workloads = sorted({w for c in costs.values() for w in c})
        profiles = performance_profiles(costs, taus)
        scores = profile_scores(costs)
        order = ranked(costs, workloads)
        leaders, rest = order[:top], order[top:]
        for m in rest:
            ax.step(taus, profiles[m], where="post", color="0.75", lw=0.8, zorder=1)
        ends = [float(profiles[m][-1]) for m in leaders]
        for i, (m, y) in enumerate(zip(leaders, _spread(ends, 0.055), strict=True)):
            colour = colours[i % len(colours)]
            style = styles[i % len(styles)]
            ax.step(taus, profiles[m], style, where="post", color=colour, lw=2.0, zorder=3)
            ax.annotate(
                f"{m} ({scores[m]:.2f})",
                xy=(TAU_MAX, ends[i]),
                xytext=(TAU_MAX + 0.08, y),
                color=colour,
                fontsize=8,
                va="center",
                arrowprops={"arrowstyle": "-", "color": colour, "lw": 0.6},
                annotation_clip=False,
            )
        ax.set_xlim(1.0, TAU_MAX)
        ax.set_ylim(-0.02, 1.08)
        ax.set_xlabel("tau (cost / best cost)")
        ax.set_ylabel("fraction of workloads solved within tau of the best")
        ax.set_title(f"{title}: top {len(leaders)} of {len(order)} (grey: the others)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.subplots_adjust(right=0.8 if len(tracks) == 1 else 0.85, wspace=0.8)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True
