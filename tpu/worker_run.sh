#!/usr/bin/env bash
# Runs ON a TPU worker (tpu/run.sh calls it with --worker=all): finds this worker's process id,
# stops a leftover run of an earlier launch, then runs experiments.main (or --module) with the
# coordinator pinned, logging to ~/optlib-logs/RUN_ID/worker-<id>.log and streaming it prefixed.
set -euo pipefail

usage() {
  echo "usage: $(basename "$0") --ips=IP0,IP1,... --port=PORT --run-id=ID" \
    "[--init-timeout=S] [--module=experiments.main|experiments.branch] -- MAIN_FLAGS..." >&2
}

ip_list=
port=
run_id=
init_timeout=300
module=experiments.main
while (($#)); do
  case $1 in
    --ips=*) ip_list=${1#*=} ;;
    --port=*) port=${1#*=} ;;
    --run-id=*) run_id=${1#*=} ;;
    --init-timeout=*) init_timeout=${1#*=} ;;
    --module=*) module=${1#*=} ;;
    --)
      shift
      break
      ;;
    *)
      usage
      exit 2
      ;;
  esac
  shift
done
[[ -n "$ip_list" && -n "$port" && -n "$run_id" ]] || {
  usage
  exit 2
}
[[ "$module" == experiments.main || "$module" == experiments.branch ]] || {
  usage
  exit 2
}

IFS=, read -r -a ips <<<"$ip_list"
own=" $(hostname -I) "
process_id=
for i in "${!ips[@]}"; do
  if [[ "$own" == *" ${ips[$i]} "* ]]; then
    process_id=$i
  fi
done
if [[ -z "$process_id" ]]; then
  echo "$(hostname): none of my addresses ($own) is in --ips=$ip_list" >&2
  exit 1
fi

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=$HOME/optlib-venv/bin/python
[[ -x "$python" ]] || {
  echo "worker $process_id: $python missing; run tpu/setup.sh" >&2
  exit 1
}
log_dir=$HOME/optlib-logs/$run_id
pid_file=$HOME/optlib-logs/current.pid
mkdir -p "$log_dir"
log_file=$log_dir/worker-$process_id.log

# A run left over from an earlier launch (its ssh session died) still holds the TPU: stop it.
if [[ -f "$pid_file" ]]; then
  old=$(cat "$pid_file")
  if [[ "$old" =~ ^[0-9]+$ ]] && grep -qsE 'experiments\.(main|branch)' "/proc/$old/cmdline"; then
    echo "worker $process_id: stopping leftover run (pid $old)" >&2
    kill -TERM "$old" 2>/dev/null || true
    for _ in $(seq 30); do
      kill -0 "$old" 2>/dev/null || break
      sleep 1
    done
    kill -KILL "$old" 2>/dev/null || true
  fi
  rm -f "$pid_file"
fi

cd "$repo"
export JAX_COORDINATOR_ADDRESS="${ips[0]}:$port"
export JAX_NUM_PROCESSES=${#ips[@]}
export JAX_PROCESS_ID=$process_id
export EXPERIMENTS_INIT_TIMEOUT_S=$init_timeout
export PYTHONUNBUFFERED=1
# nohup: the run survives a dropped ssh session; the next launch stops it through the pid file.
nohup "$python" -m "$module" "$@" >"$log_file" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$pid_file"
tail -n +1 -F --pid="$pid" "$log_file" 2>/dev/null | sed -u "s/^/[worker $process_id] /" &
rc=0
wait "$pid" || rc=$?
wait || true # the log stream ends with the run
rm -f "$pid_file"
echo "[worker $process_id] exit $rc"
exit "$rc"
