"""The attention core of one layer (Q·Kᵀ, scale, causal mask, softmax, P·V; forward and
backward) in three forms, one thread: mask (masked_fill, as the export), baddbmm (the
trainer's fused kernel) and addbias (a precomputed -inf bias added). Prints ms per step.

    .venv/bin/python scripts/attn_kernel_bench.py
"""
import time, torch, math
torch.set_num_threads(1)
def run(T, B, H=8, dh=16, mode="mask", n=5):
    q = torch.randn(B, H, T, dh, requires_grad=True); k = torch.randn(B, H, T, dh, requires_grad=True); v = torch.randn(B, H, T, dh, requires_grad=True)
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    bias = torch.zeros(T, T).masked_fill(~mask, float("-inf"))
    scale = 1/math.sqrt(dh)
    def f():
        if mode == "mask":
            s = (q @ k.transpose(-2, -1)) * scale
            s = s.masked_fill(~mask, float("-inf"))
        elif mode == "baddbmm":
            s = torch.baddbmm(bias.expand(B*H, T, T), q.reshape(B*H, T, dh), k.reshape(B*H, T, dh).transpose(1, 2), alpha=scale).view(B, H, T, T)
        elif mode == "addbias":
            s = (q * scale) @ k.transpose(-2, -1) + bias
        p = s.softmax(-1)
        o = p @ v
        o.sum().backward()
    f()
    t = time.time()
    for _ in range(n): f()
    return (time.time() - t) / n
for T, B in [(128, 32), (512, 8)]:
    for mode in ["mask", "baddbmm", "addbias"]:
        dt = run(T, B, mode=mode)
        print(T, B, mode, f"{dt*1000:.1f} ms/layer-step  -> {B*T/dt:.0f} tok/s per layer attn-core")
