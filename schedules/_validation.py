"""Argument checks shared by the schedule factories.

Every factory validates its arguments once, at construction, and raises a ValueError that
names the factory, the argument, what is allowed and what was given. Nothing here runs
inside a traced schedule.

Values (peaks, floors, shape parameters) may be Python numbers, NumPy or jax scalars, or jax
tracers, so a factory can be called under `jax.jit` or `jax.vmap` (a learning-rate sweep
vectorised over the peak). Concrete values are checked and become Python floats; a traced
value cannot be looked at, so it passes unchecked, cast to the default float dtype, and so
do the comparisons it takes part in (such as `end_value <= peak`). Step counts and the
fractions that set them decide the shape of the computation and must be concrete.

"Finite" means finite in the default float dtype, the one the schedules compute in (float32
unless x64 is on): `peak=1e39` overflows float32 to inf and is rejected there.
"""

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Allowed names, shared by the factories (re-exported as schedules.WARMUP_SHAPES etc.).
WARMUP_SHAPES = ("linear", "cosine", "exponential")
DECAY_SHAPES = (
    "linear",
    "cosine",
    "1-sqrt",
    "1-square",
    "rex",
    "exponential",
    "inverse-proportional",
)
# Short names accepted for a decay shape, mapped to the name in DECAY_SHAPES.
DECAY_SHAPE_ALIASES = {"inverse": "inverse-proportional"}


def _fail(where: str, message: str) -> None:
    raise ValueError(f"{where}: {message}")


def _scalar(where: str, name: str, value: Any, what: str, static: bool) -> Any:
    """A jax or NumPy scalar as a Python number; a tracer as it is (or raises if `static`)."""
    if not isinstance(value, (jax.Array, np.ndarray)):
        return value
    if value.shape != ():
        _fail(
            where,
            f"`{name}` must be a scalar, got an array of shape {value.shape}; to sweep values, "
            "build the schedule inside the function you `jax.vmap` over them",
        )
    if not (jnp.issubdtype(value.dtype, jnp.integer) or jnp.issubdtype(value.dtype, jnp.floating)):
        _fail(where, f"`{name}` must be {what}, got an array of dtype {value.dtype}")
    if isinstance(value, jax.core.Tracer):
        if static:
            _fail(
                where,
                f"`{name}` must be a concrete number, not a traced value: it sets the phase "
                "boundaries, which decide the shape of the computation (sweep it with a "
                "Python loop rather than jax.vmap)",
            )
        return value
    return value.item()


def _traced(value: Any) -> bool:
    return isinstance(value, jax.core.Tracer)


def check_int(where: str, name: str, value: Any, minimum: int = 0) -> int:
    """Returns `value` as an int, or raises unless it is a concrete integer >= `minimum`."""
    value = _scalar(where, name, value, f"an integer >= {minimum}", static=True)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        _fail(where, f"`{name}` must be an integer >= {minimum}, got {value!r}")
    value = int(value)
    if value < minimum:
        _fail(where, f"`{name}` must be an integer >= {minimum}, got {value}")
    return value


def check_float(
    where: str,
    name: str,
    value: Any,
    minimum: Any = 0.0,
    maximum: Any = None,
    *,
    open_min: bool = False,
    open_max: bool = False,
    static: bool = False,
) -> Any:
    """Returns `value` as a float, or raises unless it is finite and within the bounds.

    A traced `value` is returned unchecked as an array of the default float dtype (unless
    `static`: then it raises); a traced bound is not checked.
    """
    value = _scalar(where, name, value, "a finite real number", static)
    if _traced(value):
        return jnp.asarray(value, jnp.result_type(float))
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        _fail(where, f"`{name}` must be a finite real number, got {value!r}")
    value = float(value)
    minimum = None if _traced(minimum) else minimum
    maximum = None if _traced(maximum) else maximum
    lo = "-inf" if minimum is None else f"{minimum:g}"
    hi = "inf" if maximum is None else f"{maximum:g}"
    left = "(" if open_min or minimum is None else "["
    right = ")" if open_max or maximum is None else "]"
    interval = f"{left}{lo}, {hi}{right}"
    bad = not math.isfinite(value)
    if minimum is not None:
        bad = bad or value < minimum or (open_min and value == minimum)
    if maximum is not None:
        bad = bad or value > maximum or (open_max and value == maximum)
    if bad:
        _fail(where, f"`{name}` must be a finite number in {interval}, got {value!r}")
    dtype = jnp.result_type(float)
    if abs(value) > float(jnp.finfo(dtype).max):
        _fail(
            where,
            f"`{name}` must be a finite number in {interval}, got {value!r}, which is not "
            f"finite in {jnp.dtype(dtype).name}, the dtype the schedules compute in "
            "(enable x64 for float64)",
        )
    return value


def check_choice(where: str, name: str, value: Any, choices: Sequence[str]) -> str:
    """Returns `value`, or raises unless it is one of `choices`."""
    if not isinstance(value, str) or value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        _fail(where, f"`{name}` must be one of {allowed}, got {value!r}")
    return value


def check_array(
    where: str,
    name: str,
    values: Any,
    *,
    minimum: float | None = None,
    strict: bool = False,
    min_size: int = 1,
    index: str = "index",
    hint: str = "",
) -> np.ndarray:
    """`values` as a 1-D float64 array of at least `min_size` finite numbers, each >= `minimum`
    (> with `strict`) when given; otherwise a ValueError naming the first bad entry by `index`
    ("step" for per-step rates) and ending with `hint`."""
    what = "a non-empty 1-D array of" if min_size == 1 else f"a 1-D array of at least {min_size}"
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        _fail(where, f"{name} must be {what} numbers")
    if array.ndim != 1 or array.size < min_size:
        _fail(where, f"{name} must be {what} numbers, got shape {array.shape}")
    bad = ~np.isfinite(array)
    allowed = "finite"
    if minimum is not None:
        bad |= (array <= minimum) if strict else (array < minimum)
        allowed = f"finite and {'>' if strict else '>='} {minimum:g}"
    if bad.any():
        i = int(np.argmax(bad))
        count = f" ({int(bad.sum())} such entries)" if bad.sum() > 1 else ""
        _fail(
            where,
            f"{name} must be {allowed}, got {float(array[i])!r} at {index} {i}{count}{hint}",
        )
    return array


def check_callable(where: str, name: str, value: Any) -> Callable:
    """Returns `value`, or raises unless it is callable (a schedule)."""
    if not callable(value):
        _fail(where, f"`{name}` must be a schedule (a callable of the step), got {value!r}")
    return value


def check_ints(
    where: str, name: str, values: Any, minimum: int = 0, allow_empty: bool = False
) -> tuple[int, ...]:
    """Returns `values` as a tuple of ints, or raises unless a sequence of integers >= minimum."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        try:
            values = list(values)
        except TypeError:
            _fail(where, f"`{name}` must be a sequence of integers, got {values!r}")
    out = tuple(check_int(where, f"{name}[{i}]", v, minimum) for i, v in enumerate(values))
    if not out and not allow_empty:
        _fail(where, f"`{name}` must be a non-empty sequence of integers >= {minimum}, got []")
    return out


def check_increasing_ints(
    where: str, name: str, values: Any, minimum: int = 0, allow_empty: bool = False
) -> tuple[int, ...]:
    """Returns `values` as a tuple of ints, or raises unless strictly increasing and >= minimum."""
    out = check_ints(where, name, values, minimum, allow_empty)
    if any(b <= a for a, b in zip(out, out[1:], strict=False)):
        _fail(where, f"`{name}` must be strictly increasing, got {list(out)}")
    return out


def check_le(where: str, lhs_name: str, lhs: Any, rhs_name: str, rhs: Any) -> None:
    """Raises unless lhs <= rhs; both names appear in the message. Traced values pass."""
    if not (_traced(lhs) or _traced(rhs)) and lhs > rhs:
        _fail(where, f"`{lhs_name}` must be <= `{rhs_name}`, got {lhs!r} > {rhs!r}")


def check_peak_and_warmup(
    where: str, peak: Any, warmup_steps: Any, init_value: Any, warmup_shape: Any
) -> tuple[float, int, float, str]:
    """Validates a peak and the warm-up towards it, the arguments most factories share."""
    peak = check_float(where, "peak", peak, 0.0)
    warmup_steps = check_int(where, "warmup_steps", warmup_steps, 0)
    init_value = check_float(where, "init_value", init_value, 0.0, peak)
    warmup_shape = check_choice(where, "warmup_shape", warmup_shape, WARMUP_SHAPES)
    if (
        warmup_shape == "exponential"
        and warmup_steps > 0
        and not _traced(init_value)
        and (init_value <= 0.0)
    ):
        _fail(where, f"`init_value` must be > 0 for warmup_shape='exponential', got {init_value!r}")
    return peak, warmup_steps, init_value, warmup_shape


def check_decay_shape(where: str, shape: Any, name: str = "decay_shape") -> str:
    """Returns the canonical name of a decay shape (aliases such as "inverse" resolved)."""
    shape = check_choice(where, name, shape, DECAY_SHAPES + tuple(DECAY_SHAPE_ALIASES))
    return DECAY_SHAPE_ALIASES.get(shape, shape)


def check_decay_end(where: str, shape: str, end_value: float, name: str = "end_value") -> None:
    """Geometric and inverse-proportional decays need a positive floor."""
    if (
        shape in ("exponential", "inverse-proportional")
        and not _traced(end_value)
        and (end_value <= 0.0)
    ):
        _fail(
            where,
            f"`{name}` must be > 0 for decay_shape={shape!r} (it decays geometrically or "
            f"inverse-proportionally towards it), got {end_value!r}",
        )


def check_decay(
    where: str,
    shape: Any,
    end_value: Any,
    maximum: float | None = None,
    *,
    shape_name: str = "decay_shape",
    end_name: str = "end_value",
) -> tuple[str, float]:
    """Validates a decay's shape and its floor in [0, maximum] (> 0 where the shape needs it)."""
    shape = check_decay_shape(where, shape, shape_name)
    end_value = check_float(where, end_name, end_value, 0.0, maximum)
    check_decay_end(where, shape, end_value, end_name)
    return shape, end_value
