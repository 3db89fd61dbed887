"""The GPT-2-small-sized model of the benchmarks: random weights (seed 0), never downloaded.

    python -m export.bench_model export --out DIR [--positions N]
        writes DIR/model.onnx (opset 17, input `input_ids` only, ~650 MB) and DIR/config.json;
        --positions gives the position table N rows instead of GPT-2's 1024 (the same seed, so
        the other weights are the same; scripts/bench_select.sh runs 4,096 tokens)
    python -m export.bench_model torch-time --T 128 512 1024 --reps 5 --threads 1
        times the same model in PyTorch eager (fp32, inference mode, attention returned as the
        inspector asks for it): one JSON line per T, then {"peak_rss_mb": ...}
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch

from export.models import GPT2, GPT2Config
from export.onnx_export import count_ops, export_onnx, model_info

OPSET = 17
SEED = 0


def build(positions=1024):
    torch.manual_seed(SEED)
    return GPT2(GPT2Config(n_layers=12, n_heads=12, d_model=768, vocab_size=50257,
                           n_positions=positions)).eval()


def cmd_export(args):
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = build(args.positions)
    t1 = time.perf_counter()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "model.onnx")
    proto = export_onnx(model, path, OPSET, ["input_ids"])
    t2 = time.perf_counter()
    softmax = count_ops(proto, "Softmax")
    assert softmax == model.config.n_layers, f"{softmax} Softmax nodes, expected 12"
    name = "gpt2-small-random" if args.positions == 1024 else f"gpt2-small-random-{args.positions}"
    config = {"model": name, **model_info(model), "opset": OPSET,
              "torch": torch.__version__, "inputs": ["input_ids"], "outputs": ["logits"],
              "seed": SEED}
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    print(json.dumps({"path": path, "bytes": os.path.getsize(path),
                      "build_s": round(t1 - t0, 2), "export_s": round(t2 - t1, 2),
                      "peak_rss_mb": peak_rss_mb()}), flush=True)


def cmd_torch_time(args):
    torch.set_num_threads(args.threads)
    model = build()
    gen = torch.Generator().manual_seed(SEED)
    with torch.inference_mode():
        for T in args.T:
            ids = torch.randint(0, model.config.vocab_size, (1, T), generator=gen)
            model(ids, return_attn=True)  # warm-up
            times = []
            for _ in range(args.reps):
                t = time.perf_counter()
                logits, attns = model(ids, return_attn=True)
                times.append((time.perf_counter() - t) * 1e3)
            print(json.dumps({"T": T, "median_ms": round(statistics.median(times), 2),
                              "min_ms": round(min(times), 2), "threads": args.threads}),
                  flush=True)
            del logits, attns
    print(json.dumps({"peak_rss_mb": peak_rss_mb()}), flush=True)


def peak_rss_mb():
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return round(kb / 1024, 1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="write DIR/model.onnx")
    e.add_argument("--out", required=True, help="folder for model.onnx and config.json")
    e.add_argument("--threads", type=int, default=1)
    e.add_argument("--positions", type=int, default=1024, help="rows of the position table")
    t = sub.add_parser("torch-time", help="time PyTorch eager forwards")
    t.add_argument("--T", type=int, nargs="+", default=[128, 512, 1024])
    t.add_argument("--reps", type=int, default=5)
    t.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if args.cmd == "torch-time" and max(args.T) > 1024:
        ap.error("--T: the model has 1024 positions")
    {"export": cmd_export, "torch-time": cmd_torch_time}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
