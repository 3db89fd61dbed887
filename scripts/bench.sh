#!/usr/bin/env bash
# `make bench`: the spine's benchmark on a GPT-2-small-sized model (12 layers, 12 heads,
# d 768, vocab 50257, random weights made by export/, nothing downloaded). Measures, in one
# run: session creation, onnxruntime forward time at T = 128, 512, 1024 without and with
# the exposed attention, PyTorch eager on the same model (best of 1 and 2 threads), and
# peak RSS; then rewrites the "Spine" section of BENCHMARKS.md with the numbers.
# Takes about 5 minutes on 2 cores; run it on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=build/bench
MODEL=$(bash scripts/bench-model.sh)
REPS=${REPS:-5}
mkdir -p "$OUT"

go build -o "$OUT/benchspine" ./scripts/benchspine

results=$OUT/results.jsonl
: > "$results"
for round in 1 2; do
  for mode in plain attn; do
    echo "bench: onnxruntime, $mode, round $round" >&2
    "$OUT/benchspine" -model "$MODEL" -mode "$mode" -reps "$REPS" | sed "s/^{/{\"round\":$round,/" >> "$results"
  done
done
for threads in 1 2; do
  echo "bench: PyTorch eager, $threads thread(s)" >&2
  $PY -m export.bench_model torch-time --T 128 512 1024 --reps "$REPS" --threads "$threads" \
    | sed "s/^{/{\"mode\":\"torch\",/" >> "$results"
done
$PY scripts/bench_report.py spine "$results" BENCHMARKS.md
echo "bench: BENCHMARKS.md updated" >&2
