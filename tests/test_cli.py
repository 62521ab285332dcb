"""The commands as a user meets them: kwargs overrides, switching optimizers, one-line errors,
quiet logs, Ctrl-C, and nothing left behind by a run that could not start."""

import os
import signal
import subprocess
import sys
import time

import pytest

from experiments import branch, cli
from experiments.configs import lm, quadratic


def overrides(*argv):
    return cli.split_kwargs_overrides(["prog", *argv])


def test_kwargs_overrides_may_add_any_argument_of_the_factory():
    rest, given = overrides("--config.optimizer.kwargs.b1=0.95", "--config.steps=5")
    assert rest == ["prog", "--config.steps=5"]
    config = cli.apply_kwargs_overrides(lm.get_config(), given)
    assert config.optimizer.kwargs.to_dict() == {"b2": 0.98, "weight_decay": 0.01, "b1": 0.95}
    # Two-token form and literal parsing.
    _, given = overrides("--config.schedule.kwargs.warmup_shape", "cosine")
    assert given.kwargs["schedule"] == {"warmup_shape": "cosine"}
    assert cli.parse_value("true") is True and cli.parse_value("1e-3") == 1e-3


def test_switching_optimizer_drops_the_files_kwargs_it_does_not_take():
    notes = []
    _, given = overrides("--config.optimizer.name=lars", "--config.optimizer.kwargs.momentum=0.8")
    config = lm.get_config()
    config.optimizer.name = "lars"  # what config_flags does with --config.optimizer.name
    config = cli.apply_kwargs_overrides(config, given, log=lambda *a, **k: notes.append(a[0]))
    assert config.optimizer.kwargs.to_dict() == {"weight_decay": 0.01, "momentum": 0.8}
    assert "b2=0.98" in notes[0] and "dropped" in notes[0]


def test_an_unknown_kwarg_lists_the_accepted_ones():
    _, given = overrides("--config.optimizer.kwargs.momentun=0.9")
    config = quadratic.get_config()
    with pytest.raises(ValueError, match=r"'sgd' takes no argument momentun; it takes: momentum"):
        cli.apply_kwargs_overrides(config, given)


def test_branch_arguments_are_checked_before_any_compute(tmp_path):
    config = quadratic.get_config()
    config.schedule.name = "warmup"
    for kwargs, match in (
        ({"shape": "1-sqr"}, "--shape='1-sqr' is unknown"),
        ({"decay_fraction": 1.5}, "decay_fraction must be in"),
        ({"end_value": -1.0}, "--end_value must be >= 0"),
    ):
        with pytest.raises(ValueError, match=match):
            branch.run(config, str(tmp_path / "main"), at=[10], **kwargs)
    assert not (tmp_path / "main").exists()


def main_command(workdir, *args):
    return [
        sys.executable,
        "-m",
        "experiments.main",
        "--config=experiments/configs/quadratic.py",
        f"--workdir={workdir}",
        "--config.progress_bar=False",
        *args,
    ]


def test_a_bad_config_is_one_line_and_leaves_no_workdir(tmp_path):
    workdir = tmp_path / "run"
    result = subprocess.run(
        main_command(workdir, "--config.steps=20"), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "warmup_steps" in lines[0] and "config.steps = 20" in lines[0]
    assert not workdir.exists()


@pytest.mark.parametrize(
    "flag, expected",
    [
        ("--config.stepz=3", "no field 'stepz' (it is locked). Did you mean \"steps\""),
        ("--config=experiments/configs/nope.py", "No such file or directory"),
    ],
)
def test_a_bad_flag_is_one_line_naming_it(tmp_path, flag, expected):
    # Errors raised while absl parses the flags, before any of our code runs.
    result = subprocess.run(
        [*main_command(tmp_path / "run"), flag], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr


def test_ctrl_c_is_one_line_naming_the_checkpoint_to_resume(tmp_path):
    workdir = tmp_path / "run"
    command = main_command(workdir, "--config.steps=1000000", "--config.checkpoint.every=50")
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (workdir / "checkpoints" / "50").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130
    lines = err.strip().splitlines()
    # The start line, then one line saying where it stopped; Orbax's INFO logs stay quiet.
    assert len(lines) == 2, err
    assert lines[-1].startswith("stopped: interrupted at step ")
    assert "resumes from step" in lines[-1] and str(workdir) in lines[-1]


@pytest.mark.parametrize(
    "key, value",
    [("steps", 0), ("log_every", 0), ("eval_every", -1), ("microbatches", 0)],
)
def test_loop_counts_out_of_range_name_their_key(key, value):
    from experiments import train

    config = quadratic.get_config()
    config[key] = value
    with pytest.raises(ValueError, match=f"config.{key} must be an integer"):
        train.check_loop_settings(config)
    config = quadratic.get_config()
    config.checkpoint.keep = 0
    with pytest.raises(ValueError, match="config.checkpoint.keep must be None"):
        train.check_loop_settings(config)
