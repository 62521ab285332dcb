"""Per-leaf specifications: masks and stacked-layer axes.

Several optimizers take per-leaf options: which leaves get weight decay, which get a trust
ratio, and how many leading axes of a leaf index stacked layers (for parameters of a layer
stack built with `jax.lax.scan` or `flax.linen.scan`). Each option is given as

* `None`: the default for every leaf;
* a pytree with the structure of the params, or a prefix of it (`{"encoder": False}` covers
  every leaf under `encoder`);
* a callable `params -> pytree`, evaluated on the params (or abstract params) it is used with.

Masks follow optax's convention: `True` means the transformation applies to the leaf.

Under `optax.inject_hyperparams`, name callable specs in `static_args` (optax treats every
other callable argument as a schedule), or pass the resolved tree instead of the callable.
"""

import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

PerLeafSpec = Any | Callable[[optax.Params], Any] | None


def _path_string(path) -> str:
    return jax.tree_util.keystr(path, simple=True, separator="/")


def resolve_per_leaf(spec: PerLeafSpec, params: optax.Params, name: str, default: Any) -> list:
    """Returns one value per leaf of `params` (flattened order), or raises a ValueError.

    Args:
      spec: None, a pytree matching (a prefix of) `params`, or a callable of `params`.
      params: the parameters the spec applies to (may be abstract).
      name: the user-facing argument name, used in error messages.
      default: the per-leaf value when `spec` is None.
    """
    leaves, treedef = jax.tree.flatten(params)
    if spec is None:
        return [default] * len(leaves)
    tree = spec(params) if callable(spec) else spec
    try:
        full = jax.tree.broadcast(tree, params)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"{name} must be a pytree with the structure of the params (or a prefix of it), "
            f"or a callable returning one; got structure {jax.tree.structure(tree)} for params "
            f"with structure {treedef}"
        ) from error
    values = treedef.flatten_up_to(full)
    return values


def _as_bool(value: Any) -> bool | None:
    """A Python bool for a bool, np.bool_ or concrete 0-d bool array; None otherwise."""
    if isinstance(value, bool):
        return value
    if isinstance(value, jax.core.Tracer):
        return None
    if isinstance(value, np.bool_ | np.ndarray | jax.Array):
        array = np.asarray(value)
        if array.shape == () and array.dtype == np.bool_:
            return bool(array)
    return None


def resolve_mask(mask: PerLeafSpec, params: optax.Params, name: str) -> list[bool]:
    """Resolves a mask to one Python bool per leaf (True = applies).

    Leaves may be Python bools, ``np.bool_`` or concrete 0-d bool arrays (as optax accepts).
    A mask that resolves to a single value while the params are a tree is an error: that is
    what ``optax.inject_hyperparams`` produces when it calls a mask function with the step
    count (it treats every callable as a schedule unless it is named in ``static_args``).
    """
    if mask is not None:
        resolved = mask(params) if callable(mask) else mask
        params_def = jax.tree.structure(params)
        if jax.tree_util.treedef_is_leaf(jax.tree.structure(resolved)) and not (
            jax.tree_util.treedef_is_leaf(params_def) or params_def.num_leaves == 0
        ):
            raise ValueError(
                f"{name} resolved to the single value {resolved!r} for params that are a "
                f"tree. If optax.inject_hyperparams called your mask function with the step "
                f"count (it treats callables as schedules), name it in static_args, e.g. "
                f"optax.inject_hyperparams(opt, static_args=({name!r},)); to set every leaf "
                f"alike, pass a tree, e.g. jax.tree.map(lambda _: False, params)"
            )
        mask = resolved
    values = resolve_per_leaf(mask, params, name, True)
    out = []
    for value in values:
        flag = _as_bool(value)
        if flag is None:
            raise ValueError(
                f"{name} must hold bools (True where the transformation applies): Python "
                f"bools, np.bool_ or concrete bool scalars; got a leaf {value!r} of type "
                f"{type(value).__name__}"
            )
        out.append(flag)
    return out


def resolve_layer_axes(layer_axes: PerLeafSpec, params: optax.Params, name: str) -> list[int]:
    """Resolves a stacked-layer spec to a number of leading layer axes per leaf."""
    values = resolve_per_leaf(layer_axes, params, name, 0)
    for value, leaf in zip(values, jax.tree.leaves(params), strict=True):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must hold ints >= 0 (leading layer axes), got {value!r}")
        if value > leaf.ndim:
            raise ValueError(
                f"{name} asks for {value} leading layer axes on a leaf of shape {leaf.shape}"
            )
    return values


def _reject_step_count(params: Any, helper: str) -> None:
    """Fails loudly when optax.inject_hyperparams calls a mask helper as if it were a schedule.

    inject_hyperparams treats every callable argument as a schedule of the step count unless
    it is named in `static_args`; the helper would then see an int32 scalar and silently mask
    every leaf.
    """
    leaves = jax.tree.leaves(params)
    if len(leaves) == 1 and getattr(leaves[0], "ndim", None) == 0:
        dtype = getattr(leaves[0], "dtype", None)
        if dtype is not None and jnp.issubdtype(dtype, jnp.integer):
            raise ValueError(
                f"optlib.masks.{helper} was called with a step count instead of params: "
                "optax.inject_hyperparams treats callables as schedules. Name the mask "
                "argument in static_args, e.g. optax.inject_hyperparams(optlib.lamb, "
                "static_args=('weight_decay_mask',)), or pass the resolved tree."
            )


def exclude_1d(params: optax.Params) -> Any:
    """A mask that is False on leaves with ndim <= 1 (biases, norm scales) and True elsewhere.

    Example:
      >>> import jax.numpy as jnp, optlib
      >>> params = {"w": jnp.ones((3, 2)), "b": jnp.ones(2)}
      >>> optlib.masks.exclude_1d(params)
      {'b': False, 'w': True}
    """
    _reject_step_count(params, "exclude_1d")
    return jax.tree.map(lambda leaf: leaf.ndim > 1, params)


def exclude_paths(pattern: str) -> Callable[[optax.Params], Any]:
    """A mask that is False on leaves whose key path matches the regex `pattern`.

    Key paths are joined with "/", e.g. "encoder/layer_0/LayerNorm/scale". The regex is
    searched, not anchored, like TF-Addons' `exclude_from_weight_decay` lists.

    Example:
      >>> import jax.numpy as jnp, optlib
      >>> params = {"dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}}
      >>> optlib.masks.exclude_paths(r"bias|norm")(params)
      {'dense': {'bias': False, 'kernel': True}}
    """
    regex = re.compile(pattern)

    def mask(params):
        _reject_step_count(params, "exclude_paths")
        return jax.tree_util.tree_map_with_path(
            lambda path, _: regex.search(_path_string(path)) is None, params
        )

    return mask


def only_paths(pattern: str) -> Callable[[optax.Params], Any]:
    """A mask that is True only on leaves whose key path matches the regex `pattern`."""
    regex = re.compile(pattern)

    def mask(params):
        _reject_step_count(params, "only_paths")
        return jax.tree_util.tree_map_with_path(
            lambda path, _: regex.search(_path_string(path)) is not None, params
        )

    return mask


def stacked_layers(pattern: str = r"(^|/)layers(/|$)", num_axes: int = 1):
    """A `layer_axes` spec: leaves whose key path matches `pattern` are layer stacks.

    Parameters of a block repeated with `jax.lax.scan` / `flax.linen.scan` carry the layer
    index on their leading axis. Layer-wise optimizers then give each slice along the first
    `num_axes` axes its own trust ratio instead of one ratio for the whole stack.

    Example:
      >>> import jax.numpy as jnp, optlib
      >>> params = {"layers": {"w": jnp.ones((4, 8, 8))}, "head": jnp.ones((8, 2))}
      >>> optlib.masks.stacked_layers("layers")(params)
      {'head': 0, 'layers': {'w': 1}}
    """
    if num_axes < 1:
        raise ValueError(f"num_axes must be an int >= 1, got {num_axes!r}")
    regex = re.compile(pattern)

    def layer_axes(params):
        _reject_step_count(params, "stacked_layers")
        return jax.tree_util.tree_map_with_path(
            lambda path, leaf: (
                num_axes
                if regex.search(_path_string(path)) is not None and leaf.ndim > num_axes
                else 0
            ),
            params,
        )

    return layer_axes
