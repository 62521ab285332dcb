"""Throughput records: examples/s and tokens/s from timed steps, model FLOPs two ways (the
LM's 6N + attention formula and XLA's cost analysis) that must agree, and no MFU where the
device's peak is unknown."""

import types

import jax
import pytest

from experiments import metrics, report, train
from experiments.configs import lm


def test_rates_follow_steps_and_seconds_and_need_a_timed_step():
    workload = types.SimpleNamespace(
        examples_per_step=lambda: 4, tokens_per_example=lambda: 8, flops_per_token=lambda: 10.0
    )
    throughput = metrics.Throughput(workload, [], xla_flops_per_step=300.0, lanes=2)
    record = throughput.record(steps=5, seconds=2.0)
    assert record["examples_per_second"] == pytest.approx(2 * 4 * 5 / 2.0)
    assert record["tokens_per_second"] == pytest.approx(8 * 2 * 4 * 5 / 2.0)
    assert record["model_flops_per_step"] == 10.0 * 8 * 2 * 4
    assert throughput.record(steps=0, seconds=0.0)["examples_per_second"] is None
    throughput.peak = 1e3  # a device with a known peak: MFU = achieved / peak FLOP/s
    assert throughput.record(steps=5, seconds=2.0)["mfu"] == pytest.approx(640 * 5 / 2.0 / 1e3)


def test_lm_records_throughput_and_the_flop_counts_agree(tmp_path):
    config = lm.get_config()
    config.workload.update(d_model=32, num_heads=2, batch_size=16, context=16)
    config.update(steps=4, log_every=2, eval_every=0, progress_bar=False)
    config.schedule.kwargs.warmup_steps = 1
    config.checkpoint.every = 0
    config.mesh.data, config.mesh.fsdp = 2, 1  # two devices: compiles in a fraction of eight
    train.train(config, str(tmp_path), devices=jax.devices()[:2])
    records = [r for r in metrics.read_metrics(tmp_path) if r["split"] == "train"]
    assert [r["step"] for r in records] == [2, 4]
    last = records[-1]
    assert last["examples_per_second"] > 0
    assert last["tokens_per_second"] == pytest.approx(16 * last["examples_per_second"])
    # XLA also counts the optimizer, the loss and the embedding gather; the formula does not.
    assert last["xla_flops_per_step"] == pytest.approx(last["model_flops_per_step"], rel=0.25)
    assert last["mfu"] is None  # the CPU's peak is unknown: no made-up number
    # The report's row: the run's own step count, its median throughput, MFU not available.
    text = report.report([str(tmp_path)], tmp_path / "report").read_text()
    row = next(line for line in text.splitlines() if line.startswith(f"| {tmp_path.name} "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:3] == ["4", "4"] and cells[-1] == "n/a"
    assert "tokens/s" in text and "GFLOP/step (XLA)" in text
