#!/usr/bin/env bash
# Runs ON a TPU worker (tpu/setup.sh calls it with --worker=all): the venv and the TPU build
# of jax, and optionally a gcsfuse mount. Idempotent.
set -euo pipefail

usage() {
  echo "usage: $(basename "$0") [--python=PYTHON] [--gcs-bucket=BUCKET]" >&2
}

python=
bucket=
while (($#)); do
  case $1 in
    --python=*) python=${1#*=} ;;
    --gcs-bucket=*) bucket=${1#*=} ;;
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

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$HOME/optlib-venv
worker=$(hostname)

is_new_enough() {
  command -v "$1" >/dev/null 2>&1 &&
    "$1" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1
}

if [[ -z "$python" ]]; then
  for candidate in python3.13 python3.12 python3.11 python3; do
    if is_new_enough "$candidate"; then
      python=$candidate
      break
    fi
  done
fi
if [[ -z "$python" ]]; then
  # Ubuntu 22.04 TPU images ship Python 3.10; 3.11 is in the distribution's universe.
  echo "$worker: installing python3.11 with apt" >&2
  sudo DEBIAN_FRONTEND=noninteractive apt-get update -qq
  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3.11 python3.11-venv
  python=python3.11
fi
is_new_enough "$python" || {
  echo "$worker: $python is not Python >= 3.11 with venv" >&2
  exit 1
}

if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c '' 2>/dev/null; then
  rm -rf "$venv"
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -e "${repo}[tpu]"
# Import only: initialising the TPU backend on one worker of a multi-host slice would wait
# for the others.
"$venv/bin/python" -c 'import importlib.metadata as m, jax, libtpu, optlib
print(f"jax {jax.__version__}, libtpu {m.version(\"libtpu\")}, optlib ok")' |
  sed "s/^/$worker: /"

if [[ -n "$bucket" ]]; then
  if ! command -v gcsfuse >/dev/null 2>&1; then
    echo "$worker: installing gcsfuse" >&2
    codename=$(lsb_release -c -s)
    curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg |
      sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null
    echo "deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-$codename main" |
      sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null
    sudo DEBIAN_FRONTEND=noninteractive apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcsfuse
  fi
  mount_point=/gcs/$bucket
  if ! mountpoint -q "$mount_point"; then
    sudo mkdir -p "$mount_point"
    sudo chown "$(id -u):$(id -g)" "$mount_point"
    # Orbax finishes a checkpoint by renaming its temporary directory: allow directory renames.
    gcsfuse --implicit-dirs --rename-dir-limit=200000 "$bucket" "$mount_point"
  fi
  echo "$worker: gs://$bucket mounted at $mount_point"
fi
