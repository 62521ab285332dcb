"""optlib: optimizers for optimization research, as optax gradient transformations."""

from optlib import masks
from optlib._lamb import ScaleByLambState, lamb, scale_by_lamb
from optlib._lars import ScaleByLarsState, lars, scale_by_lars
from optlib._sam import SAMState, sam, sam_perturbation, sam_value_and_grad
from optlib._schedule_free import (
    ScheduleFreeState,
    recompute_batch_stats,
    schedule_free,
    schedule_free_adamw,
    schedule_free_eval_params,
    schedule_free_sgd,
)
from optlib._tvlars import ScaleByTvlarsState, scale_by_tvlars, tvlars, tvlars_factor

__version__ = "0.1.0"

__all__ = [
    "SAMState",
    "ScaleByLambState",
    "ScaleByLarsState",
    "ScaleByTvlarsState",
    "ScheduleFreeState",
    "lamb",
    "lars",
    "masks",
    "recompute_batch_stats",
    "sam",
    "sam_perturbation",
    "sam_value_and_grad",
    "scale_by_lamb",
    "scale_by_lars",
    "scale_by_tvlars",
    "schedule_free",
    "schedule_free_adamw",
    "schedule_free_eval_params",
    "schedule_free_sgd",
    "tvlars",
    "tvlars_factor",
]
