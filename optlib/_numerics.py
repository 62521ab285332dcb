"""Numeric helpers shared by the optimizers: dtypes, tree reductions, schedules, state lookup.

Every optimizer module takes these from here, so a rule (the dtype of a scalar statistic, how a
tree inner product is reduced) is written once.

**Precision.** Statistics are computed in at least float32: ``wide(dtype)`` is the dtype a
leaf's arithmetic runs in, ``scalar_dtype(tree)`` the dtype of a tree-wide scalar (a norm, a
step size, a weight sum). bfloat16 params get float32 statistics (a bfloat16 running sum of
squared norms stops growing after a few hundred steps), float64 params (the golden tests)
get float64. Scalars are real: complex64 params give float32 scalars.

**Complex leaves.** A complex leaf is treated as a pair of real numbers (C^n as R^2n), as in
optax: the squared norm is :math:`\\sum |x|^2`, the inner product is
:math:`\\mathrm{Re}\\langle a, b\\rangle = \\sum (\\mathrm{Re}\\, a\\, \\mathrm{Re}\\, b
+ \\mathrm{Im}\\, a\\, \\mathrm{Im}\\, b)`, and gradients are expected conjugated (the
descent direction, ``jnp.conj(jax.grad(f)(z))``), as optax's tests feed them. Real leaves take
a branch without any complex operation, so their results are bit-for-bit those of the plain
formula.

**Where this differs from** ``optax.tree`` **and why.**

* dtype: ``optax.tree.vdot`` and ``optax.tree.norm`` reduce in the leaves' dtype (a bfloat16
  tree is summed in bfloat16); here each leaf is cast to at least float32 before the reduction.
* reduction: ``optax.tree.vdot`` is a ``tensordot`` per leaf. Here it is an elementwise product
  followed by ``jnp.sum``, which XLA fuses with whatever produced its operands into one loop
  that reads them once. A dot is its own kernel on XLA:CPU, so an operand that is computed
  (``d / D`` in MoMo-Adam) would first be written to a params-sized buffer; the optimizers'
  step times were tuned by counting these memory passes (see `optlib.momo`).
* complex: ``optax.tree.vdot`` returns the complex :math:`\\langle a, b\\rangle` (first
  argument conjugated); step-size rules need the real inner product, so `tree_real_dot`
  returns :math:`\\mathrm{Re}\\langle a, b\\rangle` in a real dtype.
* empty trees: the sums return a zero of the requested dtype (``optax.tree.sum`` returns the
  Python int 0), so a scalar state keeps its dtype when a mask leaves no leaf.
* order: per-leaf sums are added left to right in flattening order (the golden tests compare
  bit-for-bit across refactors, so the order is fixed here).
"""

from typing import Any

import jax
import jax.numpy as jnp
import optax


def wide(dtype: Any) -> jnp.dtype:
    """The dtype a leaf's arithmetic runs in: at least float32 (complex stays complex)."""
    return jnp.promote_types(dtype, jnp.float32)


def real_dtype(dtype: Any) -> jnp.dtype:
    """The real counterpart of `dtype` (complex64 -> float32); real dtypes unchanged."""
    dtype = jnp.dtype(dtype)
    return jnp.finfo(dtype).dtype if jnp.issubdtype(dtype, jnp.complexfloating) else dtype


def is_complex(x: Any) -> bool:
    """Whether an array (or anything with a dtype) is complex."""
    return jnp.issubdtype(x.dtype, jnp.complexfloating)


def complex_if(dtype: Any, x: Any) -> jnp.dtype:
    """`dtype` (a real dtype), or its complex counterpart when `x` is complex."""
    return jnp.promote_types(dtype, jnp.complex64) if is_complex(x) else jnp.dtype(dtype)


def scalar_dtype(tree: Any) -> jnp.dtype:
    """The real dtype of tree-wide scalar statistics: float32, or wider when a leaf is."""
    dtype = jnp.dtype(jnp.float32)
    for leaf in jax.tree.leaves(tree):
        dtype = jnp.promote_types(dtype, leaf.dtype)
    return real_dtype(dtype)


def abs_sq(x: jax.Array) -> jax.Array:
    """:math:`|x|^2` elementwise, real (``jnp.square`` for real `x`)."""
    if is_complex(x):
        return jnp.square(jnp.real(x)) + jnp.square(jnp.imag(x))
    return jnp.square(x)


def sq_norm(x: jax.Array, dtype: Any) -> jax.Array:
    """:math:`\\sum |x|^2` of one leaf, computed in `dtype` (a real dtype)."""
    return jnp.sum(abs_sq(x.astype(complex_if(dtype, x))))


def real_dot(x: jax.Array, y: jax.Array, dtype: Any) -> jax.Array:
    """:math:`\\mathrm{Re}\\langle x, y\\rangle` of two leaves, computed in `dtype` (real)."""
    if is_complex(x) or is_complex(y):
        re = jnp.real(x).astype(dtype) * jnp.real(y).astype(dtype)
        return jnp.sum(re + jnp.imag(x).astype(dtype) * jnp.imag(y).astype(dtype))
    return jnp.sum(x.astype(dtype) * y.astype(dtype))


def tree_sum(scalars: Any, dtype: Any = jnp.float32) -> jax.Array:
    """The sum of a tree of scalars, left to right; a zero of `dtype` for an empty tree."""
    leaves = jax.tree.leaves(scalars)
    return sum(leaves) if leaves else jnp.zeros([], dtype)


def tree_real_dot(a: Any, b: Any, dtype: Any) -> jax.Array:
    """:math:`\\mathrm{Re}\\langle a, b\\rangle` over two trees, each leaf reduced in `dtype`."""
    return tree_sum(jax.tree.map(lambda x, y: real_dot(x, y, dtype), a, b), dtype)


def tree_sq_norm(tree: Any, dtype: Any) -> jax.Array:
    """:math:`\\|tree\\|^2 = \\sum |x|^2` over all leaves, each reduced in `dtype`."""
    return tree_sum(jax.tree.map(lambda x: sq_norm(x, dtype), tree), dtype)


def lr_at(learning_rate: optax.ScalarOrSchedule, count: jax.Array, dtype: Any) -> jax.Array:
    """The learning rate (a number or a schedule of the step count) at `count`, in `dtype`."""
    value = learning_rate(count) if callable(learning_rate) else learning_rate
    return jnp.asarray(value, dtype)


def unzip(treedef: Any, per_leaf: list, n: int) -> tuple:
    """`n` trees of `treedef` from one n-tuple per leaf (also for a tree without leaves)."""
    return tuple(treedef.unflatten([t[i] for t in per_leaf]) for i in range(n))


def value_at(hyperparameter: Any, count: jax.Array) -> Any:
    """A hyper-parameter that may be a schedule: its value at `count`, else itself unchanged.

    Constants are returned as they are (not cast), so their arithmetic is what it was before
    schedules were accepted.
    """
    return hyperparameter(count) if callable(hyperparameter) else hyperparameter


def find_states(opt_state: Any, state_type: type) -> list:
    """Every `state_type` node anywhere inside `opt_state`, in flattening order."""
    is_state = lambda node: isinstance(node, state_type)  # noqa: E731
    return [s for s in jax.tree.leaves(opt_state, is_leaf=is_state) if is_state(s)]


def unwrap(value: Any) -> Any:
    """The array inside a one-leaf wrapper (an NNX optimizer's ``OptArray``), else `value`."""
    leaves = jax.tree.leaves(value)
    return leaves[0] if len(leaves) == 1 else value


MASKED = object()  # stands for a params leaf that a masked transform did not see


def _is_masked(node: Any) -> bool:
    return isinstance(node, optax.MaskedNode)


def leaves_at_param_paths(tree: Any, params: Any, name: str) -> list:
    """One entry per leaf of `params`: the leaf of `tree` at the same key path, or `MASKED`.

    `tree` is a param-shaped part of an optimizer state. Paths are compared by their keys
    only, so the node types may differ: an NNX optimizer wraps each leaf in its own variable
    type where ``nnx.state(model, nnx.Param)`` has ``Param``. Under ``optax.masked`` (or
    ``optax.multi_transform``) `tree` holds ``optax.MaskedNode`` in place of a leaf or, for
    a prefix mask, of a whole subtree; every params leaf under it is `MASKED`.
    """
    found = dict(jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_masked)[0])
    out = []
    used = set()
    for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
        for end in range(len(path), -1, -1):
            prefix = tuple(path[:end])
            if prefix in found and (end == len(path) or _is_masked(found[prefix])):
                used.add(prefix)
                value = found[prefix]
                out.append(MASKED if _is_masked(value) else value)
                break
        else:
            raise ValueError(
                f"{name}: the params do not match the optimizer state: no entry for the leaf "
                f"{jax.tree_util.keystr(path)}"
            )
    if len(used) != len(found):
        extra = sorted(jax.tree_util.keystr(k) for k in set(found) - used)
        raise ValueError(f"{name}: the optimizer state has leaves the params lack: {extra}")
    return out


def merge_states_into_params(
    opt_state: Any,
    params: Any,
    state_type: type,
    field: Any,
    leaf_fn: Any,
    caller: str,
    made_by: str,
) -> Any:
    """A tree shaped like `params` from every `state_type` found in `opt_state`.

    For each params leaf that some `state_type` acts on (its `field(state)` tree holds the
    leaf rather than a ``MaskedNode``), the result is `leaf_fn(state, param_leaf, entry)`;
    params leaves no state acts on are returned as they are. Several states may act on
    disjoint parts (``optax.multi_transform`` groups); two acting on one leaf is an error.
    """
    states = find_states(opt_state, state_type)
    name = state_type.__name__
    if not states:
        raise ValueError(
            f"{caller} needs an optimizer state holding a {name} (made by {made_by}), "
            f"found 0: no {name} in it"
        )
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(params)
    out = [leaf for _, leaf in with_paths]
    owner = [None] * len(out)
    for i, state in enumerate(states):
        for j, entry in enumerate(leaves_at_param_paths(field(state), params, caller)):
            if entry is MASKED:
                continue
            if owner[j] is not None:
                raise ValueError(
                    f"{caller} found {len(states)} {name}s acting on the same leaf "
                    f"{jax.tree_util.keystr(with_paths[j][0])}: it needs one per leaf"
                )
            owner[j] = i
            out[j] = leaf_fn(state, out[j], entry)
    return treedef.unflatten(out)


def find_state(opt_state: Any, state_type: type, caller: str, made_by: str) -> Any:
    """The one `state_type` node anywhere inside `opt_state`, or a ValueError.

    Searches the whole state pytree, so the transform may sit inside ``optax.chain``,
    ``optax.masked``, ``optax.inject_hyperparams``, ``optax.MultiSteps`` and the like.

    Args:
      opt_state: the optimizer state to search.
      state_type: the NamedTuple class to look for.
      caller: the public function asking (named in the error).
      made_by: the transform that creates `state_type` (named in the error).
    """
    found = find_states(opt_state, state_type)
    if len(found) == 1:
        return found[0]
    name = state_type.__name__
    what = f"0: no {name} in it" if not found else f"{len(found)} {name}s"
    raise ValueError(
        f"{caller} needs an optimizer state holding exactly one {name} (made by {made_by}), "
        f"found {what}"
    )


def reject_complex(tree: Any, name: str) -> None:
    """A ValueError naming the first complex leaf of `tree`, for optimizers without support."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if is_complex(leaf):
            raise ValueError(
                f"{name} does not support complex parameters: "
                f"params{jax.tree_util.keystr(path)} is {jnp.dtype(leaf.dtype).name}"
            )


def require_params(params: Any, name: str, extra: str = "") -> None:
    """Raises the ValueError every optimizer gives when `update` is called without params."""
    if params is None:
        raise ValueError(
            f"{name} needs the current params: call update(grads, state, params{extra})"
        )
