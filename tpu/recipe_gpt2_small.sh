#!/usr/bin/env bash
# End to end: your corpus -> a bucket -> gpt2_small's WSD main branch and its decays on a TPU
# slice (through preemptions) -> the runs' records back here for experiments.report / .predict.
set -euo pipefail

usage() {
  cat <<USAGE
usage: $(basename "$0") --input=GLOB [--input=GLOB...] --bucket=BUCKET [--name=CORPUS]
                             [--at=2000,5000,10000] [--decay-fraction=0.2] [--shape=1-sqrt]
                             [--config=experiments/configs/gpt2_small.py] [--run=runs/NAME]
                             [--tokenizer=SPEC] [--type=v5litepod-8] [--version=RUNTIME]
                             [--spot] [--queued] [--name-vm=NAME] [--zone=ZONE] [--project=P]
                             [--local=DIR] [--fetch-to=DIR] [--poll=SECONDS] [-- MORE_FLAGS...]

  1. tpu/prepare_data.sh: tokenise --input here, upload to gs://BUCKET/data/CORPUS
  2. tpu/relaunch.sh --module=experiments.branch: create the VM (default a v5e-8,
     --type=v4-8 --version=tpu-ubuntu2204-base for a v4-8), install, stage the corpus on every
     worker, run the WSD main branch of --config to the last --at step keeping a checkpoint at
     each, then branch a decay off each (--decay-fraction of the branch, --shape); workdir
     /gcs/BUCKET/RUN; restarts after preemptions, resuming from the last checkpoint
  3. tpu/fetch_runs.sh: the main branch's and the branches' records to ./RUN (no checkpoints;
     --fetch-to=DIR instead of this checkout)
  4. prints the commands that fit the loss laws on the main branch and its first decay and
     predict the others (experiments.predict), and the report

MORE_FLAGS go to experiments.branch (e.g. --config.workload.batch_size=128). The VM is left
running at the end: delete it with gcloud compute tpus tpu-vm delete.
USAGE
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tpu/common.sh
source "$here/common.sh"

data_args=()
bucket=
corpus=mycorpus
at=2000,5000,10000
decay_fraction=0.2
shape=1-sqrt
config=experiments/configs/gpt2_small.py
run=
vm_args=()
vm_type=v5litepod-8
version=v2-alpha-tpuv5-lite
capacity=()
poll=60
fetch_to=$(cd "$here/.." && pwd)
more=()
while (($#)); do
  case $1 in
    --input=* | --tokenizer=* | --val-fraction=* | --text-field=* | --python=* | --local=*)
      data_args+=("$1")
      ;;
    --fetch-to=*) fetch_to=${1#*=} ;;
    --bucket=*) bucket=${1#*=} ;;
    --name=*) corpus=${1#*=} ;;
    --at=*) at=${1#*=} ;;
    --decay-fraction=*) decay_fraction=${1#*=} ;;
    --shape=*) shape=${1#*=} ;;
    --config=*) config=${1#*=} ;;
    --run=*) run=${1#*=} ;;
    --type=*) vm_type=${1#*=} ;;
    --version=*) version=${1#*=} ;;
    --spot | --queued) capacity+=("$1") ;;
    --name-vm=*) vm_args+=("--name=${1#*=}") ;;
    --zone=* | --project=*) vm_args+=("$1") ;;
    --poll=*) poll=${1#*=} ;;
    --)
      shift
      more=("$@")
      break
      ;;
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
[[ -n "$bucket" ]] || {
  usage >&2
  die "--bucket is required"
}
bucket=${bucket#gs://}
[[ "$at" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--at must be fork steps like 2000,5000,10000"
create_args=(--type="$vm_type" --version="$version" "${capacity[@]}")
run=${run:-runs/$(basename "$config" .py)_$corpus}

log "1/4 corpus -> gs://$bucket/data/$corpus"
"$here/prepare_data.sh" "${data_args[@]}" --bucket="$bucket" --name="$corpus"

log "2/4 WSD main branch and decays at $at on the TPU slice (workdir /gcs/$bucket/$run)"
"$here/relaunch.sh" "${vm_args[@]}" "${create_args[@]}" --poll="$poll" \
  --gcs-bucket="$bucket" --data="gs://$bucket/data/$corpus" --module=experiments.branch \
  --config="$config" --workdir="/gcs/$bucket/$run" -- \
  --at="$at" --decay_fraction="$decay_fraction" --shape="$shape" \
  "--config.workload.data=~/optlib-data/$corpus" --config.progress_bar=False "${more[@]}"

log "3/4 records -> ./$run"
"$here/fetch_runs.sh" --bucket="$bucket" --run="$run" --to="$fetch_to"

first=${at%%,*}
log "4/4 fit the loss laws on the main branch and its first decay, predict the other decays:"
echo "  python -m experiments.predict --fit $run $run/branches/at_$first --measured $run \\"
echo "      --out $run/predict"
echo "  python -m experiments.report $run --out $run/report"
