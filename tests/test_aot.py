"""The ahead-of-time compile check: exact per-device state sizes from the shardings, XLA's
memory analysis consistent with them, and the command line on simulated devices."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from experiments import aot
from experiments.configs import lm, quadratic

DIM = 1024  # >= the FSDP rule's min_size, so fsdp splits the parameter and its moments


def _config(dim: int = DIM):
    config = quadratic.get_config()
    config.workload.dim = dim
    config.optimizer.name = "adamw"  # the sizes below count AdamW's two moments
    return config


@pytest.fixture(scope="module")
def reports():
    return {
        fsdp: aot.compile_report(_config(), {"data": 8 // fsdp, "fsdp": fsdp}) for fsdp in (1, 2)
    }


def test_arguments_are_the_state_and_the_batch(reports):
    for report in reports.values():
        assert report.argument_bytes == report.state_bytes + report.batch_bytes
        # The state is donated: the compiled step reuses every state buffer for its output.
        assert report.alias_bytes == report.state_bytes
        assert report.output_bytes >= report.state_bytes
        assert report.temp_bytes is not None and report.temp_bytes >= 0


def test_fsdp_halves_the_split_leaves(reports):
    # AdamW holds x, mu and nu (each DIM float32); fsdp=2 stores half of each per device,
    # the scalars (step, count) stay whole.
    split = 3 * DIM * 4
    assert reports[1].state_bytes - reports[2].state_bytes == split // 2
    assert reports[1].params_bytes == DIM * 4
    assert reports[2].params_bytes == DIM * 4 // 2
    # Batch rows are split over all 8 devices in both meshes: 32 rows of (DIM + 1) floats.
    assert reports[1].batch_bytes == reports[2].batch_bytes == 32 // 8 * (DIM + 1) * 4
    assert reports[1].num_params == DIM


def test_flops_scale_with_the_problem(reports):
    # The step's matvecs cost ~2 * rows * DIM per device, forward and backward.
    flops = reports[1].flops
    if flops is None:
        pytest.skip("XLA:CPU gave no cost analysis")
    assert flops >= 2 * (32 // 8) * DIM


def test_report_formats_every_number(reports):
    text = reports[2].format()
    for label in ("state", "arguments", "temporaries", "generated code", "FLOPs"):
        assert label in text
    assert f"{reports[2].state_bytes:,} B" in text


def _lm_config():
    config = lm.get_config()
    # Small, but its embedding table (103 characters x 32) is still split over `fsdp` along
    # the features, which is what made XLA gather whole activations before the fix.
    config.workload.update(d_model=32, num_heads=2, batch_size=16, context=16)
    return config


def test_lm_fsdp_step_keeps_activations_split_by_example(capfd):
    capfd.readouterr()
    plain = aot.compile_report(_lm_config(), {"data": 8, "fsdp": 1})
    fsdp = aot.compile_report(_lm_config(), {"data": 4, "fsdp": 2})
    warnings = capfd.readouterr().err
    assert "Involuntary full rematerialization" not in warnings
    # Beyond the data-parallel step, FSDP may hold the gathered weights and full-size gradient
    # partials before their reduce-scatter: at most twice the unsplit parameters. Activations
    # gathered whole (the partitioner resharding them by feature) cost more than that: 665 kB
    # of temporaries against 281 kB data-parallel on XLA:CPU with jax 0.10.2, 381 kB fixed.
    assert plain.params_bytes == 4 * plain.num_params
    assert fsdp.temp_bytes <= plain.temp_bytes + 2 * plain.params_bytes


def test_mesh_needing_more_devices_is_an_error():
    with pytest.raises(ValueError, match="needs 16 devices"):
        aot.compile_report(_config(8), {"data": 8, "fsdp": 2})
    with pytest.raises(ValueError, match="unknown axes"):
        aot.compile_report(_config(8), {"model": 2})


def test_parse_mesh():
    assert aot.parse_mesh("data:4,fsdp:2") == {"data": 4, "fsdp": 2}
    with pytest.raises(ValueError, match="axis:size"):
        aot.parse_mesh("data=4")
    with pytest.raises(ValueError, match="integer"):
        aot.parse_mesh("data:four")


def test_command_line_sets_the_device_count_before_jax():
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"  # must be replaced, not kept
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.aot",
            "--config=experiments/configs/quadratic.py",
            "--mesh=data:2,fsdp:3",
            "--config.workload.batch_size=12",
            "--config.workload.dim=1026",
            "--config.optimizer.name=adamw",
            "--hbm_gib=0.5",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "6 cpu devices available" in out
    assert "mesh {'data': 2, 'fsdp': 3}" in out
    assert "1,026 params" in out
    # x, mu and nu split three ways (342 floats each), plus int32 scalars (step and counts).
    state_line = next(line for line in out.splitlines() if "state (params" in line)
    assert f"(params      0.001 MiB ({342 * 4:,} B))" in state_line
    state = int(state_line.split("MiB (")[1].split(" B)")[0].replace(",", ""))
    assert 0 < state - 3 * 342 * 4 <= 4 * 4
    assert "HBM 0.50 GiB per device, 10% kept free: budget 0.45 GiB" in out
    assert "FITS with a margin of" in out


def _report(**overrides):
    values = dict(
        mesh={"data": 8, "fsdp": 1},
        platform="tpu",
        device_kind="TPU v5 lite",
        num_params=10**9,
        state_bytes=12 * 2**30,
        params_bytes=4 * 2**30,
        batch_bytes=2**20,
        argument_bytes=12 * 2**30 + 2**20,
        output_bytes=12 * 2**30,
        alias_bytes=12 * 2**30,
        temp_bytes=8 * 2**30,
        generated_code_bytes=2**20,
        flops=None,
    )
    values.update(overrides)
    return aot.CompileReport(**values)


def test_fit_verdict_and_suggestions():
    config = lm.get_config()
    config.workload.update(batch_size=64, remat="none")
    hbm = 16 * 2**30
    # Data parallel over 8 v5e chips: 6 GiB of state + 12 GiB of temporaries per device.
    gib = 2**30
    report = _report(
        state_bytes=6 * gib,
        params_bytes=2 * gib,
        argument_bytes=6 * gib + 2**20,
        output_bytes=6 * gib,
        alias_bytes=6 * gib,
        temp_bytes=12 * gib,
    )
    fit = aot.check_fit(report, config, hbm, headroom=0.1)
    assert not fit.fits and fit.need_bytes == 18 * gib + 2 * 2**20
    assert fit.budget_bytes == int(0.9 * hbm)
    fsdp, remat, micro = fit.suggestions
    assert "--mesh=data:1,fsdp:8" in fsdp and "(fits)" in fsdp  # state 6 -> 0.75 GiB
    assert "--config.workload.remat=dots" in remat
    # 8 rows per device; K microbatches need 6 + 12/K + 2 (gradient accumulator) GiB.
    assert "--config.microbatches=2 (4 rows per device each): need ~14.00 GiB" in micro
    assert "DOES NOT FIT: over the budget by" in fit.format()
    # Already at 2 microbatches (temporaries are one microbatch's): 4 in all is suggested.
    config.microbatches = 2
    micro = aot.check_fit(report, config, hbm).suggestions[-1]
    assert "--config.microbatches=4 (2 rows per device each)" in micro
    config.microbatches = 1

    # Already FSDP over every device, block remat: only microbatching is left, and not enough.
    config.workload.remat = "block"
    report = _report(mesh={"data": 1, "fsdp": 8}, temp_bytes=40 * 2**30, state_bytes=2**30)
    (advice,) = aot.check_fit(report, config, hbm).suggestions
    assert "even 8 microbatches of one row per device would not fit" in advice

    small = aot.check_fit(
        _report(
            state_bytes=2**30,
            output_bytes=2**30,
            alias_bytes=2**30,
            argument_bytes=2**30,
            temp_bytes=2**30,
        ),
        config,
        hbm,
    )
    assert small.fits and small.suggestions == () and "FITS with a margin" in small.format()
    with pytest.raises(ValueError, match="headroom"):
        aot.check_fit(_report(), config, hbm, headroom=1.0)


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is not None, reason="libtpu is installed")
def test_named_topology_without_libtpu_says_what_is_missing():
    with pytest.raises(RuntimeError, match="needs libtpu"):
        aot.topology_devices("v5e:2x4")
