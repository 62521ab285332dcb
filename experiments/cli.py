"""What the experiment commands share: kwargs overrides, quiet logs, one-line failures.

`--config.optimizer.kwargs.NAME=VALUE` and `--config.schedule.kwargs.NAME=VALUE` may name any
argument the optimizer's (or schedule's) factory takes, not only those the config file
happens to set, and `--config.optimizer.name=lars` switches optimizers from the command line:
the file's kwargs that the new optimizer does not take (AdamW's `b2` for LARS) are dropped with
a note, and every kwarg is checked against the factory's signature, so a typo is an error that
lists the accepted names. Values are Python literals (`0.9`, `True`, `"1-sqrt"`, `(1, 2)`);
anything else is taken as a string.

Errors a user can fix from the command line (a bad config, a NaN loss, Ctrl-C) end the
command with one line on stderr instead of a traceback; `--verbosity` brings Orbax's and
absl's INFO logs back.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import re
import sys
from collections.abc import Callable, Sequence

import ml_collections

BLOCKS = ("optimizer", "schedule")
_KWARG = re.compile(r"^--config\.(optimizer|schedule)\.kwargs\.([A-Za-z_]\w*)(?:=(.*))?$", re.S)
_NAME = re.compile(r"^--config\.(optimizer|schedule)\.name(?:=|$)")


@dataclasses.dataclass
class KwargsOverrides:
    """kwargs given on the command line per block, and the blocks whose `name` was switched."""

    kwargs: dict[str, dict] = dataclasses.field(default_factory=lambda: {b: {} for b in BLOCKS})
    switched: set[str] = dataclasses.field(default_factory=set)


def split_kwargs_overrides(argv: Sequence[str]) -> tuple[list[str], KwargsOverrides]:
    """Takes the kwargs overrides out of `argv` (config_flags cannot add keys to a locked config).

    Returns the remaining argv and the overrides; `--config.<block>.name` stays in argv (it is
    an ordinary key) and is noted in `switched`.
    """
    rest, overrides = [], KwargsOverrides()
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        match = _KWARG.match(arg)
        if match:
            block, key, value = match.groups()
            if value is None:  # `--config.optimizer.kwargs.b1 0.9`
                if i + 1 >= len(args):
                    raise ValueError(f"{arg} needs a value")
                value, i = args[i + 1], i + 1
            overrides.kwargs[block][key] = parse_value(value)
        else:
            name = _NAME.match(arg)
            if name:
                overrides.switched.add(name.group(1))
            rest.append(arg)
        i += 1
    return rest, overrides


def parse_value(text: str):
    """A Python literal when `text` is one, else the string itself (`1-sqrt`, `adamw`)."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def accepted_kwargs(block: str, name: str) -> tuple[str, ...]:
    """The keyword arguments the factory of optimizer or schedule `name` takes."""
    if block == "optimizer":
        import optlib.registry

        return optlib.registry.get(name).accepted_kwargs()
    import schedules.registry

    return schedules.registry.accepted_kwargs(name)


def apply_kwargs_overrides(
    config: ml_collections.ConfigDict, overrides: KwargsOverrides, log=print
) -> ml_collections.ConfigDict:
    """`config` with the command line's kwargs, after dropping a switched-away block's kwargs."""
    for block in BLOCKS:
        node = config[block]
        accepted = accepted_kwargs(block, node.name)
        kwargs = node.kwargs.to_dict()
        if block in overrides.switched:
            dropped = {k: v for k, v in kwargs.items() if k not in accepted}
            if dropped:
                shown = ", ".join(f"{k}={v!r}" for k, v in dropped.items())
                log(
                    f"note: {block} {node.name!r} does not take the config file's {shown}; dropped",
                    file=sys.stderr,
                )
            kwargs = {k: v for k, v in kwargs.items() if k in accepted}
        given = overrides.kwargs[block]
        unknown = sorted(set(given) - set(accepted))
        if unknown:
            raise ValueError(
                f"{block} {node.name!r} takes no argument {', '.join(unknown)}; it takes: "
                f"{', '.join(accepted)}"
            )
        kwargs.update(given)
        with config.unlocked():
            node.kwargs = ml_collections.ConfigDict(kwargs)
    return config


def quiet_logs(argv: Sequence[str]) -> None:
    """Only warnings from absl loggers (Orbax logs every save at INFO) unless --verbosity."""
    if any(arg.startswith(("--verbosity", "-v=", "--v=")) for arg in argv):
        return
    from absl import logging

    logging.set_verbosity(logging.WARNING)


def run_command(main: Callable, holders: dict) -> None:
    """Runs an experiment command: `main(argv, holders, overrides)` under absl.

    Takes the kwargs overrides out of sys.argv first (config_flags reads sys.argv), quiets the
    logs, and turns a mistake in the flags themselves (a config key the file does not have, a
    config file that does not load) into one line and exit code 2 instead of a traceback.
    """
    from absl import app

    sys.argv, overrides = split_kwargs_overrides(sys.argv)
    quiet_logs(sys.argv)
    parsed = False

    def run(argv):
        nonlocal parsed
        if "config" in holders:
            holders["config"].value.keys()  # a config file that failed to load raises here
        parsed = True
        return main(argv, holders, overrides)

    try:
        app.run(run)
    except (KeyError, AttributeError, TypeError, ValueError, OSError) as e:
        if parsed or os.environ.get("EXPERIMENTS_TRACEBACK"):
            raise
        print(f"error: {_flag_error(e, sys.argv)}", file=sys.stderr)
        raise SystemExit(2) from None


def _flag_error(error: Exception, argv: Sequence[str]) -> str:
    """One line for an error raised while parsing a command's flags."""
    text = str(error.args[0]) if error.args else str(error)
    while len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":  # KeyError's repr, nested
        text = ast.literal_eval(text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if isinstance(error, KeyError | AttributeError) and lines:
        key = lines[0].strip("'\"")
        culprits = [a.split("=")[0] for a in argv if a.startswith("--config.") and f".{key}" in a]
        where = culprits[0] if culprits else "--config"
        return " ".join([f"{where}: the config has no field {key!r} (it is locked).", *lines[1:]])
    reasons = [line for line in lines if line.startswith("[Errno")]
    return "--config: " + (reasons[0] if reasons else " ".join(lines))


def run_reporting_errors(fn: Callable[[], object]) -> object:
    """Runs `fn`; a config error, NaN loss or Ctrl-C becomes one line on stderr and an exit code.

    Exit codes: 2 for a bad config (ValueError), 1 for a NaN loss or checkpoints that do not
    restore, 130 for Ctrl-C. With
    `EXPERIMENTS_TRACEBACK=1` in the environment errors propagate with their traceback.
    """
    from experiments import checkpointing, train

    if os.environ.get("EXPERIMENTS_TRACEBACK"):
        return fn()
    try:
        return fn()
    except train.Interrupted as e:
        print(f"stopped: {e}", file=sys.stderr)
        raise SystemExit(130) from None
    except KeyboardInterrupt:
        print("stopped before training started (Ctrl-C)", file=sys.stderr)
        raise SystemExit(130) from None
    except (train.NonFiniteLossError, checkpointing.CheckpointRestoreError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    except ValueError as e:
        print(f"error: {e} (EXPERIMENTS_TRACEBACK=1 shows where)", file=sys.stderr)
        raise SystemExit(2) from None
