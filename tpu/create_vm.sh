#!/usr/bin/env bash
# Creates a TPU VM (or a queued resource that becomes one) and waits until it is ready.
set -euo pipefail

usage() {
  cat <<USAGE
usage: $(basename "$0") [--name=NAME] [--zone=ZONE] [--type=ACCELERATOR] [--version=RUNTIME]
                        [--project=PROJECT] [--queued] [--spot] [--wait=SECONDS]

Creates the TPU VM NAME and waits until it is READY (a queued resource: ACTIVE). Does nothing
if it already exists and is ready, so it is safe to run again.

  --name      TPU VM name (and queued-resource / node id)     [\$TPU_NAME, default optlib-tpu]
  --zone      zone                                            [\$TPU_ZONE, default us-central2-b]
  --type      accelerator type, e.g. v4-8, v4-32, v5litepod-8, v6e-8
                                                              [\$TPU_TYPE, default v4-8]
  --version   TPU software version (runtime image), e.g. tpu-ubuntu2204-base (v4),
              v2-alpha-tpuv5-lite (v5e), v2-alpha-tpuv6e (v6e)
                                                              [\$TPU_VERSION, default tpu-ubuntu2204-base]
  --project   GCP project                                     [\$TPU_PROJECT, default: gcloud's]
  --queued    request capacity through a queued resource (waits in line instead of failing
              when the zone has no capacity)
  --spot      spot (preemptible) capacity: cheaper, may be preempted; see tpu/relaunch.sh
  --wait      give up waiting for READY/ACTIVE after this many seconds (default 3600)
USAGE
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tpu/common.sh
source "$here/common.sh"

TPU_TYPE=${TPU_TYPE:-v4-8}
TPU_VERSION=${TPU_VERSION:-tpu-ubuntu2204-base}
queued=0
spot=0
wait_s=3600
while (($#)); do
  case $1 in
    --name=*) TPU_NAME=${1#*=} ;;
    --zone=*) TPU_ZONE=${1#*=} ;;
    --type=*) TPU_TYPE=${1#*=} ;;
    --version=*) TPU_VERSION=${1#*=} ;;
    --project=*) TPU_PROJECT=${1#*=} ;;
    --queued) queued=1 ;;
    --spot) spot=1 ;;
    --wait=*) wait_s=${1#*=} ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      usage >&2
      die "unknown argument: $1"
      ;;
  esac
  shift
done
[[ "$wait_s" =~ ^[0-9]+$ ]] || die "--wait must be a number of seconds, got '$wait_s'"

spot_flags=()
if ((spot)); then
  spot_flags=(--spot)
fi

state=$(vm_state)
if [[ "$state" == READY ]]; then
  log "TPU VM $TPU_NAME in $TPU_ZONE is already READY; nothing to do"
  exit 0
fi
if [[ "$state" != NOT_FOUND ]]; then
  die "TPU VM $TPU_NAME exists in state $state; wait for it, or delete it first" \
    "(tpu/relaunch.sh does both)"
fi

if ((queued)); then
  if [[ "$(queued_state)" == NOT_FOUND ]]; then
    log "requesting queued resource $TPU_NAME: $TPU_TYPE, $TPU_VERSION in $TPU_ZONE"
    tpus queued-resources create "$TPU_NAME" --node-id="$TPU_NAME" --zone="$TPU_ZONE" \
      --accelerator-type="$TPU_TYPE" --runtime-version="$TPU_VERSION" "${spot_flags[@]}"
  fi
  deadline=$((SECONDS + wait_s))
  while :; do
    qstate=$(queued_state)
    case $qstate in
      ACTIVE) break ;;
      FAILED | SUSPENDED | NOT_FOUND)
        die "queued resource $TPU_NAME is $qstate; delete it with:" \
          "gcloud compute tpus queued-resources delete $TPU_NAME --zone=$TPU_ZONE --force"
        ;;
    esac
    ((SECONDS < deadline)) || die "queued resource $TPU_NAME still $qstate after ${wait_s}s"
    log "queued resource $TPU_NAME is $qstate; waiting"
    sleep 30
  done
else
  log "creating TPU VM $TPU_NAME: $TPU_TYPE, $TPU_VERSION in $TPU_ZONE"
  tpus tpu-vm create "$TPU_NAME" --zone="$TPU_ZONE" --accelerator-type="$TPU_TYPE" \
    --version="$TPU_VERSION" "${spot_flags[@]}"
fi

deadline=$((SECONDS + wait_s))
while :; do
  state=$(vm_state)
  [[ "$state" == READY ]] && break
  ((SECONDS < deadline)) || die "TPU VM $TPU_NAME still $state after ${wait_s}s"
  log "TPU VM $TPU_NAME is $state; waiting"
  sleep 15
done
log "TPU VM $TPU_NAME is READY with $(worker_ips | wc -l) worker(s); next: tpu/setup.sh"
