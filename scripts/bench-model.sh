#!/usr/bin/env bash
# The GPT-2-small-sized benchmark model (export/bench_model.py: 12 layers × 12 heads, random
# weights, seed 0), exported with PyTorch the first time it is asked for (~650 MB).
#   bash scripts/bench-model.sh [POSITIONS]   prints the path of its model.onnx
# POSITIONS (default GPT-2's 1024) is the position table's size; 1024 is
# build/bench/gpt2-small, others build/bench/gpt2-small-<N/1024>k.
set -euo pipefail
cd "$(dirname "$0")/.."
positions=${1:-1024}
dir=build/bench/gpt2-small
[ "$positions" = 1024 ] || dir=build/bench/gpt2-small-$((positions / 1024))k
if [ ! -f "$dir/model.onnx" ]; then
  echo "bench: exporting the GPT-2-small-sized model with $positions positions (~650 MB) with PyTorch" >&2
  .venv/bin/python -m export.bench_model export --out "$dir" --positions "$positions" >&2
fi
echo "$dir/model.onnx"
