#!/usr/bin/env bash
# Puts the onnxruntime CPU shared library under lib/, taken from the PyPI wheel
# onnxruntime==1.24.1, the release whose C API matches github.com/yalue/onnxruntime_go
# v1.27.0 (see go.mod). Both the wheel and the library inside it are checked by sha256.
# Idempotent: does nothing when lib/ already holds the checked library.
#
#   bash scripts/fetch-onnxruntime.sh --gpu
# puts the GPU build instead under lib/gpu/, from the wheel onnxruntime-gpu==1.24.1 (~250 MB
# download, ~390 MB unpacked): libonnxruntime.so (+ .so.1.24.1), libonnxruntime_providers_cuda.so
# and libonnxruntime_providers_shared.so, each checked by sha256. That build needs CUDA 12 and
# cuDNN 9 on the machine that runs it (libcudart.so.12, libcublas(Lt).so.12, libcurand.so.10,
# libcufft.so.11, libcudnn.so.9); `bin/inspect doctor --ort-lib lib/gpu/libonnxruntime.so` says
# whether its CUDA provider loads. Needs PyPI: run it where the network reaches it.
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_VERSION=1.24.1
case "${1:-}" in
  "") ;;
  --gpu) GPU=1 ;;
  *) echo "usage: bash scripts/fetch-onnxruntime.sh [--gpu]" >&2; exit 2 ;;
esac

WHEEL=onnxruntime-${ORT_VERSION}-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl
WHEEL_SHA256=1cabe71ca14dcfbf812d312aab0a704507ac909c137ee6e89e4908755d0fc60e
LIB=libonnxruntime.so.${ORT_VERSION}
LIB_SHA256=94ac52f650e195b784587e1cb7d25b4bf074048b50fa9a7127795b2ed34db22e

if [ "${GPU:-}" = 1 ]; then
  WHEEL=onnxruntime_gpu-${ORT_VERSION}-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl
  WHEEL_SHA256=ac4bfc90c376516b13d709764ab257e4e3d78639bf6a2ccfc826e9db4a5c7ddf
  # name sha256, for each library taken from the wheel's onnxruntime/capi/
  GPU_LIBS="libonnxruntime.so.${ORT_VERSION} 62bb33b8600d5e5751faba2dc5944fc01adf73aadf3a0e619095a0a0933886b4
libonnxruntime_providers_cuda.so 72544c3ad0fc50d0b30af11fb702a4fd526b340c9c5b1b6f64ceea76d7644682
libonnxruntime_providers_shared.so 086ec1d5388f64153d9c63470d126693db9a182c8ce236d3a1119068471b8a0d"
  checked=1
  while read -r name sum; do
    echo "$sum  lib/gpu/$name" | sha256sum --check --status 2>/dev/null || checked=0
  done <<<"$GPU_LIBS"
  if [ "$checked" = 1 ]; then
    ln -sf "libonnxruntime.so.${ORT_VERSION}" lib/gpu/libonnxruntime.so # in case only the link went
    exit 0
  fi
elif [ -f "lib/$LIB" ] && echo "$LIB_SHA256  lib/$LIB" | sha256sum --check --status; then
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
PACKAGE=onnxruntime
[ "${GPU:-}" = 1 ] && PACKAGE=onnxruntime-gpu
echo "fetch-onnxruntime: downloading $PACKAGE==$ORT_VERSION from PyPI" >&2
"$PY" -m pip download --quiet --no-deps --only-binary=:all: \
  --platform manylinux_2_28_x86_64 --python-version 3.11 --implementation cp \
  "$PACKAGE==$ORT_VERSION" -d "$tmp"
echo "$WHEEL_SHA256  $tmp/$WHEEL" | sha256sum --check --quiet

if [ "${GPU:-}" = 1 ]; then
  names=()
  while read -r name _; do names+=("onnxruntime/capi/$name"); done <<<"$GPU_LIBS"
  "$PY" - "$tmp/$WHEEL" "$tmp" "${names[@]}" <<'PY'
import sys, zipfile
wheel, out, *members = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    for m in members:
        z.extract(m, out)
PY
  while read -r name sum; do
    echo "$sum  $tmp/onnxruntime/capi/$name" | sha256sum --check --quiet
  done <<<"$GPU_LIBS"
  mkdir -p lib/gpu
  while read -r name _; do
    mv "$tmp/onnxruntime/capi/$name" "lib/gpu/$name"
  done <<<"$GPU_LIBS"
  ln -sf "libonnxruntime.so.$ORT_VERSION" lib/gpu/libonnxruntime.so
  echo "fetch-onnxruntime: lib/gpu/ ready (onnxruntime-gpu $ORT_VERSION; it needs CUDA 12 and cuDNN 9 where it runs)" >&2
  exit 0
fi
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
