#!/usr/bin/env bash
# Tokenises a corpus here (python -m experiments.data prepare) and uploads it to a GCS bucket,
# the manifest last, so a partial upload is never taken for a complete corpus.
set -euo pipefail

usage() {
  cat <<USAGE
usage: $(basename "$0") --input=GLOB [--input=GLOB...] --bucket=BUCKET --name=NAME
                           [--tokenizer=SPEC] [--val-fraction=F] [--text-field=KEY]
                           [--local=DIR] [--python=PYTHON]

Writes the prepared corpus to --local (default data/NAME in this checkout; reused if it is
already there and passes its checks), then copies it to gs://BUCKET/data/NAME/: train.bin and
val.bin first, manifest.json last. Workers fetch it with tpu/setup.sh --data=gs://BUCKET/data/NAME.

  --input       a file or glob (quote it; ** recurses); repeat for several
  --tokenizer   bytes (default), sentencepiece:PATH.model or hf:PATH/tokenizer.json
  --val-fraction, --text-field   as in python -m experiments.data prepare
  --python      the Python with this project installed (default: \$PYTHON or python3)
USAGE
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tpu/common.sh
source "$here/common.sh"

inputs=()
bucket=
name=
local_dir=
python=${PYTHON:-python3}
prepare_args=()
while (($#)); do
  case $1 in
    --input=*) inputs+=(--input "${1#*=}") ;;
    --bucket=*) bucket=${1#*=} ;;
    --name=*) name=${1#*=} ;;
    --tokenizer=*) prepare_args+=(--tokenizer "${1#*=}") ;;
    --val-fraction=*) prepare_args+=(--val_fraction "${1#*=}") ;;
    --text-field=*) prepare_args+=(--text_field "${1#*=}") ;;
    --local=*) local_dir=${1#*=} ;;
    --python=*) python=${1#*=} ;;
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
if ((${#inputs[@]} == 0)) || [[ -z "$bucket" || -z "$name" ]]; then
  usage >&2
  die "--input, --bucket and --name are required"
fi
[[ "$name" =~ ^[A-Za-z0-9._-]+$ ]] || die "--name may hold letters, digits, . _ - only"
bucket=${bucket#gs://}
local_dir=${local_dir:-$here/../data/$name}
remote=gs://$bucket/data/$name

repo=$(cd "$here/.." && pwd)
if [[ -f "$local_dir/manifest.json" ]]; then
  log "reusing $local_dir (checking it against its manifest)"
  (cd "$repo" && "$python" -m experiments.data check "$local_dir") >/dev/null
else
  (cd "$repo" && "$python" -m experiments.data prepare "${inputs[@]}" --out "$local_dir" \
    "${prepare_args[@]}")
fi
log "uploading to $remote/"
"$GCLOUD" storage cp "$local_dir/train.bin" "$local_dir/val.bin" "$remote/"
"$GCLOUD" storage cp "$local_dir/manifest.json" "$remote/manifest.json"
log "done; on the workers: tpu/setup.sh --data=$remote, then" \
  "--config.workload.data='~/optlib-data/$name'"
