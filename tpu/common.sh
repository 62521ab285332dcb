# shellcheck shell=bash
# Helpers shared by the tpu/ scripts; sourced, never run. Every value can come from a flag of the
# calling script or from the environment variable named here, so a session can `export` once.
#
#   TPU_NAME     the TPU VM (or queued resource / node id)  default: optlib-tpu
#   TPU_ZONE     its zone                                    default: us-central2-b
#   TPU_PROJECT  the GCP project (default: gcloud's configured project)

TPU_NAME=${TPU_NAME:-optlib-tpu}
TPU_ZONE=${TPU_ZONE:-us-central2-b}
TPU_PROJECT=${TPU_PROJECT:-}
# Where the project lives on every worker, relative to the login user's home directory.
# shellcheck disable=SC2034  # used by the scripts that source this file
REMOTE_DIR=${OPTLIB_REMOTE_DIR:-optlib}
# The gcloud binary; tests put a fake one first on PATH.
GCLOUD=${GCLOUD:-gcloud}

die() {
  echo "$(basename "$0"): error: $*" >&2
  exit 1
}

log() {
  echo "[$(date -u +%H:%M:%S)] $(basename "$0"): $*" >&2
}

# gcloud compute tpus ARGS... with the project flag when one is set.
tpus() {
  if [[ -n "$TPU_PROJECT" ]]; then
    "$GCLOUD" compute tpus "$@" --project="$TPU_PROJECT"
  else
    "$GCLOUD" compute tpus "$@"
  fi
}

# The TPU VM's state (READY, CREATING, PREEMPTED, TERMINATED, ...) or NOT_FOUND.
vm_state() {
  local state
  if ! state=$(tpus tpu-vm describe "$TPU_NAME" --zone="$TPU_ZONE" --format='value(state)' 2>/dev/null); then
    echo NOT_FOUND
    return
  fi
  echo "${state:-UNKNOWN}"
}

# The queued resource's state (ACCEPTED, PROVISIONING, ACTIVE, SUSPENDED, FAILED, ...) or NOT_FOUND.
queued_state() {
  local state
  if ! state=$(tpus queued-resources describe "$TPU_NAME" --zone="$TPU_ZONE" \
    --format='value(state.state)' 2>/dev/null); then
    echo NOT_FOUND
    return
  fi
  echo "${state:-UNKNOWN}"
}

# Internal IPs of the workers, one per line, in worker order (worker 0 first).
worker_ips() {
  tpus tpu-vm describe "$TPU_NAME" --zone="$TPU_ZONE" \
    --format='value(networkEndpoints[].ipAddress)' | sed 's/[;, ]/\n/g' | sed '/^$/d'
}

# Runs COMMAND on WORKER (a number or "all") of the TPU VM.
tpu_ssh() {
  local worker=$1 command=$2
  tpus tpu-vm ssh "$TPU_NAME" --zone="$TPU_ZONE" --worker="$worker" --command="$command"
}
