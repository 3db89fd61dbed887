#!/usr/bin/env bash
# The terminal UI's benchmarks: frame build times (Go benchmarks in tui/), bytes written
# for a cursor move in 256 colours, and time to first frame for the committed models and
# the GPT-2-small-sized benchmark model (made by scripts/bench.sh); then rewrites the
# "Terminal UI" section of BENCHMARKS.md. About a minute on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=build/bench
results=$OUT/tui.jsonl
mkdir -p "$OUT"
: > "$results"
go build -o "$OUT/benchtui" ./scripts/benchtui
go test ./tui -run '^$' -bench . -benchtime 200x -count 3 \
  | awk '/^Benchmark/ {name=$1; sub(/-[0-9]+$/, "", name); printf "{\"what\":\"frame\",\"name\":\"%s\",\"ns\":%s}\n", name, $3}' >> "$results"
go test ./tui -run BytesPerCursorMove -count 1 -v \
  | sed -n 's/.* \([0-9]*\) bytes for the first frames, \([0-9]*\) bytes for one cursor move.*/{"what":"bytes","first":\1,"move":\2}/p' >> "$results"
models=(testdata/models/*/model.onnx)
for round in 1 2 3; do
  "$OUT/benchtui" -T 64 "${models[@]}" | sed 's/^{/{"what":"first",/' >> "$results"
  if [ -f "$OUT/gpt2-small/model.onnx" ]; then
    "$OUT/benchtui" -T 1024 "$OUT/gpt2-small/model.onnx" | sed 's/^{/{"what":"first",/' >> "$results"
  fi
done
.venv/bin/python scripts/bench_report.py tui "$results" BENCHMARKS.md
echo "bench-tui: BENCHMARKS.md updated" >&2
