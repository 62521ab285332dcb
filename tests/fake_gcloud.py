"""A stand-in for `gcloud compute tpus ...` that the tpu/ script tests put in $GCLOUD.

It keeps a simulated TPU VM in a JSON file ($FAKE_GCLOUD_STATE) and appends every call to it:

  vm:          "READY", "PREEMPTED", ... or "NOT_FOUND"
  ips:         internal IPs of the workers, worker 0 first
  answering:   which workers answer ssh (a worker that is down does not)
  run_outcomes: what each launch of tpu/worker_run.sh does, in order: "ok" (exit 0),
               "fail" (exit 1, the VM stays READY) or "preempt" (exit 255, the VM is PREEMPTED)
  calls:       every argv received

`gcloud storage cp / cat / rsync` work on a local directory that stands for GCS
($FAKE_GCS_ROOT/BUCKET/PATH for gs://BUCKET/PATH).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import sys


def main(argv: list[str]) -> int:
    path = pathlib.Path(os.environ["FAKE_GCLOUD_STATE"])
    state = json.loads(path.read_text())
    state["calls"].append(argv)
    try:
        return _handle(state, argv)
    finally:
        path.write_text(json.dumps(state))


def _flag(argv: list[str], name: str) -> str | None:
    for arg in argv:
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
    return None


def _local(path: str) -> pathlib.Path:
    """The stand-in of a gs:// path (or a local path as it is)."""
    if path.startswith("gs://"):
        return pathlib.Path(os.environ["FAKE_GCS_ROOT"]) / path[len("gs://") :]
    return pathlib.Path(path)


def _storage(argv: list[str]) -> int:
    verb = argv[1]
    args = [a for a in argv[2:] if not a.startswith("-")]
    if verb == "cat":
        source = _local(args[0])
        if not source.is_file():
            print(f"ERROR: {args[0]} not found", file=sys.stderr)
            return 1
        sys.stdout.write(source.read_text())
        return 0
    if verb == "cp":
        *sources, destination = args
        target = _local(destination)
        for source in map(_local, sources):
            if not source.is_file():
                print(f"ERROR: {source} not found", file=sys.stderr)
                return 1
            if destination.endswith("/") or target.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target / source.name)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
        return 0
    if verb == "rsync":
        exclude = _flag(argv, "exclude")
        source, target = _local(args[0]), _local(args[1])
        if not source.is_dir():
            return 1
        for path in sorted(source.rglob("*")):
            relative = path.relative_to(source).as_posix()
            if path.is_file() and not (exclude and re.search(exclude, relative)):
                (target / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target / relative)
        return 0
    return 2


def _handle(state: dict, argv: list[str]) -> int:
    if argv[:1] == ["storage"]:
        return _storage(argv)
    if argv[:2] != ["compute", "tpus"]:
        print(f"fake gcloud: unsupported {argv}", file=sys.stderr)
        return 2
    group, verb = argv[2], argv[3]
    if group == "queued-resources":
        if verb == "describe":
            return 1  # no queued resources in these tests
        return 0
    if group != "tpu-vm":
        return 2
    if verb == "describe":
        if state["vm"] == "NOT_FOUND":
            print("ERROR: NOT_FOUND", file=sys.stderr)
            return 1
        if "ipAddress" in (_flag(argv, "format") or ""):
            print(";".join(state["ips"]))
        else:
            print(state["vm"])
        return 0
    if verb == "create":
        state["vm"] = "READY"
        return 0
    if verb == "delete":
        state["vm"] = "NOT_FOUND"
        return 0
    if state["vm"] != "READY":
        return 255  # ssh / scp to a VM that is not up
    if verb == "scp":
        destination = argv[5]
        if ":" not in destination:  # a download: leave a file where it was asked for
            pathlib.Path(destination).write_text(f"log of worker {_flag(argv, 'worker')}\n")
        return 0
    if verb == "ssh":
        command = _flag(argv, "command") or ""
        if command == "hostname -I":
            for ip, up in zip(state["ips"], state["answering"], strict=True):
                if up:
                    print(f"{ip} 172.17.0.1")
            return 0
        if "worker_run.sh" in command:
            outcome = state["run_outcomes"].pop(0)
            if outcome == "preempt":
                state["vm"] = "PREEMPTED"
                return 255
            return 0 if outcome == "ok" else 1
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
