"""optlib: optimizers for optimization research, as optax gradient transformations."""

from optlib import masks
from optlib._lamb import ScaleByLambState, lamb, scale_by_lamb
from optlib._lars import ScaleByLarsState, lars, scale_by_lars
from optlib._tvlars import ScaleByTvlarsState, scale_by_tvlars, tvlars, tvlars_factor

__version__ = "0.1.0"

__all__ = [
    "ScaleByLambState",
    "ScaleByLarsState",
    "ScaleByTvlarsState",
    "lamb",
    "lars",
    "masks",
    "scale_by_lamb",
    "scale_by_lars",
    "scale_by_tvlars",
    "tvlars",
    "tvlars_factor",
]
