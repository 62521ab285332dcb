#!/usr/bin/env bash
# Copies run directories (metrics, configs, lineage; no checkpoints) from a GCS bucket to this
# machine, where experiments.report and experiments.predict read them.
set -euo pipefail

usage() {
  cat <<USAGE
usage: $(basename "$0") --bucket=BUCKET --run=PATH [--run=PATH...] [--to=DIR]

Each --run is a path inside the bucket (e.g. runs/gpt2_small, as /gcs/BUCKET/runs/gpt2_small on
the workers); it is synced to DIR/PATH (default DIR: this checkout), branches included, with
checkpoints/ left out. Rerun it to pick up new records.
USAGE
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tpu/common.sh
source "$here/common.sh"

bucket=
runs=()
to=$(cd "$here/.." && pwd)
while (($#)); do
  case $1 in
    --bucket=*) bucket=${1#*=} ;;
    --run=*) runs+=("${1#*=}") ;;
    --to=*) to=${1#*=} ;;
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
if [[ -z "$bucket" ]] || ((${#runs[@]} == 0)); then
  usage >&2
  die "--bucket and --run are required"
fi
bucket=${bucket#gs://}
for run in "${runs[@]}"; do
  run=${run#/gcs/"$bucket"/}
  run=${run%/}
  log "gs://$bucket/$run -> $to/$run"
  mkdir -p "$to/$run"
  "$GCLOUD" storage rsync --recursive --exclude='(^|/)checkpoints/' "gs://$bucket/$run" "$to/$run"
done
