"""A gallery of every schedule family at typical settings, written as one PNG grid.

Usage (matplotlib is needed, the `plots` extra):

    python -m schedules.gallery --out docs/schedules_gallery.png
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np

import schedules

DEFAULT_OUT = Path("docs/schedules_gallery.png")

# A panel: title, number of steps plotted, [(label, schedule)], optional y-scale.
Panel = tuple[str, int, list[tuple[str, Callable]], str]


def _norm_profiles(n: int = 1000) -> dict[str, np.ndarray]:
    """Synthetic gradient-norm histories: flat, large early, and rising at the end."""
    x = np.linspace(0.0, 1.0, n)
    early = np.interp(x, [0, 0.003, 0.02, 0.03, 0.1, 1], [15, 6, 4, 2, 1, 1])
    return {
        "flat": np.ones(n),
        "large early": early,
        "large early, rising tail": early * np.interp(x, [0, 0.6, 1], [1, 1, 3]),
    }


def panels() -> list[Panel]:
    """The gallery's panels, in order."""
    s = schedules
    profiles = _norm_profiles()
    shapes = [
        (shape, s.wsd(1.0, 1000, 50, decay_fraction=0.2, decay_shape=shape, end_value=0.02))
        for shape in s.DECAY_SHAPES
    ]
    base = s.warmup(1.0, 50)
    return [
        (
            "linear_decay, cosine, polynomial (5% warm-up)",
            1000,
            [
                ("constant", s.constant(1.0)),
                ("linear_decay", s.linear_decay(1.0, 1000, warmup_steps=50)),
                ("cosine", s.cosine(1.0, 1000, warmup_steps=50)),
                ("polynomial k=2", s.polynomial(1.0, 1000, 2.0, warmup_steps=50)),
                ("cosine to 0.1", s.cosine(1.0, 1000, 0.1, warmup_steps=50)),
            ],
            "linear",
        ),
        (
            "warmup shapes",
            300,
            [(shape, s.warmup(1.0, 200, 0.01, shape)) for shape in s.WARMUP_SHAPES],
            "linear",
        ),
        (
            "no horizon: rsqrt, exponential",
            1000,
            [
                ("rsqrt W=100", s.rsqrt(1.0, 100)),
                ("exponential half-life 200", s.exponential(1.0, 200, warmup_steps=50)),
            ],
            "linear",
        ),
        ("wsd decay shapes (20% decay, end 0.02)", 1000, shapes, "linear"),
        (
            "wsd_s (checkpoints 300, 600, 1000)",
            1050,
            [
                ("cycle, linear", s.wsd_s(1.0, [300, 600, 1000], 30)),
                (
                    "cumulative, inverse m=0.1",
                    s.wsd_s(
                        1.0,
                        [300, 600, 1000],
                        30,
                        decay_of="cumulative",
                        decay_shape="inverse-proportional",
                        end_value=0.1,
                    ),
                ),
            ],
            "linear",
        ),
        (
            "branch: WSD decays off one run (1-sqrt, 20%)",
            1000,
            [("base", base)]
            + [(f"branch at {k}", s.branch(base, k, k // 4, "1-sqrt")) for k in (250, 500, 800)],
            "linear",
        ),
        (
            "rex",
            1000,
            [
                (f"alpha={a}{' (paper)' if a == 0.5 else ''}", s.rex(1.0, 1000, alpha=a))
                for a in (0.9, 0.5, 0.0, -2.0)
            ],
            "linear",
        ),
        (
            "uba (phi=2 is cosine)",
            1000,
            [(f"phi={p}", s.uba(1.0, 1000, p)) for p in (0.5, 1.0, 2.0, 4.0, 10.0)],
            "linear",
        ),
        (
            "linear_scaling (10 steps/epoch, 90 epochs)",
            900,
            [
                (
                    f"batch {b}",
                    s.linear_scaling(0.1, b, 256, 50, decay_boundaries=[300, 600, 800]),
                )
                for b in (256, 1024, 4096)
            ],
            "linear",
        ),
        (
            "power (seq 4096, 10% final decay)",
            20000,
            [
                (
                    f"batch {b}",
                    s.power(b, 4096, warmup_steps=500, total_steps=20000, decay_steps=2000),
                )
                for b in (256, 512, 1024)
            ],
            "linear",
        ),
        (
            "infinite (MAE-1 settings)",
            1000,
            [
                (
                    f"{shape} cool-down",
                    s.infinite(1.0, 50, 250, 0.25, 800, 200, cooldown_shape=shape),
                )
                for shape in ("cosine", "rsqrt")
            ],
            "linear",
        ),
        (
            "rewarm: 3 tasks, 1% re-warm to peak",
            3000,
            [("rewarm", s.rewarm(1.0, [1000, 1000, 1000]))],
            "linear",
        ),
        (
            "gradient-norm histories (input to refined)",
            1000,
            [(name, _history(g)) for name, g in profiles.items()],
            "log",
        ),
        (
            "refined (sgd: l2^-2; adam: l1^-1)",
            1000,
            [(f"{name}, sgd", s.refined(g, "sgd")) for name, g in profiles.items()]
            + [("large early, adam", s.refined(profiles["large early"], "adam"))],
            "linear",
        ),
        (
            "join, offset, stretch",
            1000,
            [
                (
                    "join(warmup, cosine, const)",
                    s.join(
                        [s.warmup(1.0, 100), s.cosine(1.0, 600, 0.2), s.constant(0.2)],
                        [100, 700],
                    ),
                ),
                ("offset(cosine, 300)", s.offset(s.cosine(0.8, 500), 300)),
                ("stretch(cosine, 2)", s.stretch(s.cosine(0.6, 500), 2.0)),
            ],
            "linear",
        ),
    ]


def _history(values: np.ndarray) -> Callable:
    """A recorded history shown as a function of the step (for plotting only)."""
    table = np.asarray(values)

    def lookup(step):
        return table[np.clip(np.asarray(step), 0, len(table) - 1)]

    return lookup


def main(argv: list[str] | None = None) -> Path:
    """Writes the gallery PNG; returns its path."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="PNG path to write")
    parser.add_argument("--dpi", type=int, default=110)
    args = parser.parse_args(argv)

    import matplotlib  # plots extra; imported here so the package never needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = panels()
    cols = 4
    rows = -(-len(grid) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows))
    axes = np.asarray(axes).ravel()
    for ax, (title, steps, lines, yscale) in zip(axes, grid, strict=False):
        t = np.arange(steps)
        for label, schedule in lines:
            ax.plot(t, np.asarray(schedule(t)), label=label, linewidth=1.4)
        ax.set_title(title, fontsize=10)
        ax.set_yscale(yscale)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5, loc="best")
    for ax in axes[len(grid) :]:
        ax.axis("off")
    fig.suptitle("schedules: every family at typical settings (learning rate vs step)")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=args.dpi)
    plt.close(fig)
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
