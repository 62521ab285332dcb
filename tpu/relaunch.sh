#!/usr/bin/env bash
# Keeps one experiment running through preemptions: (re)creates the TPU VM, installs, runs, and
# after a preemption starts over; each run resumes from the last checkpoint in the workdir.
set -euo pipefail

usage() {
  cat <<USAGE
usage: $(basename "$0") --config=CONFIG --workdir=WORKDIR [--name=NAME] [--zone=ZONE]
                          [--project=PROJECT] [--type=TYPE] [--version=RUNTIME] [--queued] [--spot]
                          [--gcs-bucket=BUCKET] [--source=copy|git] [--git-url=URL] [--ref=REF]
                          [--data=gs://BUCKET/data/NAME] [--module=MODULE] [--port=PORT]
                          [--max-failures=N] [--poll=SECONDS] [--skip-setup] [-- MAIN_FLAGS...]

Loop: if the VM (or queued resource) is gone, preempted, suspended or failed, delete what is left
and create it again (tpu/create_vm.sh), install (tpu/setup.sh), then run (tpu/run.sh). A run
that ends because the VM was preempted is started again; train() resumes from the latest
checkpoint in WORKDIR, so WORKDIR must outlive the VM: a GCS bucket mounted on every worker
(--gcs-bucket=BUCKET mounts gs://BUCKET at /gcs/BUCKET; pass --workdir=/gcs/BUCKET/runs/NAME).
Stops when a run succeeds, or after --max-failures runs fail on a VM that is still healthy
(a bug, not a preemption).

  --max-failures  failed runs on a healthy VM before giving up (default 3)
  --poll          seconds between state checks while the VM is changing (default 60)
  --skip-setup    do not run tpu/setup.sh on a VM that is already READY at the start
  other flags     as in tpu/create_vm.sh, tpu/setup.sh and tpu/run.sh
USAGE
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tpu/common.sh
source "$here/common.sh"

config=
workdir=
max_failures=3
poll=60
skip_setup=0
queued=0
create_args=()
setup_args=()
run_args=()
main_flags=()
while (($#)); do
  case $1 in
    --config=*) config=${1#*=} ;;
    --workdir=*) workdir=${1#*=} ;;
    --name=*) TPU_NAME=${1#*=} ;;
    --zone=*) TPU_ZONE=${1#*=} ;;
    --project=*) TPU_PROJECT=${1#*=} ;;
    --type=* | --version=* | --spot) create_args+=("$1") ;;
    --queued)
      queued=1
      create_args+=("$1")
      ;;
    --gcs-bucket=* | --source=* | --git-url=* | --ref=* | --python=* | --data=*)
      setup_args+=("$1")
      ;;
    --port=* | --init-timeout=* | --module=*) run_args+=("$1") ;;
    --max-failures=*) max_failures=${1#*=} ;;
    --poll=*) poll=${1#*=} ;;
    --skip-setup) skip_setup=1 ;;
    --)
      shift
      main_flags=("$@")
      break
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      usage >&2
      die "unknown argument: $1 (flags for experiments.main go after --)"
      ;;
  esac
  shift
done
[[ -n "$config" && -n "$workdir" ]] || {
  usage >&2
  die "--config and --workdir are required"
}
if ! [[ "$max_failures" =~ ^[0-9]+$ ]] || ((max_failures < 1)); then
  die "--max-failures must be a positive integer, got '$max_failures'"
fi
[[ "$poll" =~ ^[0-9]+$ ]] || die "--poll must be a number of seconds"
case $workdir in
  /gcs/* | gs://*) ;;
  *) log "warning: $workdir is not under /gcs/: a recreated VM will not see its checkpoints" ;;
esac

export TPU_NAME TPU_ZONE TPU_PROJECT
vm=(--name="$TPU_NAME" --zone="$TPU_ZONE")
[[ -n "$TPU_PROJECT" ]] && vm+=(--project="$TPU_PROJECT")

# Deletes whatever is left of a preempted / failed VM or queued resource, and waits until gone.
delete_vm() {
  if ((queued)) && [[ "$(queued_state)" != NOT_FOUND ]]; then
    log "deleting queued resource $TPU_NAME"
    tpus queued-resources delete "$TPU_NAME" --zone="$TPU_ZONE" --force --quiet || true
  elif [[ "$(vm_state)" != NOT_FOUND ]]; then
    log "deleting TPU VM $TPU_NAME"
    tpus tpu-vm delete "$TPU_NAME" --zone="$TPU_ZONE" --quiet || true
  fi
  while [[ "$(vm_state)" != NOT_FOUND ]] || { ((queued)) && [[ "$(queued_state)" != NOT_FOUND ]]; }; do
    sleep "$poll"
  done
}

needs_setup=$((1 - skip_setup))
failures=0
preemptions=0
runs=0

# Counts a failure on a healthy VM; gives up after --max-failures of them.
count_failure() {
  failures=$((failures + 1))
  log "$1 on a healthy VM ($failures of $max_failures)"
  ((failures < max_failures)) || die "giving up after $failures failures; see logs/tpu/"
  sleep "$poll"
}
while :; do
  if ((queued)); then
    case $(queued_state) in
      SUSPENDED | SUSPENDING | FAILED)
        log "queued resource $TPU_NAME lost its capacity"
        delete_vm
        ;;
    esac
  fi
  state=$(vm_state)
  case $state in
    READY)
      if ((needs_setup)); then
        if ! "$here/setup.sh" "${vm[@]}" "${setup_args[@]}"; then
          [[ "$(vm_state)" == READY ]] && count_failure "setup failed"
          continue
        fi
        needs_setup=0
      fi
      runs=$((runs + 1))
      log "run $runs (preemptions so far: $preemptions)"
      rc=0
      "$here/run.sh" "${vm[@]}" --config="$config" --workdir="$workdir" \
        --run-id="$(date -u +%Y%m%d-%H%M%S)-$runs" "${run_args[@]}" -- "${main_flags[@]}" ||
        rc=$?
      if ((rc == 0)); then
        log "the run finished"
        exit 0
      fi
      after=$(vm_state)
      if [[ "$after" == READY ]] && { ((!queued)) || [[ "$(queued_state)" == ACTIVE ]]; }; then
        count_failure "the run failed (exit $rc)"
      else
        preemptions=$((preemptions + 1))
        log "the run ended (exit $rc) with the VM $after: preempted; starting over"
      fi
      ;;
    NOT_FOUND)
      needs_setup=1
      if ! "$here/create_vm.sh" "${vm[@]}" "${create_args[@]}"; then
        log "creating the VM failed (no capacity?); trying again in ${poll}s"
        sleep "$poll"
      fi
      ;;
    PREEMPTED | TERMINATED | STOPPED | FAILED)
      log "TPU VM $TPU_NAME is $state"
      delete_vm
      needs_setup=1
      ;;
    *)
      log "TPU VM $TPU_NAME is $state; waiting"
      sleep "$poll"
      ;;
  esac
done
