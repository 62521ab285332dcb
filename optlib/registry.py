"""Optimizers by name: the one table every training loop, benchmark, demo and test reads.

An `OptimizerEntry` knows three things a loop must not guess:

* how to build the optimizer: `entry.build(learning_rate, **kwargs)`;
* which extra keyword arguments its `update` takes, built from what any loop has at hand:
  `entry.update_kwargs(loss=..., grad_fn=...)` (MoMo takes the mini-batch loss as `value=`,
  SAM's opaque mode a gradient function of the params as `grad_fn=`);
* which params to evaluate: `entry.eval_params(opt_state, params)` (schedule-free's x, an
  iterate average; the trained params for everything else).

A loop that drives any registered optimizer therefore reads

    loss, grads = jax.value_and_grad(loss_fn)(params)
    extra = entry.update_kwargs(loss=loss, grad_fn=jax.grad(loss_fn))
    updates, opt_state = optimizer.update(grads, opt_state, params, **extra)

`entry.grads_per_step` counts the gradient evaluations of one update (SAM: 2), the cost unit
of the time-to-target benchmark.

Example:
  >>> import optlib.registry
  >>> entry = optlib.registry.get("momo")
  >>> opt = entry.build(1.0, weight_decay=0.01)
  >>> sorted(entry.update_kwargs(loss=0.5, grad_fn=None))
  ['value']
"""

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import optax

import optlib

# The extra arguments a loop can supply, by the name the optimizer's `update` takes.
EXTRA_ARGUMENTS = {"value": "loss", "grad_fn": "grad_fn"}


def _no_eval_params(opt_state: Any, params: Any) -> Any:
    del opt_state
    return params


def _average_of(opt_state: Any, params: Any) -> Any:
    return optlib.averaged_params(opt_state, params)


@dataclasses.dataclass(frozen=True)
class OptimizerEntry:
    """How a loop builds and drives one registered optimizer.

    Attributes:
      name: the registry name (what configs write in `optimizer.name`).
      factory: `factory(learning_rate, **kwargs) -> GradientTransformation`.
      needs: the extra keyword arguments of `update`, a subset of `EXTRA_ARGUMENTS`.
      eval_params_fn: `(opt_state, params) -> params` to evaluate, when they differ from the
        trained params.
      grads_per_step: gradient evaluations per update (the loop's one plus any the optimizer
        makes through `grad_fn`).
      base_lr: a learning rate to try first (with a decaying schedule where the optimizer
        takes one; DoG's and MoMo's is their own scale factor). The demo centres its grid on
        it and the time-to-target benchmark searches around it.
      applied_lr_field: the state field holding the learning rate the optimizer actually
        applies, when it sets its own (hypergradient descent's alpha); loops log it as "lr".
    """

    name: str
    factory: Callable[..., optax.GradientTransformation]
    base_lr: float
    needs: tuple[str, ...] = ()
    eval_params_fn: Callable[[Any, Any], Any] = _no_eval_params
    grads_per_step: int = 1
    applied_lr_field: str | None = None

    def __post_init__(self):
        unknown = set(self.needs) - set(EXTRA_ARGUMENTS)
        if unknown:
            raise ValueError(
                f"optimizer {self.name!r}: unknown needs {sorted(unknown)}; "
                f"choose from {sorted(EXTRA_ARGUMENTS)}"
            )

    def accepted_kwargs(self) -> tuple[str, ...]:
        """The keyword arguments `build` accepts besides the learning rate."""
        return _named_parameters(self.factory)

    def check_kwargs(self, kwargs: dict) -> None:
        """A ValueError naming every argument this optimizer does not take, and those it does."""
        unknown = sorted(set(kwargs) - set(self.accepted_kwargs()))
        if unknown:
            raise ValueError(
                f"optimizer {self.name!r} takes no argument {', '.join(unknown)}; "
                f"it takes: {', '.join(self.accepted_kwargs())}"
            )

    def build(
        self, learning_rate: optax.ScalarOrSchedule, **kwargs: Any
    ) -> optax.GradientTransformation:
        """The optimizer with this learning rate (a float or a schedule) and `kwargs`."""
        return self.factory(learning_rate, **kwargs)

    def update_kwargs(self, *, loss: Any = None, grad_fn: Callable | None = None) -> dict:
        """The extra keyword arguments of `update`: `loss` as `value=`, `grad_fn` as itself.

        `loss` is the loss at the params being updated (of the same batch as the gradient);
        `grad_fn(params)` returns that batch's gradient at any params. Only what this
        optimizer takes is returned, so a loop may always pass both.
        """
        available = {"value": loss, "grad_fn": grad_fn}
        missing = [name for name in self.needs if available[name] is None]
        if missing:
            raise ValueError(
                f"optimizer {self.name!r} needs {', '.join(EXTRA_ARGUMENTS[m] for m in missing)}"
                " to update; pass it to update_kwargs"
            )
        return {name: available[name] for name in self.needs}

    def eval_params(self, opt_state: Any, params: Any) -> Any:
        """The params to evaluate: schedule-free's x, an iterate average, else `params`."""
        return self.eval_params_fn(opt_state, params)

    def applied_lr(self, opt_state: Any, scheduled_lr: Any) -> Any:
        """The learning rate the last update applied: the optimizer's own where it sets one
        (found anywhere in the state, e.g. inside a chain), else the schedule's value."""
        if self.applied_lr_field is None:
            return scheduled_lr
        return optax.tree.get(opt_state, self.applied_lr_field)


_NOT_KWARGS = ("learning_rate", "base_optimizer")


def _named_parameters(function: Callable) -> tuple[str, ...]:
    """Keyword arguments of `function` in order, without the learning rate and the base."""
    return tuple(
        name
        for name, parameter in inspect.signature(function).parameters.items()
        if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
        and name not in _NOT_KWARGS
    )


def _forwarding(wrapper: Callable, *targets: Callable) -> Callable:
    """`wrapper`, whose `**kwargs` go to `targets`, with their arguments in its signature.

    Tools that read signatures then see every argument: `optax.inject_hyperparams` (which
    cannot pass through a bare `**kwargs`), config validation and documentation.
    """
    own = [
        p
        for p in inspect.signature(wrapper).parameters.values()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    names = {p.name for p in own}
    forwarded = []
    for target in targets:
        for p in inspect.signature(target).parameters.values():
            variadic = p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            if variadic or p.name in names or p.name in _NOT_KWARGS:
                continue
            names.add(p.name)
            forwarded.append(p.replace(kind=p.KEYWORD_ONLY))
    wrapper.__signature__ = inspect.Signature(own + forwarded)
    return wrapper


def sgd_momentum(
    learning_rate: optax.ScalarOrSchedule,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: Any = 0.0,
) -> optax.GradientTransformation:
    """SGD with heavy-ball (or Nesterov) momentum; `weight_decay` is L2 through the gradient.

    `g + weight_decay * w` enters the momentum, as in PyTorch's SGD and the SAM papers.
    """
    opt = optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov)
    if isinstance(weight_decay, int | float) and weight_decay == 0:
        return opt
    return optax.chain(optax.add_decayed_weights(weight_decay), opt)


def _averaged(factory: Callable[..., optax.GradientTransformation]) -> Callable:
    """`factory` wrapped in iterate averaging (DoG's authors: "must be combined with it")."""

    def build(
        learning_rate: optax.ScalarOrSchedule,
        kind: str = "polynomial",
        gamma: float = 8.0,
        decay: float = 0.999,
        **kwargs,
    ) -> optax.GradientTransformation:
        return optlib.with_averaging(factory(learning_rate, **kwargs), kind, gamma, decay)

    return _forwarding(build, factory)


def _sam(
    learning_rate: optax.ScalarOrSchedule,
    base: str = "sgd_momentum",
    base_kwargs: dict | None = None,
    weight_decay: Any = 0.0,
    **sam_kwargs,
) -> optax.GradientTransformationExtraArgs:
    """SAM around the registered optimizer `base`, which gets the learning rate.

    `weight_decay` goes to the base optimizer (L2 through the gradient for `sgd_momentum`),
    so the step is taken on the decayed gradient at the perturbed point.
    """
    base_kwargs = dict(base_kwargs or {})
    if not (isinstance(weight_decay, int | float) and weight_decay == 0):
        base_kwargs["weight_decay"] = weight_decay
    return optlib.sam(build(base, learning_rate, **base_kwargs), **sam_kwargs)


_forwarding(_sam, optlib.sam)


def _schedule_free(
    learning_rate: optax.ScalarOrSchedule,
    base: str = "sgd",
    base_kwargs: dict | None = None,
    warmup_steps: int = 0,
    **sf_kwargs,
) -> optax.GradientTransformationExtraArgs:
    """Any registered optimizer made schedule-free; both see the same warmed-up rate.

    The warm-up is linear over `warmup_steps` updates, `lr * min(1, (k + 1) / warmup_steps)`
    at 0-based step k, as in `schedule_free_sgd`.
    """

    def warm(count):
        lr = learning_rate(count) if callable(learning_rate) else learning_rate
        if not warmup_steps:
            return lr
        return lr * jnp.minimum(1.0, (count + 1.0) / warmup_steps)

    inner = build(base, warm, **(base_kwargs or {}))
    return optlib.schedule_free(inner, warm, **sf_kwargs)


_forwarding(_schedule_free, optlib.schedule_free)


_ENTRIES = [
    # optax baselines
    OptimizerEntry("adamw", optax.adamw, 3e-3),
    OptimizerEntry("nadamw", optax.nadamw, 3e-3),
    OptimizerEntry("sgd", optax.sgd, 0.1),
    OptimizerEntry("sgd_momentum", sgd_momentum, 0.1),
    # optlib
    OptimizerEntry("dog", optlib.dog, 1.0),
    OptimizerEntry(
        "dog_averaged",
        _averaged(optlib.dog),
        1.0,
        eval_params_fn=_average_of,
    ),
    OptimizerEntry("lamb", optlib.lamb, 1e-2),
    OptimizerEntry("lars", optlib.lars, 1.0),
    OptimizerEntry("ldog", optlib.ldog, 1.0),
    OptimizerEntry(
        "ldog_averaged",
        _averaged(optlib.ldog),
        1.0,
        eval_params_fn=_average_of,
    ),
    OptimizerEntry("momo", optlib.momo, 1.0, needs=("value",)),
    OptimizerEntry("momo_adam", optlib.momo_adam, 1e-2, needs=("value",)),
    OptimizerEntry("sam", _sam, 0.1, needs=("grad_fn",), grads_per_step=2),
    OptimizerEntry(
        "schedule_free",
        _schedule_free,
        1.0,
        eval_params_fn=optlib.schedule_free_eval_params,
    ),
    OptimizerEntry(
        "schedule_free_adamw",
        optlib.schedule_free_adamw,
        2.5e-3,
        eval_params_fn=optlib.schedule_free_eval_params,
    ),
    OptimizerEntry(
        "schedule_free_sgd",
        optlib.schedule_free_sgd,
        1.0,
        eval_params_fn=optlib.schedule_free_eval_params,
    ),
    OptimizerEntry("tvlars", optlib.tvlars, 1.0),
    # Hypergradient descent starts from its base method's learning rate and adapts it.
    OptimizerEntry("sgd_hd", optlib.sgd_hd, 0.1, applied_lr_field="alpha"),
    OptimizerEntry("adam_hd", optlib.adam_hd, 3e-3, applied_lr_field="alpha"),
]

OPTIMIZERS: dict[str, OptimizerEntry] = {entry.name: entry for entry in _ENTRIES}


def names() -> list[str]:
    return sorted(OPTIMIZERS)


def get(name: str) -> OptimizerEntry:
    """The entry of `name`; an unknown name is a ValueError that lists the choices."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of: {', '.join(names())}")
    return OPTIMIZERS[name]


def build(
    name: str, learning_rate: optax.ScalarOrSchedule, **kwargs: Any
) -> optax.GradientTransformation:
    """`get(name).build(learning_rate, **kwargs)`."""
    return get(name).build(learning_rate, **kwargs)
