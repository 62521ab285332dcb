"""Learning-rate schedules: pure, jittable functions of the absolute 0-based step.

Every factory validates its arguments at construction (ValueError naming the argument) and
returns a function `schedule(step) -> float scalar` usable wherever optax takes a learning
rate (`optax.ScalarOrSchedule`). See `python -m schedules.gallery` for a picture of each.

Two modules work on schedules rather than build them: `schedules.laws` (loss laws that predict
a schedule's loss curve, their fits, law-optimal schedules) and `schedules.theory` (the convex
last-iterate bound, the optimal base rate, horizon transfer). They are imported here but kept
out of `__all__`, which lists the schedule factories. So is `table` (per-step rates from a
look-up, e.g. a law-optimal schedule; registered as "table" so configs can train one), which
has no shape of its own to draw in the gallery.
"""

from schedules import laws as laws  # the modules, re-exported (not factories)
from schedules import theory as theory
from schedules._basic import (
    constant,
    cosine,
    exponential,
    linear_decay,
    polynomial,
    rsqrt,
    warmup,
)
from schedules._budget import linear_scaling, rex, uba
from schedules._compose import branch, join, offset, stretch
from schedules._infinite import infinite, rewarm
from schedules._power import power
from schedules._refine import refined, refined_values
from schedules._table import table as table  # a look-up, registered; not in __all__
from schedules._validation import DECAY_SHAPES, WARMUP_SHAPES
from schedules._wsd import wsd, wsd_s

__all__ = (
    "DECAY_SHAPES",
    "WARMUP_SHAPES",
    "branch",
    "constant",
    "cosine",
    "exponential",
    "infinite",
    "join",
    "linear_decay",
    "linear_scaling",
    "offset",
    "polynomial",
    "power",
    "refined",
    "refined_values",
    "rewarm",
    "rex",
    "rsqrt",
    "stretch",
    "uba",
    "warmup",
    "wsd",
    "wsd_s",
)
