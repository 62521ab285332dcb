#!/usr/bin/env bash
# Runs ON a TPU worker (tpu/setup.sh --data=... calls it with --worker=all): copies a prepared
# corpus from GCS to this worker's disk (memory-mapped reads need a local file), checks it
# against its manifest (sizes, checksums, token ids), then moves it into place. Idempotent: a
# copy whose manifest equals the bucket's is kept.
set -euo pipefail

usage() {
  echo "usage: $(basename "$0") --from=gs://BUCKET/data/NAME [--to=DIR]" >&2
  echo "  --to  default ~/optlib-data/NAME (config: --config.workload.data='~/optlib-data/NAME')" >&2
}

from=
to=
while (($#)); do
  case $1 in
    --from=*) from=${1#*=} ;;
    --to=*) to=${1#*=} ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      usage
      exit 2
      ;;
  esac
  shift
done
[[ "$from" == gs://* ]] || {
  usage
  exit 2
}
from=${from%/}
to=${to:-$HOME/optlib-data/${from##*/}}
gcloud=${GCLOUD:-gcloud}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=$HOME/optlib-venv/bin/python
worker=$(hostname)

remote_manifest=$("$gcloud" storage cat "$from/manifest.json") || {
  echo "$worker: no $from/manifest.json: not a prepared corpus, or its upload did not finish" >&2
  exit 1
}
if [[ -f "$to/manifest.json" ]] && [[ "$(cat "$to/manifest.json")" == "$remote_manifest" ]]; then
  echo "$worker: $to is up to date with $from"
  exit 0
fi
partial=$to.partial
rm -rf "$partial"
mkdir -p "$partial"
"$gcloud" storage cp "$from/manifest.json" "$from/train.bin" "$from/val.bin" "$partial/"
if ! (cd "$repo" && "$python" -m experiments.data check "$partial" >/dev/null); then
  rm -rf "$partial"
  echo "$worker: the copy of $from failed its checks; nothing staged" >&2
  exit 1
fi
rm -rf "$to"
mv "$partial" "$to"
echo "$worker: staged $from at $to"
