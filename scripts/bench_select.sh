#!/usr/bin/env bash
# Peak memory of a layer selection: `inspect heads` (and `dump`) on the GPT-2-small-sized
# bench model (12 layers × 12 heads, random weights, see scripts/bench.sh) with --layer 0
# against every layer, at T = 1024 (build/bench/gpt2-small, GPT-2's 1024 positions) and
# T = 4096 (build/bench/gpt2-small-4k: the same model exported with a 4096-row position
# table, `python -m export.bench_model export --positions 4096`, made here when missing).
# Peak RSS and wall time come from /usr/bin/time -v. Prints a Markdown table for the
# "Selections" section of BENCHMARKS.md and the refusal --max-memory gives by default.
# Needs about 14 GB of free memory for the all-layer run at 4096 tokens.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=build/bench
BIN=$OUT/inspect-select
M1K=$(bash scripts/bench-model.sh)
M4K=$(bash scripts/bench-model.sh 4096)
export ONNXRUNTIME_SHARED_LIBRARY_PATH=${ONNXRUNTIME_SHARED_LIBRARY_PATH:-$PWD/lib/libonnxruntime.so}

go build -o "$BIN" ./cmd/inspect

ids() { # $1 seeded random ids below GPT-2's vocabulary
  $PY -c "import random; r = random.Random(0); print(','.join(str(r.randrange(50257)) for _ in range($1)))"
}

# measure LABEL T MODEL ARGS…: one run under /usr/bin/time -v; prints a table row.
measure() {
  local label=$1 T=$2 model=$3; shift 3
  local log
  log=$(mktemp)
  /usr/bin/time -v "$BIN" "$@" "$model" --ids "$(ids "$T")" --device cpu --max-memory 20GiB >/dev/null 2>"$log" || {
    echo "bench: $label at T=$T failed:" >&2; tail -3 "$log" >&2; rm -f "$log"; return 1; }
  local rss wall
  rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2/1024}' "$log")
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$log")
  rm -f "$log"
  # attention outputs: 12 heads × T² × 4 bytes per exposed layer
  local layers=12
  case "$*" in *"--layer 0"*) layers=1 ;; esac
  local attn=$(( layers * 12 * T * T * 4 / 1048576 ))
  printf '| %s | %d | %d | %d MiB | %s MiB | %s |\n' "$label" "$T" "$layers" "$attn" "$rss" "$wall"
}

echo "| command | T | layers exposed | attention outputs | peak RSS | wall |"
echo "|---|---:|---:|---:|---:|---:|"
for T in 1024 4096; do
  model=$M1K
  [ "$T" -gt 1024 ] && model=$M4K
  measure "heads --layer 0" "$T" "$model" heads --layer 0 --probes 1
  measure "heads (all layers)" "$T" "$model" heads --probes 1
  measure "dump --layer 0 --head 0" "$T" "$model" dump --layer 0 --head 0
done
measure "dump --head 0 (all layers)" 1024 "$M1K" dump --head 0

echo
echo "Without --max-memory (default: a quarter of this machine's memory), all layers at 4096 tokens:"
"$BIN" dump "$M4K" --ids "$(ids 4096)" --device cpu 2>&1 >/dev/null | sed 's/^/    /' || true
