"""Multi-process training on one machine: two processes x 4 CPU devices, jax.distributed on
loopback with gloo collectives, launched exactly as tpu/run.sh launches `experiments.main` on
the workers of a pod (coordinator host:port pinned, one JAX_PROCESS_ID per process).

The two-process run trains 10 steps, is launched again with `steps=20` and resumes from its
step-10 checkpoint (what tpu/relaunch.sh relies on); its losses and final params must equal a
single-process run on the 8 devices of this test process. A launch missing a process must exit
with an error instead of hanging.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments import checkpointing, main, metrics, train
from experiments.configs import quadratic

REPO = pathlib.Path(__file__).resolve().parent.parent
STEPS = 20
# The same run, as config overrides (children) and as a config (this process). dim=1024 with
# fsdp=2 splits the parameter and the Adam moments over devices of both processes.
OVERRIDES = {
    "workload.dim": 1024,
    "optimizer.name": "adamw",
    "schedule.kwargs.peak": 0.05,
    "mesh.data": 4,
    "mesh.fsdp": 2,
    "schedule.name": "warmup",  # no dependence on `steps`, so the run may be extended
    "schedule.kwargs.warmup_steps": 5,
    "checkpoint.every": 10,
    "eval_every": 10,
    "log_every": 1,
    "progress_bar": False,
}
CHILD_TIMEOUT_S = 180


def _config(steps: int):
    config = quadratic.get_config()
    with config.unlocked():
        for key, value in OVERRIDES.items():
            *parents, leaf = key.split(".")
            node = config
            for name in parents:
                node = node[name]
            node[leaf] = value
        config.steps = steps
    return config


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(
    workdir: pathlib.Path, steps: int, process_ids, num_processes: int = 2, args=None, **env_extra
):
    """Runs experiments.main (or `args`) as processes `process_ids` of `num_processes`;
    returns (returncode, stdout, stderr) per process."""
    port = _free_port()
    procs = []
    for pid in process_ids:
        env = dict(os.environ)
        env.update(
            JAX_PLATFORMS="cpu",
            XLA_FLAGS="--xla_force_host_platform_device_count=4",
            JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
            JAX_NUM_PROCESSES=str(num_processes),
            JAX_PROCESS_ID=str(pid),
            EXPERIMENTS_INIT_TIMEOUT_S="60",
        )
        env.update(env_extra)
        command = args or [
            sys.executable,
            "-m",
            "experiments.main",
            "--config=experiments/configs/quadratic.py",
            f"--workdir={workdir}",
            f"--config.steps={steps}",
        ] + [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
        procs.append(
            subprocess.Popen(
                command,
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,  # so a hung child and its threads can be killed
            )
        )
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=CHILD_TIMEOUT_S)
            results.append((proc.returncode, out, err))
    except subprocess.TimeoutExpired:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"multi-process run did not finish within {CHILD_TIMEOUT_S} s (a hang)")
    return results


def _summary(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("single")
    return {**train.train(_config(STEPS), workdir, return_state=True), "workdir": workdir}


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("multi") / "run"
    first = _launch(workdir, 10, (0, 1))
    for rc, _, err in first:
        assert rc == 0, err[-3000:]
    second = _launch(workdir, STEPS, (0, 1))
    for rc, _, err in second:
        assert rc == 0, err[-3000:]
    return workdir, first, second


def test_two_processes_match_one(two_process_run, reference, tmp_path):
    workdir, first, second = two_process_run
    # Both launches saw the whole 8-device mesh, and the second resumed at step 10.
    assert "mesh {'data': 4, 'fsdp': 2}" in first[0][2]
    assert "'kind': 'resume', 'step': 10" in second[0][2]
    summaries = [_summary(out) for _, out, _ in second]
    assert summaries[0] == summaries[1]  # every process reports the same global result
    assert summaries[0]["step"] == STEPS
    np.testing.assert_allclose(
        summaries[0]["eval"]["eval_loss"], reference["eval"]["eval_loss"], rtol=1e-5
    )

    # Per-step training losses (process 0 writes the log) against the single-process run.
    multi = {r["step"]: r["loss"] for r in metrics.read_metrics(workdir) if r["split"] == "train"}
    single = {
        r["step"]: r["loss"]
        for r in metrics.read_metrics(reference["workdir"])
        if r["split"] == "train"
    }
    steps = list(range(1, STEPS + 1))
    assert sorted(multi) == sorted(single) == steps
    np.testing.assert_allclose([multi[s] for s in steps], [single[s] for s in steps], rtol=1e-5)

    # The final checkpoint holds the whole state; restored here onto 8 local devices.
    program = train.build(_config(STEPS))
    checkpointer = checkpointing.Checkpointer(workdir, read_only=True)
    assert checkpointer.steps() == [10, 20]
    restored = checkpointer.restore(STEPS, program.abstract_state)
    checkpointer.close()
    assert int(restored["step"]) == STEPS
    for got, want in zip(
        jax.tree.leaves(restored), jax.tree.leaves(reference["state"]), strict=True
    ):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)
    # The run moved: the comparison is not between two copies of the initial point.
    assert float(np.abs(np.asarray(restored["params"]["x"])).max()) > 1e-3


def test_fewer_than_all_processes_is_an_error(tmp_path):
    # Process 1 of 2 never starts: process 0 must give up after its init timeout.
    ((rc, _, err),) = _launch(tmp_path / "run", 2, (0,), EXPERIMENTS_INIT_TIMEOUT_S="3")
    assert rc != 0
    assert "every process must join within 3 s" in err
    assert "DEADLINE_EXCEEDED" in err or "Deadline" in err


def test_distributed_kwargs_checks_the_environment():
    base = {"JAX_COORDINATOR_ADDRESS": "10.0.0.2:8476", "JAX_NUM_PROCESSES": "4"}
    kwargs = main.distributed_kwargs({**base, "JAX_PROCESS_ID": "3"})
    assert kwargs == {
        "initialization_timeout": 300,
        "coordinator_address": "10.0.0.2:8476",
        "num_processes": 4,
        "process_id": 3,
    }
    with pytest.raises(ValueError, match="must be in"):
        main.distributed_kwargs({**base, "JAX_PROCESS_ID": "4"})
    with pytest.raises(ValueError, match="host:port"):
        main.distributed_kwargs({**base, "JAX_COORDINATOR_ADDRESS": "10.0.0.2"})
    with pytest.raises(ValueError, match="JAX_PROCESS_ID"):
        main.distributed_kwargs(base)
    with pytest.raises(ValueError, match=">= 1"):
        main.distributed_kwargs({"EXPERIMENTS_INIT_TIMEOUT_S": "0"})
    assert main.distributed_kwargs({"TPU_WORKER_HOSTNAMES": "a,b"}) == {
        "initialization_timeout": 300
    }


# Each process of a two-process run places the batch of a step on the 8-device mesh from a
# prepared corpus, recording every row it reads from the token files.
_DATA_CHILD = """
import json, sys
from experiments.distributed import maybe_initialize_distributed
maybe_initialize_distributed()
import jax, numpy as np
from experiments import sharding, workloads
config = workloads.default_config("lm")
config.update(data=sys.argv[1], batch_size=16, context=8)
workload = workloads.make(config)
mesh = sharding.make_mesh({"data": 4, "fsdp": 2})
read, rows = [], workload.corpus.rows
def recording(step, batch_size, which):
    read.append([step, [int(r) for r in which]])
    return rows(step, batch_size, which)
workload.corpus.rows = recording
shards = []
for step in (0, 7):
    tokens = sharding.shard_step_batch(workload, step, mesh)["tokens"]
    assert tokens.shape == (16, 9)
    for shard in tokens.addressable_shards:
        shards.append([step, shard.index[0].start, np.asarray(shard.data).tolist()])
print(json.dumps({"read": read, "shards": shards}))
"""


def test_each_process_reads_only_its_rows_of_a_token_file_batch(tmp_path):
    from experiments import data, workloads

    text = tmp_path / "corpus.txt"
    text.write_text("".join(f"line {i}: the quick brown fox\n" for i in range(400)))
    corpus = tmp_path / "prepared"
    data.prepare([str(text)], corpus, val_fraction=0.1, progress=False)
    args = [sys.executable, "-c", _DATA_CHILD, str(corpus)]
    results = _launch(tmp_path, 0, (0, 1), args=args)
    for rc, _, err in results:
        assert rc == 0, err[-3000:]
    outs = [json.loads(out.strip().splitlines()[-1]) for _, out, _ in results]

    config = workloads.default_config("lm")
    config.update(data=str(corpus), batch_size=16, context=8)
    single = workloads.make(config)  # one process, the whole batch
    for step in (0, 7):
        reads = [sorted(r for s, rows in out["read"] if s == step for r in rows) for out in outs]
        assert not set(reads[0]) & set(reads[1])  # disjoint
        assert sorted(reads[0] + reads[1]) == list(range(16))  # together the whole batch
        whole = single.batch(step)["tokens"]
        placed = [(start, rows) for out in outs for s, start, rows in out["shards"] if s == step]
        assert len(placed) == 8  # every device of the mesh got its rows from its own process
        for start, rows in placed:
            np.testing.assert_array_equal(np.asarray(rows), whole[start : start + 2])
