"""optlib: optimizers for optimization research, as optax gradient transformations."""

from optlib import masks, spectral
from optlib._averaging import AveragingState, averaged_params, with_averaging
from optlib._dog import ScaleByDogState, dog, ldog, scale_by_dog
from optlib._lamb import ScaleByLambState, lamb, scale_by_lamb
from optlib._lars import ScaleByLarsState, lars, scale_by_lars
from optlib._momo import MomoAdamState, MomoState, momo, momo_adam
from optlib._prospect import ProspectState, prospect, prospect_epochs, prospect_tables
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
    "AveragingState",
    "MomoAdamState",
    "MomoState",
    "ProspectState",
    "SAMState",
    "ScaleByDogState",
    "ScaleByLambState",
    "ScaleByLarsState",
    "ScaleByTvlarsState",
    "ScheduleFreeState",
    "averaged_params",
    "dog",
    "lamb",
    "lars",
    "ldog",
    "masks",
    "momo",
    "momo_adam",
    "prospect",
    "prospect_epochs",
    "prospect_tables",
    "recompute_batch_stats",
    "sam",
    "sam_perturbation",
    "sam_value_and_grad",
    "scale_by_dog",
    "scale_by_lamb",
    "scale_by_lars",
    "scale_by_tvlars",
    "schedule_free",
    "schedule_free_adamw",
    "schedule_free_eval_params",
    "schedule_free_sgd",
    "spectral",
    "tvlars",
    "tvlars_factor",
    "with_averaging",
]
