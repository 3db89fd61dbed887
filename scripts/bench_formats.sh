#!/usr/bin/env bash
# `bash scripts/bench_formats.sh`: `inspect dump` of the GPT-2-small-sized model (the spine
# benchmark's, build/bench/gpt2-small, made by export/ if missing) at T = 1024 (seeded random
# ids) in csv, npz and parquet. Measures, in one run: the disk's sequential write rate (dd,
# conv=fdatasync), each format's end-to-end dump (wall time, bytes, peak RSS from
# /usr/bin/time -v), the write phase alone (scripts/benchformats: outfile + tableio, fsync
# included), and the time numpy (npz) and pandas (csv, parquet) take to load each file; then
# rewrites the "Output formats" section of BENCHMARKS.md. About 10 minutes on 2 cores, 20 GB
# of memory (pandas reading the Parquet) and 9 GB of free disk under build/bench (the CSV is
# 7.3 GB).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=build/bench
MODEL=$(bash scripts/bench-model.sh)
T=${T:-1024}
export ONNXRUNTIME_SHARED_LIBRARY_PATH=${ONNXRUNTIME_SHARED_LIBRARY_PATH:-$PWD/lib/libonnxruntime.so}
mkdir -p "$OUT"

go build -o "$OUT/inspect" ./cmd/inspect
go build -o "$OUT/benchformats" ./scripts/benchformats
IDS=$($PY -c "import random; r = random.Random(0); print(','.join(str(r.randrange(50257)) for _ in range($T)))")
results=$OUT/formats.jsonl
: > "$results"
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null && echo cold || echo warm; }

# Every measurement starts from a synced, dropped page cache (when the kernel permits), so
# that one format's gigabytes of writeback do not land in the next one's time.
drop_caches > /dev/null
echo "bench: disk sequential write (dd 4 GiB, conv=fdatasync)" >&2
dd if=/dev/zero of="$OUT/dd.tmp" bs=1M count=4096 conv=fdatasync 2> "$OUT/dd.log"
rm -f "$OUT/dd.tmp"
$PY - "$OUT/dd.log" >> "$results" <<'PY'
import json, re, sys
line = open(sys.argv[1]).read().strip().splitlines()[-1]  # "N bytes (...) copied, S s, R MB/s"
n, s = re.match(r"(\d+) bytes.*copied, ([\d.]+) s", line).groups()
print(json.dumps({"what": "disk", "bytes": int(n), "s": float(s)}))
PY

# The same again at the npz's size (576 MiB): the virtual disk absorbs a short burst faster
# than 4 GiB, so the npz is compared with both.
drop_caches > /dev/null
dd if=/dev/zero of="$OUT/dd.tmp" bs=1M count=576 conv=fdatasync 2> "$OUT/dd.log"
rm -f "$OUT/dd.tmp"
$PY - "$OUT/dd.log" >> "$results" <<'PY'
import json, re, sys
line = open(sys.argv[1]).read().strip().splitlines()[-1]
n, s = re.match(r"(\d+) bytes.*copied, ([\d.]+) s", line).groups()
print(json.dumps({"what": "disk-576MiB", "bytes": int(n), "s": float(s)}))
PY

drop_caches > /dev/null
echo "bench: write phase alone (scripts/benchformats)" >&2
"$OUT/benchformats" -model "$MODEL" -ids "$IDS" -dir "$OUT" -formats npz,parquet,csv | sed 's/^{/{"what":"write",/' >> "$results"

for f in npz parquet csv; do
  drop_caches > /dev/null
  echo "bench: inspect dump --format $f" >&2
  rm -f "$OUT/dump.$f"
  /usr/bin/time -v "$OUT/inspect" dump "$MODEL" --ids "$IDS" --device cpu --out "$OUT/dump.$f" 2> "$OUT/time.$f.log"
  $PY - "$f" "$OUT/time.$f.log" "$OUT/dump.$f" >> "$results" <<'PY'
import json, os, re, sys
f, log, path = sys.argv[1:]
text = open(log).read()
wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", text).groups()
secs = int(wall[0] or 0) * 3600 + int(wall[1]) * 60 + float(wall[2])
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1))
print(json.dumps({"what": "dump", "format": f, "s": secs, "rss_kb": rss, "bytes": os.path.getsize(path)}))
PY
done

for f in npz parquet csv; do
  cache=$(drop_caches)
  echo "bench: load $f ($cache page cache)" >&2
  $PY - "$f" "$OUT/dump.$f" "$cache" >> "$results" <<'PY'
import json, resource, sys, time
import numpy as np
import pandas as pd  # imported before the clock starts: only the load is timed
f, path, cache = sys.argv[1:]
t0 = time.perf_counter()
if f == "npz":
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}  # every member read and decoded
    rows = sum(a.size for k, a in arrays.items() if k.startswith("attn."))
    how = "numpy.load(allow_pickle=False), every array"
else:
    if f == "parquet":
        df = pd.read_parquet(path)
        how = "pandas.read_parquet (pyarrow)"
    else:
        # The whole CSV as one DataFrame does not fit in 23 GiB (pandas was killed at 24 GB
        # RSS at T = 1024): it is parsed whole, in chunks of 8 Mi rows that are dropped.
        rows = 0
        for df in pd.read_csv(path, dtype={"query_token": "category", "key_token": "category"},
                              keep_default_na=False, chunksize=1 << 23):
            rows += len(df)
        how = "pandas.read_csv (C parser, token columns as category), in chunks of 8 Mi rows"
    if f == "parquet":
        rows = len(df)
s = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"what": "load", "format": f, "s": s, "rows": rows, "rss_kb": rss, "how": how, "cache": cache}))
PY
done

$PY - "$results" BENCHMARKS.md "$T" <<'PY'
import json, os, platform, subprocess, sys, datetime
results, md, T = sys.argv[1], sys.argv[2], int(sys.argv[3])
R = [json.loads(l) for l in open(results)]
disk = next(r for r in R if r["what"] == "disk")
dump = {r["format"]: r for r in R if r["what"] == "dump"}
write = {r["format"]: r for r in R if r["what"] == "write"}
load = {r["format"]: r for r in R if r["what"] == "load"}
disk_rate = disk["bytes"] / disk["s"] / 1e6
small = next(r for r in R if r["what"] == "disk-576MiB")
small_rate = small["bytes"] / small["s"] / 1e6
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
load_avg = os.getloadavg()[0]
mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
lines = [
    f"Measured {datetime.date.today()} at commit {commit} (plus the working tree) with `bash scripts/bench_formats.sh` on {os.cpu_count()} cores, {mem:.0f} GiB, Linux {platform.release()}, load average at the end {load_avg:.1f}.",
    "",
    f"`inspect dump` of the GPT-2-small-sized model (12 layers × 12 heads, random weights) on {T} seeded random ids, CPU, every layer: {12*12*T*T:,} weights. "
    f"Disk: sequential write {disk_rate:.0f} MB/s (dd, 4 GiB, conv=fdatasync, same run). End to end is the whole command (load, session, run, write, fsync) under /usr/bin/time -v; "
    "the write phase is scripts/benchformats writing the same run's result through outfile (temporary file, fsync, rename), timed alone.",
    "",
    "| format | bytes | dump wall time | dump peak RSS | write phase | write rate | ÷ disk rate | load | load time | load peak RSS |",
    "|---|---|---|---|---|---|---|---|---|---|",
]
for f in ("csv", "npz", "parquet"):
    d, w, l = dump[f], write[f], load[f]
    rate = w["bytes"] / w["write_s"] / 1e6
    lines.append(f"| {f} | {d['bytes']/1e6:,.0f} MB | {d['s']:.1f} s | {d['rss_kb']/1024:,.0f} MB | {w['write_s']:.2f} s | {rate:,.0f} MB/s | {rate/disk_rate:.2f} | {l['how']} | {l['s']:.2f} s | {l['rss_kb']/1024:,.0f} MB |")
npz_ratio = write["npz"]["bytes"] / write["npz"]["write_s"] / 1e6 / disk_rate
speedup = load["csv"]["s"] / load["npz"]["s"]
lines += [
    "",
    f"- npz write rate ÷ disk rate: **{npz_ratio:.2f}** against the 4 GiB dd, **{npz_ratio*disk_rate/small_rate:.2f}** against a dd of the npz's own size (576 MiB: {small_rate:.0f} MB/s) (target ≥ 0.8).",
    f"- numpy loading the npz vs pandas reading the CSV: **{speedup:.0f}×** faster (target ≥ 20×); pandas reading the Parquet: {load['csv']['s']/load['parquet']['s']:.0f}× faster than the CSV.",
    f"- Page cache before every measurement: {load['npz']['cache']} (synced and dropped with /proc/sys/vm/drop_caches when permitted).",
]
text = open(md).read()
start, end = "<!-- formats:start -->", "<!-- formats:end -->"
block = start + "\n" + "\n".join(lines) + "\n" + end
if start in text:
    text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
else:
    text = text.rstrip("\n") + "\n\n## Output formats: dump as csv, npz, parquet\n\n" + block + "\n"
open(md, "w").write(text)
print("\n".join(lines))
PY
rm -f "$OUT"/dump.csv "$OUT"/dump.npz "$OUT"/dump.parquet
echo "bench: BENCHMARKS.md updated" >&2
