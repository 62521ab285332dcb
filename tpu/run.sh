#!/usr/bin/env bash
# Runs one experiment on every worker of a TPU VM as one multi-process jax program.
set -euo pipefail

usage() {
  cat <<USAGE
usage: $(basename "$0") --config=CONFIG --workdir=WORKDIR [--name=NAME] [--zone=ZONE]
                     [--project=PROJECT] [--port=PORT] [--init-timeout=SECONDS]
                     [--run-id=ID] [--logs=DIR] [--module=MODULE] [-- MAIN_FLAGS...]

Runs 'python -m experiments.main --config=CONFIG --workdir=WORKDIR MAIN_FLAGS...' on all workers
at once (--worker=all) and blocks until they finish; exits with a failing worker's status.

  --config    config file, relative to the repository (e.g. experiments/configs/lm.py)
  --workdir   run directory that EVERY worker sees: a shared mount such as /gcs/BUCKET/runs/x
              (tpu/setup.sh --gcs-bucket=BUCKET). A rerun with the same workdir resumes.
  --port      coordinator port on worker 0 (default 8476). The address is pinned explicitly:
              JAX_COORDINATOR_ADDRESS=<worker 0 internal IP>:PORT, JAX_NUM_PROCESSES=<workers>,
              JAX_PROCESS_ID=<worker index> on each worker.
  --init-timeout  seconds every process waits for all others to join before it aborts
              (default 300): a launch on fewer than all workers fails instead of hanging.
  --run-id    names the logs (default: UTC date and time)
  --logs      local directory for the logs (default \$OPTLIB_TPU_LOGS/RUN_ID, or
              logs/tpu/RUN_ID in this checkout): all.log
              (every worker, line-prefixed, as streamed) and worker-<i>.log (fetched at the end)
  --module    experiments.main (default), or experiments.branch: a WSD main branch and its
              decays (WORKDIR is then its --parent; pass --at=... after --)
  --name, --zone, --project   the TPU VM             [\$TPU_NAME, \$TPU_ZONE, \$TPU_PROJECT]
  MAIN_FLAGS  more flags for the module, e.g. --config.steps=5000
USAGE
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tpu/common.sh
source "$here/common.sh"

config=
workdir=
port=8476
init_timeout=300
run_id=$(date -u +%Y%m%d-%H%M%S)
logs=
module=experiments.main
main_flags=()
while (($#)); do
  case $1 in
    --config=*) config=${1#*=} ;;
    --workdir=*) workdir=${1#*=} ;;
    --name=*) TPU_NAME=${1#*=} ;;
    --zone=*) TPU_ZONE=${1#*=} ;;
    --project=*) TPU_PROJECT=${1#*=} ;;
    --port=*) port=${1#*=} ;;
    --init-timeout=*) init_timeout=${1#*=} ;;
    --run-id=*) run_id=${1#*=} ;;
    --logs=*) logs=${1#*=} ;;
    --module=*) module=${1#*=} ;;
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
if ! [[ "$port" =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
  die "--port must be 1..65535, got '$port'"
fi
if ! [[ "$init_timeout" =~ ^[0-9]+$ ]] || ((init_timeout < 1)); then
  die "--init-timeout must be a positive number of seconds, got '$init_timeout'"
fi
[[ "$run_id" =~ ^[A-Za-z0-9._-]+$ ]] || die "--run-id may hold letters, digits, . _ - only"
dir_flag=--workdir
case $module in
  experiments.main) ;;
  experiments.branch) dir_flag=--parent ;;
  *) die "--module must be experiments.main or experiments.branch, got '$module'" ;;
esac
logs=${logs:-${OPTLIB_TPU_LOGS:-$here/../logs/tpu}/$run_id}

state=$(vm_state)
[[ "$state" == READY ]] || die "TPU VM $TPU_NAME in $TPU_ZONE is $state, not READY"
mapfile -t ips < <(worker_ips)
((${#ips[@]} > 0)) || die "TPU VM $TPU_NAME reports no workers"

# Every worker must answer before anything starts: a launch on a subset would leave the others'
# processes waiting for peers that never come.
answers=$(tpu_ssh all "hostname -I" 2>/dev/null || true)
missing=()
for i in "${!ips[@]}"; do
  grep -qw -- "${ips[$i]}" <<<"$answers" || missing+=("worker $i (${ips[$i]})")
done
if ((${#missing[@]})); then
  die "refusing to launch on fewer than all ${#ips[@]} workers; no answer from: ${missing[*]}"
fi

mkdir -p "$logs"
ip_list=$(
  IFS=,
  echo "${ips[*]}"
)
remote=(bash "$REMOTE_DIR/tpu/worker_run.sh" "--ips=$ip_list" "--port=$port"
  "--run-id=$run_id" "--init-timeout=$init_timeout")
[[ "$module" == experiments.main ]] || remote+=("--module=$module")
remote+=(-- "--config=$config" "$dir_flag=$workdir" "${main_flags[@]}")
command=$(printf '%q ' "${remote[@]}")
log "run $run_id: ${#ips[@]} worker(s), coordinator ${ips[0]}:$port, logs in $logs"
rc=0
tpu_ssh all "$command" 2>&1 | tee "$logs/all.log" || rc=$?

for i in "${!ips[@]}"; do
  tpus tpu-vm scp "$TPU_NAME:optlib-logs/$run_id/worker-$i.log" "$logs/worker-$i.log" \
    --zone="$TPU_ZONE" --worker="$i" >/dev/null 2>&1 ||
    log "could not fetch worker $i's log (see $logs/all.log)"
done
if ((rc)); then
  log "run $run_id failed (exit $rc); logs in $logs"
else
  log "run $run_id finished; logs in $logs"
fi
exit "$rc"
