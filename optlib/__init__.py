"""optlib: optimizers for optimization research, as optax gradient transformations."""

from optlib import masks, spectral
from optlib._accumulation import MultiStepsState, multi_steps
from optlib._averaging import AveragingState, averaged_params, with_averaging
from optlib._dog import ScaleByDogState, dog, ldog, scale_by_dog
from optlib._hypergradient import HypergradientState, adam_hd, hypergradient, sgd_hd
from optlib._lamb import ScaleByLambState, lamb, scale_by_lamb
from optlib._lars import ScaleByLarsState, lars, scale_by_lars
from optlib._momo import MomoAdamState, MomoState, momo, momo_adam
from optlib._prospect import ProspectState, prospect, prospect_epochs, prospect_tables
from optlib._sam import SAMState, sam, sam_perturbation, sam_value_and_grad
from optlib._schedule_free import (
    ScheduleFreeState,
    recompute_batch_stats,
    recompute_batch_stats_nnx,
    schedule_free,
    schedule_free_adamw,
    schedule_free_eval_params,
    schedule_free_sgd,
)
from optlib._tvlars import ScaleByTvlarsState, scale_by_tvlars, tvlars, tvlars_factor

__version__ = "0.1.0"

__all__ = [
    "AveragingState",
    "HypergradientState",
    "MomoAdamState",
    "MomoState",
    "MultiStepsState",
    "ProspectState",
    "SAMState",
    "ScaleByDogState",
    "ScaleByLambState",
    "ScaleByLarsState",
    "ScaleByTvlarsState",
    "ScheduleFreeState",
    "adam_hd",
    "averaged_params",
    "dog",
    "hypergradient",
    "lamb",
    "lars",
    "ldog",
    "masks",
    "momo",
    "momo_adam",
    "multi_steps",
    "prospect",
    "prospect_epochs",
    "prospect_tables",
    "recompute_batch_stats",
    "recompute_batch_stats_nnx",
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
    "sgd_hd",
    "spectral",
    "tvlars",
    "tvlars_factor",
    "with_averaging",
]
