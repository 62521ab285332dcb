#!/usr/bin/env bash
# Installs the project with the TPU build of jax on every worker of a TPU VM. Idempotent.
set -euo pipefail

usage() {
  cat <<USAGE
usage: $(basename "$0") [--name=NAME] [--zone=ZONE] [--project=PROJECT]
                        [--source=copy|git] [--git-url=URL] [--ref=REF]
                        [--python=PYTHON] [--gcs-bucket=BUCKET] [--data=gs://BUCKET/data/NAME]

On every worker (--worker=all): puts the project in ~/\$OPTLIB_REMOTE_DIR (default ~/optlib),
creates ~/optlib-venv with Python >= 3.11 and runs pip install -e '.[tpu]' there. Run it
again after changing the code: it replaces the code and re-runs pip (fast when nothing changed).

  --name, --zone, --project   the TPU VM                [\$TPU_NAME, \$TPU_ZONE, \$TPU_PROJECT]
  --source    copy: the files of this checkout (tracked and untracked, not ignored), copied
              with gcloud scp (default). git: clone / fetch --git-url at --ref on each worker.
  --git-url   repository URL for --source=git
  --ref       branch, tag or commit for --source=git (default: main)
  --python    Python (>= 3.11) on the workers for the venv (default: the newest found;
              python3.11 is installed with apt when none is)
  --gcs-bucket  also install gcsfuse and mount gs://BUCKET at /gcs/BUCKET on every worker,
              a workdir that all workers share (see tpu/README.md)
  --data      also copy this prepared corpus (tpu/prepare_data.sh) to ~/optlib-data/NAME on
              every worker and check it (repeat for several); train on it with
              --config.workload.data='~/optlib-data/NAME'
USAGE
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tpu/common.sh
source "$here/common.sh"

source_kind=copy
git_url=
ref=main
python=
bucket=
data=()
while (($#)); do
  case $1 in
    --name=*) TPU_NAME=${1#*=} ;;
    --zone=*) TPU_ZONE=${1#*=} ;;
    --project=*) TPU_PROJECT=${1#*=} ;;
    --source=*) source_kind=${1#*=} ;;
    --git-url=*) git_url=${1#*=} ;;
    --ref=*) ref=${1#*=} ;;
    --python=*) python=${1#*=} ;;
    --gcs-bucket=*) bucket=${1#*=} ;;
    --data=*)
      [[ "${1#*=}" == gs://* ]] || die "--data must be a gs:// path, got '${1#*=}'"
      data+=("${1#*=}")
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
case $source_kind in
  copy) ;;
  git) [[ -n "$git_url" ]] || die "--source=git needs --git-url" ;;
  *) die "--source must be copy or git, got '$source_kind'" ;;
esac

state=$(vm_state)
[[ "$state" == READY ]] || die "TPU VM $TPU_NAME in $TPU_ZONE is $state, not READY (tpu/create_vm.sh)"
num_workers=$(worker_ips | wc -l)
log "installing on all $num_workers worker(s) of $TPU_NAME"

remote_dir=$(printf %q "$REMOTE_DIR")
if [[ "$source_kind" == copy ]]; then
  repo=$(cd "$here/.." && pwd)
  archive=$(mktemp "${TMPDIR:-/tmp}/optlib-src.XXXXXX.tar.gz")
  trap 'rm -f "$archive"' EXIT
  # The checkout's files as git sees them: tracked plus untracked-but-not-ignored, so local
  # edits travel and .venv, runs/ and caches do not.
  (cd "$repo" && git ls-files -z --cached --others --exclude-standard |
    tar --null --files-from=- --ignore-failed-read -czf "$archive")
  tpus tpu-vm scp "$archive" "$TPU_NAME:optlib-src.tar.gz" --zone="$TPU_ZONE" --worker=all
  # Unpack into a fresh directory and swap, so files deleted here disappear there too.
  tpu_ssh all "set -e; rm -rf $remote_dir.new; mkdir -p $remote_dir.new;
    tar -xzf optlib-src.tar.gz -C $remote_dir.new; rm -f optlib-src.tar.gz;
    rm -rf $remote_dir; mv $remote_dir.new $remote_dir"
else
  url=$(printf %q "$git_url")
  rev=$(printf %q "$ref")
  tpu_ssh all "set -e; if [ ! -d $remote_dir/.git ]; then git clone --quiet $url $remote_dir; fi;
    git -C $remote_dir fetch --quiet origin $rev;
    git -C $remote_dir checkout --quiet --force --detach FETCH_HEAD"
fi

worker_args=()
[[ -n "$python" ]] && worker_args+=("--python=$python")
[[ -n "$bucket" ]] && worker_args+=("--gcs-bucket=$bucket")
quoted=""
if ((${#worker_args[@]})); then
  quoted=$(printf ' %q' "${worker_args[@]}")
fi
tpu_ssh all "bash $remote_dir/tpu/worker_setup.sh$quoted"
for corpus in "${data[@]}"; do
  log "staging $corpus on all $num_workers worker(s)"
  tpu_ssh all "bash $remote_dir/tpu/worker_stage_data.sh $(printf %q "--from=$corpus")"
done
log "installed on all $num_workers worker(s); next: tpu/run.sh"
