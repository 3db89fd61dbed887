#!/usr/bin/env bash
# One-time, idempotent set-up of everything attnscope needs on a fresh Debian machine:
#   - Debian packages: PyTorch 1.13 + onnx for export/ (small, unlike PyPI's CUDA-laden
#     wheel; see README "Set-up choices"), OpenBLAS so that PyTorch is not 50x slower,
#     tmux for the terminal end-to-end test;
#   - lib/libonnxruntime.so (scripts/fetch-onnxruntime.sh);
#   - build/tokenizers/libtokenizers.a (scripts/build-tokenizers.sh), when that script exists;
#   - .venv, a virtual environment over Debian's python3 that sees its PyTorch;
#   - the Go modules.
# What Debian cannot provide at a usable version (Go, cargo) is checked first by
# scripts/check-prereqs.sh, which says what is needed and how to get it.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/check-prereqs.sh

# python3-pip: scripts/fetch-onnxruntime.sh downloads the onnxruntime wheel with pip.
DEBIAN_PACKAGES="python3-torch python3-onnx python3-venv python3-pip libopenblas0-pthread tmux python3-matplotlib"

missing=""
for p in $DEBIAN_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if ! command -v apt-get >/dev/null; then
    echo "setup: these Debian packages are missing and this is not a Debian-like system with apt-get; install their equivalents:$missing" >&2
    exit 1
  fi
  if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null; then
    echo "setup: installing Debian packages needs root or sudo; as root, run: apt-get install$missing" >&2
    exit 1
  fi
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "setup: installing Debian packages:$missing" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

bash scripts/fetch-onnxruntime.sh
if [ -f scripts/build-tokenizers.sh ]; then
  bash scripts/build-tokenizers.sh
fi

# The venv is made from Debian's interpreter so that it sees Debian's torch and onnx.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import torch, onnx' 2>/dev/null; then
  rm -rf .venv
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
if ! cmp -s export/requirements.txt .venv/.requirements.txt 2>/dev/null; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r export/requirements.txt
  cp export/requirements.txt .venv/.requirements.txt
fi

go mod download
echo "setup: done" >&2
