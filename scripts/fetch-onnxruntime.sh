#!/usr/bin/env bash
# Puts the onnxruntime CPU shared library under lib/, taken from the PyPI wheel
# onnxruntime==1.24.1, the release whose C API matches github.com/yalue/onnxruntime_go
# v1.27.0 (see go.mod). Both the wheel and the library inside it are checked by sha256.
# Idempotent: does nothing when lib/ already holds the checked library.
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_VERSION=1.24.1
WHEEL=onnxruntime-${ORT_VERSION}-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl
WHEEL_SHA256=1cabe71ca14dcfbf812d312aab0a704507ac909c137ee6e89e4908755d0fc60e
LIB=libonnxruntime.so.${ORT_VERSION}
LIB_SHA256=94ac52f650e195b784587e1cb7d25b4bf074048b50fa9a7127795b2ed34db22e

if [ -f "lib/$LIB" ] && echo "$LIB_SHA256  lib/$LIB" | sha256sum --check --status; then
  exit 0
fi
if [ "$(uname -sm)" != "Linux x86_64" ]; then
  echo "fetch-onnxruntime: only linux/x86_64 is scripted; install onnxruntime $ORT_VERSION yourself and pass --ort-lib or set ONNXRUNTIME_SHARED_LIBRARY_PATH" >&2
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The first python3 with pip: the one on PATH (a pyenv or conda one may lack pip), else Debian's.
PY=""
for p in python3 /usr/bin/python3; do
  if command -v "$p" >/dev/null && "$p" -m pip --version >/dev/null 2>&1; then PY=$p; break; fi
done
if [ -z "$PY" ]; then
  echo "fetch-onnxruntime: no python3 here has pip to download the onnxruntime wheel with; install Debian's python3-pip (scripts/setup.sh does)" >&2
  exit 1
fi
echo "fetch-onnxruntime: downloading onnxruntime==$ORT_VERSION from PyPI" >&2
"$PY" -m pip download --quiet --no-deps --only-binary=:all: \
  --platform manylinux_2_28_x86_64 --python-version 3.11 --implementation cp \
  "onnxruntime==$ORT_VERSION" -d "$tmp"
echo "$WHEEL_SHA256  $tmp/$WHEEL" | sha256sum --check --quiet
"$PY" - "$tmp/$WHEEL" "$tmp" "$LIB" <<'PY'
import sys, zipfile
wheel, out, lib = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    z.extract("onnxruntime/capi/" + lib, out)
PY
echo "$LIB_SHA256  $tmp/onnxruntime/capi/$LIB" | sha256sum --check --quiet
mkdir -p lib
mv "$tmp/onnxruntime/capi/$LIB" "lib/$LIB"
ln -sf "$LIB" lib/libonnxruntime.so
echo "fetch-onnxruntime: lib/$LIB ready" >&2
