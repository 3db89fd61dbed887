#!/usr/bin/env bash
# attnscope on a GPU machine in one go (a lent device machine: DEVELOPERS.md, "On a GPU
# machine"). Writes its results into $OUT when set, else build/gpu-check (--out DIR wins),
# and prints a summary; exits 1 when a check FAILs (SKIPPED is neither pass nor fail).
#
#   bash scripts/gpu-check.sh [--device cuda|cpu] [--quick] [--tol X] [--steps N]
#                             [--budget S] [--skip-bench] [--skip-train] [--out DIR]
#   bash scripts/gpu-check.sh --pack    (here, before a device run: build/gpu-check-carry/)
#
# 1. env.txt: nvidia-smi -L, uname, python/torch/onnx versions, the onnxruntime libraries.
# 2. attention: `bin/inspect dump --format npz` on small committed models of different forms
#    (the demo, GPT-2, torch MultiheadAttention, GroupQueryAttention, an If-merged decoder,
#    an encoder–decoder, a split BART), --device cuda against --device cpu on seeded ids and
#    cuda against the committed PyTorch reference (reference.json); every attention value,
#    max |difference| <= --tol (1e-4), a NaN fails. --device cpu compares cpu against
#    PyTorch's references instead.
# 3. timings at T = 128/512/1024 on the GPT-2-small-sized benchmark model (exported here
#    with PyTorch when missing, ~650 MB): onnxruntime with the attention exposed on CUDA
#    (build/benchspine -device cuda) and on CPU, and PyTorch eager on the GPU
#    (export.bench_model torch-time --device cuda); timings.jsonl.
# 4. the natural-text training, `bash scripts/train-natural.sh --device D --run DIR
#    --export DIR [--steps N]`, its exported folder packed into natural-export.tar.gz
#    (split into parts of at most 15 MiB; timeline/ left out when it would not fit).
# --quick: a tiny stand-in for the benchmark model at T = 16/64, 2 reps, one PyTorch thread,
# training --steps 1.
#
# onnxruntime: --device cpu uses $ONNXRUNTIME_SHARED_LIBRARY_PATH or lib/libonnxruntime.so;
# cuda uses $ORT_GPU_LIB or lib/gpu/libonnxruntime.so (scripts/fetch-onnxruntime.sh --gpu),
# whose CUDA provider needs CUDA 12 and cuDNN 9. Where it cannot load, the ORT-CUDA parts are
# SKIPPED with one sentence saying what is missing, and the rest still runs.
# bin/inspect and build/benchspine are used when present, else unpacked from
# build/gpu-check-carry/ (made by --pack), else built with go when it is installed.
# Working files go to $GPU_CHECK_WORK (default build/gpu-check-work), emptied first.
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICE=cuda
QUICK=0
TOL=1e-4
STEPS=""
BUDGET=540
SKIP_BENCH=0
SKIP_TRAIN=0
RES=${OUT:-build/gpu-check}
PACK=0
usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=${2:?}; shift ;;
    --quick) QUICK=1 ;;
    --tol) TOL=${2:?}; shift ;;
    --steps) STEPS=${2:?}; shift ;;
    --budget) BUDGET=${2:?}; shift ;;
    --skip-bench) SKIP_BENCH=1 ;;
    --skip-train) SKIP_TRAIN=1 ;;
    --out) RES=${2:?}; shift ;;
    --pack) PACK=1 ;;
    -h|--help) usage ;;
    *) echo "gpu-check: unknown argument $1" >&2; usage ;;
  esac
  shift
done
case "$DEVICE" in cpu|cuda) ;; *) echo "gpu-check: --device must be cpu or cuda" >&2; exit 2 ;; esac

CARRY=build/gpu-check-carry
ORT_VERSION=1.24.1
xz_d() { # decompress $1 to $2
  if command -v xz >/dev/null; then xz -dc "$1" >"$2"
  else python3 -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],"wb"))' "$1" "$2"; fi
}

# --pack: what a device run carries, compressed (the 64 MiB limit holds the tree and carries).
if [ "$PACK" = 1 ]; then
  [ -x bin/inspect ] || { echo "gpu-check --pack: bin/inspect is missing: run make build" >&2; exit 1; }
  cpu_lib=lib/libonnxruntime.so.$ORT_VERSION
  [ -f "$cpu_lib" ] || { echo "gpu-check --pack: $cpu_lib is missing: run bash scripts/fetch-onnxruntime.sh" >&2; exit 1; }
  rm -rf "$CARRY" && mkdir -p "$CARRY"
  go build -trimpath -ldflags "-s -w" -o "$CARRY/benchspine" ./scripts/benchspine
  if command -v strip >/dev/null; then strip -o "$CARRY/inspect" bin/inspect; else cp bin/inspect "$CARRY/inspect"; fi
  cp "$cpu_lib" "$CARRY/libonnxruntime.so.$ORT_VERSION"
  for f in inspect benchspine "libonnxruntime.so.$ORT_VERSION"; do xz -6 -T0 -f "$CARRY/$f"; done
  # the training text: a device machine cannot see ../shared (scripts/train-natural.sh)
  for d in ../shared/data build/data; do
    if [ -d "$d" ]; then cp -r "$d" "$CARRY/data" && chmod -R u+w "$CARRY/data"; echo "gpu-check --pack: the training text $d copied too"; break; fi
  done
  carry=$(du -cb "$CARRY"/* | tail -1 | cut -f1)
  tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | awk '$2 == "total" {t += $1} END {print t + 0}')
  mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
  echo "gpu-check --pack: $CARRY holds bin/inspect (stripped), build/benchspine and the CPU onnxruntime $ORT_VERSION, xz-compressed, with the training text: $(mib "$carry")"
  echo "gpu-check --pack: with the working tree ($(mib "$tree")) a device run sends $(mib $((carry + tree))) of at most 64 MiB"
  if [ $((carry + tree)) -gt $((64 * 1048576)) ]; then
    echo "gpu-check --pack: OVER the limit; the largest files that travel:" >&2
    git ls-files -z --cached --others --exclude-standard | xargs -0 du -b 2>/dev/null | sort -n | tail -5 >&2
    exit 1
  fi
  echo "gpu-check --pack: device run: command 'bash scripts/gpu-check.sh', carry [\"$CARRY\"], timeout_s 600"
  exit 0
fi

START=$SECONDS
mkdir -p "$RES"
RES=$(cd "$RES" && pwd)
WORK=${GPU_CHECK_WORK:-build/gpu-check-work} # dumps, the tiny model, the training run
rm -rf "$WORK" && mkdir -p "$WORK/bin"
WORK=$(cd "$WORK" && pwd)
rm -f "$RES"/env.txt "$RES"/summary.txt "$RES"/timings.jsonl "$RES"/log.txt "$RES"/natural-export.tar.gz*
LOG=$WORK/log.txt
: >"$LOG"
SUMMARY=$RES/summary.txt
: >"$SUMMARY"
NPASS=0 NFAIL=0 NSKIP=0
say() { echo "$*" | tee -a "$SUMMARY"; }
record() { # STATUS TEXT...
  local st=$1; shift
  case "$st" in PASS) NPASS=$((NPASS + 1)) ;; FAIL) NFAIL=$((NFAIL + 1)) ;; *) NSKIP=$((NSKIP + 1)) ;; esac
  say "$(printf '%-8s %s' "$st" "$*")"
}
logrun() { # runs "$@" with its output in the log, under a header
  echo "\$ $*" >>"$LOG"
  "$@" >>"$LOG" 2>&1
}

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi

# The binaries: built here, else carried (--pack), else go.
INSPECT=bin/inspect
BENCHSPINE=build/benchspine
if [ ! -x "$INSPECT" ] && [ -f "$CARRY/inspect.xz" ]; then
  xz_d "$CARRY/inspect.xz" "$WORK/bin/inspect" && chmod +x "$WORK/bin/inspect" && INSPECT=$WORK/bin/inspect
fi
if [ ! -x "$BENCHSPINE" ] && [ -f "$CARRY/benchspine.xz" ]; then
  xz_d "$CARRY/benchspine.xz" "$WORK/bin/benchspine" && chmod +x "$WORK/bin/benchspine" && BENCHSPINE=$WORK/bin/benchspine
fi
if [ ! -x "$BENCHSPINE" ] && command -v go >/dev/null; then
  logrun go build -o "$BENCHSPINE" ./scripts/benchspine || true
fi

# The onnxruntime libraries.
CPU_LIB=${ONNXRUNTIME_SHARED_LIBRARY_PATH:-}
if [ -z "$CPU_LIB" ]; then
  for c in lib/libonnxruntime.so "lib/libonnxruntime.so.$ORT_VERSION"; do
    if [ -f "$c" ]; then CPU_LIB=$c; break; fi
  done
fi
if [ -z "$CPU_LIB" ] && [ -f "$CARRY/libonnxruntime.so.$ORT_VERSION.xz" ]; then
  CPU_LIB=$WORK/bin/libonnxruntime.so.$ORT_VERSION
  xz_d "$CARRY/libonnxruntime.so.$ORT_VERSION.xz" "$CPU_LIB"
fi
GPU_LIB=${ORT_GPU_LIB:-lib/gpu/libonnxruntime.so}

say "gpu-check: device $DEVICE$([ "$QUICK" = 1 ] && echo ", quick"), results in $RES, tolerance $TOL"

# ---- 1. environment ------------------------------------------------------------------
ENV=$RES/env.txt
{
  echo "date: $(date -u +%FT%TZ)"
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "uname: $(uname -a)"
  echo "cores: $(nproc)"
  if command -v nvidia-smi >/dev/null; then
    echo "nvidia-smi -L:"; nvidia-smi -L 2>&1 | sed 's/^/  /'
    echo "driver: $(nvidia-smi --query-gpu=driver_version,memory.total --format=csv,noheader 2>&1 | head -1)"
  else
    echo "nvidia-smi: not present"
  fi
  echo "python: $PY ($("$PY" -c 'import sys; print(sys.version.split()[0])' 2>&1))"
  "$PY" - <<'PY' 2>&1 || true
import importlib
for name in ("torch", "onnx", "onnxruntime", "numpy"):
    try:
        m = importlib.import_module(name)
        print(f"{name}: {m.__version__}")
    except Exception as e:
        print(f"{name}: not importable ({type(e).__name__}: {e})")
try:
    import torch
    ok = torch.cuda.is_available()
    print(f"torch cuda: {ok}, built for CUDA {torch.version.cuda}"
          + (f", {torch.cuda.get_device_name(0)}" if ok else ""))
except Exception:
    pass
PY
  echo "bin/inspect: $INSPECT"
  echo "benchspine: $BENCHSPINE"
  echo "onnxruntime (cpu): ${CPU_LIB:-none found}"
  if [ -n "$CPU_LIB" ] && [ -f "$CPU_LIB" ]; then
    echo "  sha256: $(sha256sum "$(readlink -f "$CPU_LIB")" | cut -d' ' -f1)"
    if [ -x "$INSPECT" ]; then "$INSPECT" doctor --ort-lib "$CPU_LIB" 2>&1 | sed 's/^/  /' || true; fi
  fi
  if [ "$DEVICE" = cuda ]; then
    echo "onnxruntime (gpu): $GPU_LIB$([ -e "$GPU_LIB" ] || echo ' (absent)')"
    if [ -e "$GPU_LIB" ]; then
      if [ -x "$INSPECT" ]; then "$INSPECT" doctor --ort-lib "$GPU_LIB" 2>&1 | sed 's/^/  /' || true; fi
      prov=$(dirname "$GPU_LIB")/libonnxruntime_providers_cuda.so
      if [ -f "$prov" ]; then
        echo "  ldd $prov, not found:"
        ldd "$prov" 2>&1 | grep 'not found' | sed 's/^/  /' || echo "    none"
      fi
    fi
  fi
} >"$ENV" 2>&1
record PASS "env: recorded in env.txt ($(grep -m1 '^  GPU' "$ENV" | sed 's/^ *//; s/ (UUID.*//' || echo 'no GPU listed'))"

if [ ! -x "$INSPECT" ]; then
  record FAIL "bin/inspect is missing: run make build here (and bash scripts/gpu-check.sh --pack for a device run)"
fi
if [ -z "$CPU_LIB" ] || [ ! -f "$CPU_LIB" ]; then
  record FAIL "the CPU onnxruntime $ORT_VERSION library is missing: run bash scripts/fetch-onnxruntime.sh"
  CPU_LIB=""
fi

# Can onnxruntime run on CUDA here? ORT_CUDA_WHY says why not, in one sentence.
ORT_CUDA=0
ORT_CUDA_WHY=""
if [ "$DEVICE" = cuda ]; then
  prov=$(dirname "$GPU_LIB")/libonnxruntime_providers_cuda.so
  if ! command -v nvidia-smi >/dev/null && [ ! -e /proc/driver/nvidia/version ]; then
    ORT_CUDA_WHY="this machine has no NVIDIA driver (no nvidia-smi, no /proc/driver/nvidia)."
  elif [ ! -e "$GPU_LIB" ] || [ ! -f "$prov" ]; then
    ORT_CUDA_WHY="the GPU build of onnxruntime $ORT_VERSION is not here ($GPU_LIB with libonnxruntime_providers_cuda.so beside it): get it with bash scripts/fetch-onnxruntime.sh --gpu where PyPI is reachable (~390 MB, too big to carry to a lent device machine) and run it with CUDA 12 and cuDNN 9 installed, or point ORT_GPU_LIB at such a build."
  else
    missing=$(ldd "$prov" 2>/dev/null | awk '/not found/ {print $1}' | tr '\n' ' ' | sed 's/ $//')
    if [ -n "$missing" ]; then
      ORT_CUDA_WHY="onnxruntime-gpu $ORT_VERSION's CUDA provider cannot load because $missing are missing (it is built for CUDA 12 and cuDNN 9): install the CUDA 12 runtime, cuBLAS, cuRAND, cuFFT and cuDNN 9 (e.g. pip install nvidia-cuda-runtime-cu12 nvidia-cublas-cu12 nvidia-curand-cu12 nvidia-cufft-cu12 nvidia-cudnn-cu12) and put their lib folders on LD_LIBRARY_PATH."
    elif [ -x "$INSPECT" ]; then
      doc=$("$INSPECT" doctor --ort-lib "$GPU_LIB" 2>&1 || true)
      if grep -q 'CUDA: available' <<<"$doc"; then
        ORT_CUDA=1
      else
        ORT_CUDA_WHY="onnxruntime's CUDA provider does not start: $(grep -m1 'CUDA:' <<<"$doc" | sed 's/^ *CUDA: //')."
      fi
    fi
  fi
  if [ "$ORT_CUDA" = 0 ]; then
    say "onnxruntime-cuda: $ORT_CUDA_WHY"
  fi
fi
TORCH_CUDA=0
if [ "$DEVICE" = cuda ] && "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  TORCH_CUDA=1
fi

# ---- the Python helper: seeded ids, the reference run, the comparison -------------------
HELPER=$WORK/helper.py
cat >"$HELPER" <<'PY'
import json, os, sys
import numpy as np

def cases(model, seed):
    """Tab-separated lines: kind, ids, target ids ("-" if none), reference run index ("-")."""
    cfg = json.load(open(os.path.join(model, "config.json")))
    vocab = cfg["vocab_size"]
    npos = cfg.get("n_positions") or cfg.get("max_position_embeddings") or 32
    refpath = os.path.join(model, "reference.json")
    ref = json.load(open(refpath)) if os.path.exists(refpath) else {"runs": []}
    # An encoder–decoder by what it is, not by its name ("GQADecoder" is decoder-only).
    encdec = any("decoder_ids" in r for r in ref["runs"]) or bool(cfg.get("is_encoder_decoder")) \
        or bool(cfg.get("n_decoder_layers")) or bool(cfg.get("decoder_layers"))
    rng = np.random.RandomState(seed)
    T = min(24, npos - 1)
    ids = rng.randint(0, vocab, size=T)
    tgt = rng.randint(0, vocab, size=max(2, T - 5)) if encdec else None
    j = lambda a: ",".join(str(int(x)) for x in a)
    print("\t".join(["seeded", j(ids), j(tgt) if tgt is not None else "-", "-"]))
    for i, r in enumerate(ref["runs"]):
        if r.get("prefix_ids"):
            continue
        mask = (r.get("inputs") or {}).get("attention_mask") if isinstance(r.get("inputs"), dict) else None
        if mask and not all(v == 1 for v in mask["data"]):
            continue
        print("\t".join(["reference", j(r["ids"]), j(r["decoder_ids"]) if "decoder_ids" in r else "-", str(i)]))
        break

def load(spec):
    """{layer index: float32 [heads, q, k]} from a dump's npz, or reference.json#RUN."""
    if "#" in spec:
        path, run = spec.rsplit("#", 1)
        r = json.load(open(path))["runs"][int(run)]
        out = {}
        for i, a in enumerate(r["attention"]):
            x = np.asarray(a["data"], dtype=np.float32).reshape(a["shape"])
            out[i] = x.reshape(x.shape[-3:]) if x.ndim == 4 and x.shape[0] == 1 else x
        return out
    z = np.load(spec)
    return {int(l): z[f"attn.L{int(l)}"] for l in z["layers"]}

def compare(a, b, tol):
    A, B = load(a), load(b)
    if sorted(A) != sorted(B):
        print(f"layers differ: {sorted(A)} vs {sorted(B)}")
        return 1
    worst, nan, n = 0.0, 0, 0
    for l in A:
        x, y = A[l].astype(np.float64), B[l].astype(np.float64)
        if x.shape != y.shape:
            print(f"layer {l}: shapes {x.shape} vs {y.shape}")
            return 1
        bad = np.isnan(x) | np.isnan(y)
        nan += int(bad.sum())
        n += x.size
        if (~bad).any():
            worst = max(worst, float(np.abs(x - y)[~bad].max()))
    ok = nan == 0 and worst <= tol
    print(f"max|diff| {worst:.2e} over {n} values in {len(A)} layers" + (f", {nan} NaN" if nan else ""))
    return 0 if ok else 1

if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "cases":
        cases(sys.argv[2], int(sys.argv[3]))
    elif cmd == "compare":
        sys.exit(compare(sys.argv[2], sys.argv[3], float(sys.argv[4])))
PY

# ---- 2. attention equality -------------------------------------------------------------
MODELS=(models/demo testdata/models/gpt2tiny testdata/models/mha testdata/models/gqa
  testdata/models/merged testdata/models/encdec testdata/models/split-encdec)
dump() { # MODEL IDS TARGET DEVICE LIB OUT.npz
  local args=("$1" --ids "$2" --device "$4" --ort-lib "$5" --format npz --out "$6")
  [ "$3" = - ] || args+=(--target-ids "$3")
  logrun "$INSPECT" dump "${args[@]}"
}
compare() { # NAME WHAT A B
  local res
  if res=$("$PY" "$HELPER" compare "$3" "$4" "$TOL" 2>&1); then
    record PASS "attention $1 $2: $res"
  else
    record FAIL "attention $1 $2: $res (tolerance $TOL)"
  fi
}
if [ -x "$INSPECT" ] && [ -n "$CPU_LIB" ]; then
  # cuda mode compares against the CPU provider of the same (GPU) build when it loads
  CMP_LIB=$CPU_LIB
  [ "$ORT_CUDA" = 1 ] && CMP_LIB=$GPU_LIB
  if [ "$DEVICE" = cuda ] && [ "$ORT_CUDA" = 0 ]; then
    record SKIPPED "attention cuda-vs-cpu and cuda-vs-pytorch on ${#MODELS[@]} models: onnxruntime cannot run on CUDA here (above); cpu-vs-pytorch instead"
  fi
  for model in "${MODELS[@]}"; do
    name=$(basename "$model")
    if [ ! -d "$model" ]; then
      record SKIPPED "attention $name: $model is not in this checkout"
      continue
    fi
    if ! cases=$("$PY" "$HELPER" cases "$model" 0 2>>"$LOG"); then
      record FAIL "attention $name: its test inputs could not be made from config.json and reference.json (log.txt)"
      continue
    fi
    while IFS=$'\t' read -r kind ids target run; do
      cpu=$WORK/$name-$kind-cpu.npz gpu=$WORK/$name-$kind-cuda.npz
      # without ORT-CUDA only the reference runs are checked: cpu against PyTorch
      [ "$ORT_CUDA" = 0 ] && [ "$kind" = seeded ] && continue
      if ! dump "$model" "$ids" "$target" cpu "$CMP_LIB" "$cpu"; then
        record FAIL "attention $name $kind: bin/inspect dump --device cpu failed (log.txt)"
        continue
      fi
      if [ "$ORT_CUDA" = 0 ]; then
        compare "$name" "reference cpu-vs-pytorch" "$cpu" "$model/reference.json#$run"
        continue
      fi
      if ! dump "$model" "$ids" "$target" cuda "$GPU_LIB" "$gpu"; then
        record FAIL "attention $name $kind: bin/inspect dump --device cuda failed (log.txt)"
        continue
      fi
      if [ "$kind" = reference ]; then
        compare "$name" "reference cuda-vs-pytorch" "$gpu" "$model/reference.json#$run"
      else
        compare "$name" "seeded cuda-vs-cpu" "$gpu" "$cpu"
      fi
    done <<<"$cases"
  done
else
  record SKIPPED "attention: no bin/inspect or onnxruntime library (above)"
fi

# ---- 3. timings ------------------------------------------------------------------------
TIMINGS=$RES/timings.jsonl
: >"$TIMINGS"
if [ "$QUICK" = 1 ]; then TS=(16 64) REPS=2 SIZE=tiny BENCH_DIR=$WORK/bench-tiny
else TS=(128 512 1024) REPS=5 SIZE=gpt2-small BENCH_DIR=build/bench/gpt2-small; fi
tag() { sed "s/^{/{\"engine\":\"$1\",/" >>"$TIMINGS"; }
if [ "$SKIP_BENCH" = 1 ]; then
  record SKIPPED "timings: --skip-bench"
else
  # PyTorch first: it needs no ONNX export.
  tdev=cpu threads=$(nproc)
  [ "$DEVICE" = cuda ] && tdev=cuda
  [ "$QUICK" = 1 ] && threads=1
  if [ "$DEVICE" = cuda ] && [ "$TORCH_CUDA" = 0 ]; then
    record SKIPPED "timings torch-cuda: this PyTorch sees no CUDA device"
  elif out=$("$PY" -m export.bench_model torch-time --size "$SIZE" --T "${TS[@]}" --reps "$REPS" --threads "$threads" --device "$tdev" 2>>"$LOG"); then
    tag "torch-$tdev" <<<"$out"
    record PASS "timings torch-$tdev: PyTorch eager, $SIZE, T ${TS[*]}"
  else
    record FAIL "timings torch-$tdev: export.bench_model torch-time failed (log.txt)"
  fi
  if [ ! -f "$BENCH_DIR/model.onnx" ]; then
    say "timings: exporting the $SIZE benchmark model with PyTorch into $BENCH_DIR"
    logrun "$PY" -m export.bench_model export --size "$SIZE" --out "$BENCH_DIR" --threads "$(nproc)" || true
  fi
  lens=$(IFS=,; echo "${TS[*]}")
  if [ ! -f "$BENCH_DIR/model.onnx" ]; then
    record FAIL "timings ort: the $SIZE model could not be exported (log.txt)"
  elif [ ! -x "$BENCHSPINE" ] || [ -z "$CPU_LIB" ]; then
    record SKIPPED "timings ort: no benchspine binary (go build -o build/benchspine ./scripts/benchspine, or --pack) or no onnxruntime library"
  else
    for dev in cpu cuda; do
      [ "$dev" = cuda ] && [ "$DEVICE" = cpu ] && continue
      if [ "$dev" = cuda ] && [ "$ORT_CUDA" = 0 ]; then
        record SKIPPED "timings ort-cuda: onnxruntime cannot run on CUDA here (above)"
        continue
      fi
      lib=$CPU_LIB
      [ "$dev" = cuda ] && lib=$GPU_LIB
      if out=$(ONNXRUNTIME_SHARED_LIBRARY_PATH=$lib "$BENCHSPINE" -model "$BENCH_DIR/model.onnx" -mode attn -T "$lens" -reps "$REPS" -device "$dev" 2>>"$LOG"); then
        tag "ort-$dev" <<<"$out"
        record PASS "timings ort-$dev: onnxruntime, attention exposed, $SIZE, T ${TS[*]}"
      else
        record FAIL "timings ort-$dev: benchspine failed (log.txt)"
      fi
    done
  fi
  # the table: median ms per engine and T
  "$PY" - "$TIMINGS" <<'PY' | tee -a "$SUMMARY"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
engines = sorted({r["engine"] for r in rows if "T" in r})
Ts = sorted({r["T"] for r in rows if "T" in r})
if engines:
    print("         median ms " + "".join(f"{e:>12}" for e in engines))
    for T in Ts:
        cell = {r["engine"]: r["median_ms"] for r in rows if r.get("T") == T}
        print(f"         T={T:<8}" + "".join(f"{cell.get(e, float('nan')):>12.2f}" for e in engines))
PY
fi

# ---- 4. the natural-text training ------------------------------------------------------
TRAIN_SH=scripts/train-natural.sh
if [ "$SKIP_TRAIN" = 1 ]; then
  record SKIPPED "training: --skip-train"
elif [ ! -f "$TRAIN_SH" ]; then
  record SKIPPED "training: $TRAIN_SH does not exist yet in this checkout, so the natural-text training was not run."
elif [ "$DEVICE" = cuda ] && [ "$TORCH_CUDA" = 0 ]; then
  record SKIPPED "training: this PyTorch sees no CUDA device"
else
  [ -z "$STEPS" ] && [ "$QUICK" = 1 ] && STEPS=1
  if [ ! -d ../shared/data ] && [ ! -d build/data ] && [ -d "$CARRY/data" ]; then
    mkdir -p build && cp -r "$CARRY/data" build/data # where train-natural.sh looks on a device machine
  fi
  RUN_DIR=$WORK/natural-run EXPORT_DIR=$WORK/natural
  args=(--device "$DEVICE" --run "$RUN_DIR" --export "$EXPORT_DIR" --force) # its own scratch folders
  [ -n "$STEPS" ] && args+=(--steps "$STEPS")
  left=$((BUDGET - (SECONDS - START) - 30))
  [ "$left" -lt 60 ] && left=60
  say "training: bash $TRAIN_SH ${args[*]} (at most ${left}s)"
  t0=$SECONDS
  rc=0
  timeout "$left" bash "$TRAIN_SH" "${args[@]}" >"$WORK/train.log" 2>&1 || rc=$?
  cat "$WORK/train.log" >>"$LOG"
  if [ "$rc" = 124 ]; then
    record FAIL "training: stopped after ${left}s (the budget left); rerun with --steps N or a larger --budget"
  elif [ "$rc" != 0 ]; then
    record FAIL "training: $TRAIN_SH exited $rc: $(tail -1 "$WORK/train.log")"
  else
    miss=""
    for f in model.onnx CARD.md metrics.csv timeline; do [ -e "$EXPORT_DIR/$f" ] || miss="$miss $f"; done
    if [ -n "$miss" ]; then
      record FAIL "training: the exported folder lacks$miss"
    else
      record PASS "training: $((SECONDS - t0))s on $DEVICE, exported model.onnx, CARD.md, metrics.csv, timeline/ ($(du -sh "$EXPORT_DIR" | cut -f1))"
      if [ -x "$INSPECT" ] && [ -n "$CPU_LIB" ]; then
        if logrun "$INSPECT" dump "$EXPORT_DIR" --ids 1,2,3,4,5,6,7,8 --device cpu --ort-lib "$CPU_LIB" --format npz --out "$WORK/natural.npz"; then
          record PASS "training: bin/inspect dump runs the exported model"
        else
          record FAIL "training: bin/inspect dump cannot run the exported model (log.txt)"
        fi
      fi
    fi
  fi
  # pack what was exported: at most 3 files of 15 MiB (results come back as <= 8 files of 16 MiB)
  if [ -d "$EXPORT_DIR" ]; then
    part=$((15 * 1048576))
    tgz=$RES/natural-export.tar.gz
    tar -czf "$tgz" -C "$WORK" natural
    if [ "$(stat -c %s "$tgz")" -gt $((3 * part)) ]; then
      tar -czf "$tgz" -C "$WORK" --exclude natural/timeline natural
      say "training: timeline/ left out of natural-export.tar.gz (too big to come back)"
    fi
    if [ "$(stat -c %s "$tgz")" -gt $((3 * part)) ]; then
      tar -czf "$tgz" -C "$WORK" --exclude natural/timeline --exclude '*.onnx' --exclude '*.onnx.data' --exclude '*.data' natural
      say "training: model.onnx left out of natural-export.tar.gz too (too big to come back)"
    fi
    if [ "$(stat -c %s "$tgz")" -gt "$part" ]; then
      split -b "$part" -d -a 1 "$tgz" "$tgz.part"
      rm -f "$tgz"
      say "training: natural-export.tar.gz split in $(find "$RES" -maxdepth 1 -name 'natural-export.tar.gz.part*' | wc -l) parts: cat natural-export.tar.gz.part* > natural-export.tar.gz"
    fi
  fi
fi

# ---- the log and the summary -----------------------------------------------------------
tail -c 4000000 "$LOG" >"$RES/log.txt"
say "gpu-check: $NPASS passed, $NFAIL FAILED, $NSKIP skipped in $((SECONDS - START))s; files in $RES: $(find "$RES" -maxdepth 1 -type f -printf '%f ' | tr ' ' '\n' | sort | tr '\n' ' ')"
[ "$NFAIL" = 0 ]
