#!/usr/bin/env bash
# What exposing a model fused by onnxruntime's transformer optimizer costs: a
# GPT-2-small-sized graph whose attention is com.microsoft.Attention (export/
# fused_bench_model.py, random weights, ~650 MB) run as it is (the fused kernel, logits only)
# and with all 144 heads' attention exposed (attnscope rewrites each node into standard
# operators), at T = 128, 512, 1024, two rounds, alternating. Prints JSON lines; the
# numbers are in BENCHMARKS.md ("Fused models"). About 3 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=build/bench
MODEL=$OUT/fused-gpt2s.onnx
REPS=${REPS:-5}
mkdir -p "$OUT"
if [ ! -f "$MODEL" ]; then
  echo "bench: building the fused GPT-2-small-sized model (~650 MB)" >&2
  .venv/bin/python -m export.fused_bench_model --out "$MODEL"
fi
go build -o "$OUT/benchspine" ./scripts/benchspine
for round in 1 2; do
  for mode in plain attn; do
    echo "bench: fused model, $mode, round $round" >&2
    "$OUT/benchspine" -model "$MODEL" -mode "$mode" -reps "$REPS" | sed "s/^{/{\"round\":$round,/"
  done
done
