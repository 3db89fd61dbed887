"""How close the trainer comes to the machine: the demo model's training FLOPs per token ×
tokens/s ÷ this machine's measured sgemm rate, for issue 14 ("make the trainer as fast as
the hardware allows first").

    python scripts/train_efficiency.py [--threads 1] [--steps 100] [--batch 32]

Measures, in one process: torch's float32 matmul rate at the shapes training uses (and a
large square one, the machine's practical peak), then `export.train bench` (a bare PyTorch
loop, then the trainer) on the demo's configuration, with the scores computed plain (scale,
Q·Kᵀ, mask as three ops) and fused (one baddbmm); prints a Markdown table. FLOPs are counted
for the matmuls only (projections, scores, P·V, unembedding; forward + backward = 3 ×
forward), with the [B, H, T, T] scores counted in full, as PyTorch computes them before the
causal mask.
"""
import argparse
import sys
import time

import torch

sys.path.insert(0, ".")
from export import train  # noqa: E402


def gemm_rate(m, k, n, seconds=1.0):
    a, b = torch.randn(m, k), torch.randn(k, n)
    torch.mm(a, b)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.mm(a, b)
        reps += 1
    return 2 * m * k * n * reps / (time.perf_counter() - t0)


def flops_per_token(layers, d, hd, heads, ctx, vocab):
    proj = 4 * 2 * d * heads * hd              # Q, K, V, O
    scores = 2 * 2 * ctx * heads * hd          # Q·Kᵀ and P·V over the whole window
    unembed = 2 * d * vocab
    return 3 * (layers * (proj + scores) + unembed)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch", type=int, default=32)
    a = ap.parse_args()
    torch.mm(torch.randn(8, 8), torch.randn(8, 8))  # load OpenBLAS, then limit its pool
    train.set_threads(a.threads)
    L, H, d, hd, T, V = 2, 8, 128, 16, 128, 512
    peak = gemm_rate(2048, 2048, 2048, 2.0)
    shaped = gemm_rate(a.batch * T, d, d)
    argv = ["--data", "../shared/data", "--vocab-size", str(V), "--layers", str(L), "--heads",
            str(H), "--d-model", str(d), "--d-head", str(hd), "--n-ctx", str(T), "--batch",
            str(a.batch), "--layernorm", "--lr", "3e-3", "--weight-decay", "0", "--steps",
            str(a.steps), "--repeat-frac", "0.5", "--repeat-kind", "random", "--eval-every",
            str(a.steps), "--ckpt-every", "100000", "--threads", str(a.threads)]
    rows = []
    for attention in ("plain", "fused"):  # the score kernel before and after the fused one
        loop, ours = train.bench(argv + ["--attention", attention])
        rows += [(f"bare PyTorch loop, {attention} scores", loop),
                 (f"export.train --attention {attention}", ours)]
    fpt = flops_per_token(L, d, hd, H, T, V)
    print()
    print(f"threads {a.threads}, batch {a.batch} × context {T}; training FLOPs per token "
          f"{fpt / 1e6:.2f} M (matmuls only)")
    print()
    print("| measure | rate | ÷ sgemm 2048³ |")
    print("|---|---|---|")
    print(f"| torch sgemm 2048 × 2048 × 2048 | {peak / 1e9:.1f} GFLOP/s | 1.00 |")
    print(f"| torch sgemm {a.batch * T} × {d} × {d} (a projection) | {shaped / 1e9:.1f} GFLOP/s | "
          f"{shaped / peak:.2f} |")
    for name, tps in rows:
        print(f"| {name}: {tps:,.0f} tokens/s | {tps * fpt / 1e9:.1f} GFLOP/s | "
              f"{tps * fpt / peak:.2f} |")


if __name__ == "__main__":
    main()
