#!/usr/bin/env bash
# The circuits benchmark (issue 13) on the GPT-2-small-sized model of `make bench` (12 layers
# × 12 heads, d_model 768, 50,257 tokens): `inspect circuits --composition` (9,504 pairs of
# heads × Q/K/V) and `inspect circuits` (per-head OV copying through a 50,257-token W_U W_E,
# positional scores), wall time and peak RSS each, and numpy computing the same composition
# scores from the PyTorch parameters in the same run. Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=build/bench
MODEL=$(bash scripts/bench-model.sh)
[ -x bin/inspect ] || make build >&2
echo "bench: circuits (load $(cut -d' ' -f1 /proc/loadavg))" >&2
measure() { # measure OUT.csv ARGS... -> "seconds maxrss_kb"
  local csv=$1; shift
  /usr/bin/time -f "%e %M" -o "$OUT/time.txt" bin/inspect circuits "$MODEL" "$@" --out "$csv" 2>/dev/null
  cat "$OUT/time.txt"
}
read -r comp_s comp_kb < <(measure "$OUT/composition.csv" --composition)
read -r heads_s heads_kb < <(measure "$OUT/heads-circuits.csv")
ref=$(.venv/bin/python scripts/bench_circuits.py "$OUT/composition.csv")
np_s=$(echo "$ref" | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["numpy_s"])')
diff=$(echo "$ref" | .venv/bin/python -c 'import json,sys; print("%.1e" % json.load(sys.stdin)["max_rel_diff"])')
echo "| what | wall time | peak RSS |"
echo "|---|---|---|"
echo "| \`inspect circuits --composition\` (load, trace, 9,504 pairs × 3) | ${comp_s} s | $((comp_kb / 1024)) MiB |"
echo "| \`inspect circuits\` (per-head OV copying and positional QK) | ${heads_s} s | $((heads_kb / 1024)) MiB |"
echo "| numpy, the same composition scores (parameters in memory, OpenBLAS) | ${np_s} s | – |"
echo
echo "Go vs numpy: largest relative difference of the 28,512 scores ${diff}; ratio Go/numpy $(.venv/bin/python -c "print(round(${comp_s}/${np_s}, 2))")."
