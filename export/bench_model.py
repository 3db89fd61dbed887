"""The GPT-2-small-sized model of the benchmarks: random weights (seed 0), never downloaded.

    python -m export.bench_model export --out DIR [--positions N]
        writes DIR/model.onnx (opset 17, input `input_ids` only, ~650 MB) and DIR/config.json;
        --positions gives the position table N rows instead of GPT-2's 1024 (the same seed, so
        the other weights are the same; scripts/bench_select.sh runs 4,096 tokens)
    python -m export.bench_model torch-time --T 128 512 1024 --reps 5 --threads 1 [--device cuda]
        times the same model in PyTorch eager (fp32, inference mode, attention returned as the
        inspector asks for it): one JSON line per T, then {"peak_rss_mb": ...}; --device cuda
        runs it on the GPU (synchronised around each timed forward; the lines then carry
        "device" and the GPU's peak memory)
    --size tiny (both commands) is a 2-layer, d 64 stand-in with the same code path, for
    scripts/gpu-check.sh --quick; the default, gpt2-small, is the benchmark model
"""
import argparse
import contextlib
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


SIZES = {
    "gpt2-small": dict(n_layers=12, n_heads=12, d_model=768, vocab_size=50257),
    "tiny": dict(n_layers=2, n_heads=4, d_model=64, vocab_size=512),
}


def build(positions=1024, size="gpt2-small"):
    torch.manual_seed(SEED)
    return GPT2(GPT2Config(**SIZES[size], n_positions=positions)).eval()


def cmd_export(args):
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = build(args.positions, args.size)
    t1 = time.perf_counter()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "model.onnx")
    proto = export_onnx(model, path, OPSET, ["input_ids"])
    t2 = time.perf_counter()
    softmax = count_ops(proto, "Softmax")
    assert softmax == model.config.n_layers, \
        f"{softmax} Softmax nodes, expected {model.config.n_layers}"
    name = f"{args.size}-random"
    if args.positions != 1024:
        name += f"-{args.positions}"
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
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        sys.exit("torch-time: --device cuda, but this PyTorch sees no CUDA device")
    device = torch.device(args.device)
    model = build(size=args.size).to(device)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    gen = torch.Generator().manual_seed(SEED)
    # On the GPU, tensors the forward makes without a device (GPT2Attention's torch.full
    # mask value) are made there too: `with torch.device(...)` (torch >= 2.0) sets the default.
    where = device if cuda and hasattr(device, "__enter__") else contextlib.nullcontext()
    with torch.inference_mode(), where:
        for T in args.T:
            ids = torch.randint(0, model.config.vocab_size, (1, T), generator=gen,
                                device="cpu").to(device)
            model(ids, return_attn=True)  # warm-up
            sync()
            times = []
            for _ in range(args.reps):
                t = time.perf_counter()
                logits, attns = model(ids, return_attn=True)
                sync()
                times.append((time.perf_counter() - t) * 1e3)
            line = {"T": T, "median_ms": round(statistics.median(times), 2),
                    "min_ms": round(min(times), 2), "threads": args.threads}
            if cuda:
                line["device"] = "cuda"
            print(json.dumps(line), flush=True)
            del logits, attns
    last = {"peak_rss_mb": peak_rss_mb()}
    if cuda:
        last.update(device="cuda", gpu=torch.cuda.get_device_name(device),
                    peak_gpu_mb=round(torch.cuda.max_memory_allocated(device) / 2**20, 1))
    print(json.dumps(last), flush=True)


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
    e.add_argument("--size", choices=sorted(SIZES), default="gpt2-small")
    t = sub.add_parser("torch-time", help="time PyTorch eager forwards")
    t.add_argument("--T", type=int, nargs="+", default=[128, 512, 1024])
    t.add_argument("--reps", type=int, default=5)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    t.add_argument("--size", choices=sorted(SIZES), default="gpt2-small")
    args = ap.parse_args(argv)
    if args.cmd == "torch-time" and max(args.T) > 1024:
        ap.error("--T: the model has 1024 positions")
    {"export": cmd_export, "torch-time": cmd_torch_time}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
