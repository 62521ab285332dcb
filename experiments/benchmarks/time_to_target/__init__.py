"""Time to target: gradient evaluations each method needs to reach a frozen target, scored as
AlgoPerf does (Dahl et al., "Benchmarking Neural Network Training Algorithms", 2023).

    python -m experiments.benchmarks.time_to_target [--optimizers core] [--plot out.png]

- `methods`: which registered optimizers with which schedules, the shared search space.
- `runner`: the vmapped runner (every seed x configuration of a method in one program), and
  AutoLRS's lane-by-lane path on the training loop.
- `scoring`: costs per track, performance profiles, scores, markdown tables.
- `figures`: the performance-profile figure.
- `cli`: the command (score methods, or freeze targets with `--set-targets`).

The procedure in full and the latest results: BENCHMARKS.md, "Time to target".
"""

from experiments.benchmarks.time_to_target.cli import (
    DEFAULT_WORKLOADS,
    TARGETS_PATH,
    load_targets,
    main,
    run,
    set_targets,
)
from experiments.benchmarks.time_to_target.figures import plot_profiles
from experiments.benchmarks.time_to_target.methods import (
    BASELINE,
    CORE_METHODS,
    METHODS,
    NUM_TUNED,
    Lanes,
    Method,
    build_optimizer,
    lr_table,
    make_lanes,
    search_space,
    select_methods,
)
from experiments.benchmarks.time_to_target.runner import (
    AUTOLRS_STAGES,
    BUDGETS,
    EVAL_EVERY,
    SEQUENTIAL_LANES,
    WORKLOAD_OVERRIDES,
    Problem,
    run_autolrs,
    run_method,
)
from experiments.benchmarks.time_to_target.scoring import (
    TAU_MAX,
    costs_by_track,
    markdown,
    performance_profiles,
    profile_scores,
)

__all__ = [
    "AUTOLRS_STAGES",
    "BASELINE",
    "BUDGETS",
    "CORE_METHODS",
    "DEFAULT_WORKLOADS",
    "EVAL_EVERY",
    "METHODS",
    "NUM_TUNED",
    "SEQUENTIAL_LANES",
    "TARGETS_PATH",
    "TAU_MAX",
    "WORKLOAD_OVERRIDES",
    "Lanes",
    "Method",
    "Problem",
    "build_optimizer",
    "costs_by_track",
    "load_targets",
    "lr_table",
    "main",
    "make_lanes",
    "markdown",
    "performance_profiles",
    "plot_profiles",
    "profile_scores",
    "run",
    "run_autolrs",
    "run_method",
    "search_space",
    "select_methods",
    "set_targets",
]
