#!/usr/bin/env bash
# The ablation benchmark (issue 12) on the GPT-2-small-sized model of `make bench`: a plain
# forward pass, the same pass with the mask inputs and nothing off, and inspect ablate's
# 144-head single-head sweep (batched, and one run per call) on one 128-token prompt.
# Prints a Markdown table for the Ablation section of BENCHMARKS.md (about 10 minutes on 2
# cores with REPS=3).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=build/bench
MODEL=$(bash scripts/bench-model.sh)
go build -o "$OUT/benchablate" ./scripts/benchablate
echo "bench: ablation (load $(cut -d' ' -f1 /proc/loadavg))" >&2
"$OUT/benchablate" -model "$MODEL" -T "${T:-128}" -reps "${REPS:-3}"
