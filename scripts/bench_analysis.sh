#!/usr/bin/env bash
# The analysis benchmark (issue 5) on the GPT-2-small-sized model of `make bench`: one
# forward pass of the probe batch (batched and one by one), the whole head census of
# `inspect heads`, and corpus mode at T = 128 against plain forward passes; then rewrites
# the "Analysis" section of BENCHMARKS.md. Two rounds; run it on a quiet machine
# (about 3 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=build/bench
MODEL=$(bash scripts/bench-model.sh)
REPS=${REPS:-3}
mkdir -p "$OUT"
go build -o "$OUT/benchanalysis" ./scripts/benchanalysis
results=$OUT/analysis.jsonl
: > "$results"
for round in 1 2; do
  echo "bench: analysis, round $round (load $(cut -d' ' -f1 /proc/loadavg))" >&2
  "$OUT/benchanalysis" -model "$MODEL" -reps "$REPS" | sed "s/^{/{\"round\":$round,\"load\":$(cut -d' ' -f1 /proc/loadavg),/" >> "$results"
done
$PY scripts/bench_report.py analysis "$results" BENCHMARKS.md
echo "bench: BENCHMARKS.md updated" >&2
