#!/usr/bin/env bash
# One-time, idempotent set-up of everything attnscope needs on a fresh Debian machine:
#   - Debian packages (the list is in scripts/check-prereqs.sh): PyTorch 1.13 + onnx for
#     export/ (small, unlike PyPI's CUDA-laden wheel; see README "Set-up choices"), OpenBLAS
#     so that PyTorch is not 50x slower, tmux for the terminal end-to-end test, pip, gcc and
#     make, and Debian's cargo-web when there is no cargo at all;
#   - lib/libonnxruntime.so (scripts/fetch-onnxruntime.sh);
#   - build/tokenizers/libtokenizers.a (scripts/build-tokenizers.sh), when that script exists;
#   - .venv, a virtual environment over Debian's python3 that sees its PyTorch;
#   - the Go modules.
# scripts/check-prereqs.sh first says, one sentence each, what is missing or too old and how
# to get it (Go, Rust, Python, apt-get with root or sudo), before anything is installed; it
# lists the Debian packages to install (cargo-web too when there is no cargo at all), and
# checks python3, gcc and make again once they are in.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
# A fresh container has no package lists, and then apt-cache cannot say whether Debian
# offers cargo-web: read them first when we may.
if command -v apt-get >/dev/null && ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null &&
  { [ -z "$SUDO" ] || command -v sudo >/dev/null; }; then
  echo "setup: Debian's package lists are empty: apt-get update" >&2
  $SUDO apt-get update -qq
fi
missing=$(bash scripts/check-prereqs.sh before)
if [ -n "$missing" ]; then
  echo "setup: installing Debian packages: $missing" >&2
  t=$(date +%s)
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086 # one word per package
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
  echo "setup: Debian packages installed in $(( $(date +%s) - t ))s" >&2
fi
bash scripts/check-prereqs.sh after

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
  t=$(date +%s)
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r export/requirements.txt
  cp export/requirements.txt .venv/.requirements.txt
  echo "setup: .venv has export/requirements.txt ($(( $(date +%s) - t ))s)" >&2
fi

go mod download
echo "setup: done in $(( $(date +%s) - start ))s" >&2
