"""Turns a benchmark's JSON lines into a Markdown section of BENCHMARKS.md.

    python scripts/bench_report.py spine RESULTS.jsonl BENCHMARKS.md

The section sits between <!-- NAME:start --> and <!-- NAME:end --> and is replaced whole;
the rest of the file is kept. The machine and the command are written with the numbers.
"""
import datetime
import json
import os
import platform
import subprocess
import sys


def machine():
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = os.getloadavg()[0]
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, {platform.system()} {platform.release()}, load average at the end {load:.1f}"


def spine(rows):
    by = {}
    for r in rows:
        by.setdefault(r["mode"], []).append(r)
    def best(mode, T):
        xs = [r["median_ms"] for r in by.get(mode, []) if r.get("T") == T]
        return min(xs) if xs else None
    def first(mode, key):
        xs = [r[key] for r in by.get(mode, []) if key in r]
        return xs
    out = []
    ort = first("attn", "ort")[0]
    out.append(f"onnxruntime {ort} (CPU), PyTorch eager on the same weights (export/bench_model.py).")
    out.append("Model: GPT-2-small-sized, 12 layers × 12 heads, d 768, vocab 50257, random weights, "
               f"{first('attn', 'model_bytes')[0] / 1e6:.0f} MB ONNX (opset 17). Batch 1. "
               "Forward times are the median of 5 runs after a warm-up; onnxruntime ran twice per mode "
               "(alternating plain/attention) and the better median is shown; PyTorch shows the better of 1 and 2 threads.")
    out.append("")
    out.append("| T | ORT plain | ORT + all 144 heads' attention | ratio (target ≤ 1.05) | PyTorch eager | ORT+attn / PyTorch (target ≤ 0.75) |")
    out.append("|---|---|---|---|---|---|")
    for T in (128, 512, 1024):
        p, a, t = best("plain", T), best("attn", T), best("torch", T)
        out.append(f"| {T} | {p:.0f} ms | {a:.0f} ms | {a / p:.3f} | {t:.0f} ms | {a / t:.2f} |")
    out.append("")
    create_p = min(first("plain", "create_ms"))
    create_a = min(first("attn", "create_ms"))
    load = min(first("attn", "load_ms"))
    expose = min(first("attn", "expose_ms"))
    rss_p = max(first("plain", "peak_rss_mb"))
    rss_a = max(first("attn", "peak_rss_mb"))
    rss_t = max(first("torch", "peak_rss_mb"))
    out.append(f"- Load (read + structural parse, weights skipped): {load:.0f} ms; expose (rename the probability tensors into outputs): {expose:.1f} ms.")
    out.append(f"- Session creation: {create_p:.0f} ms plain, {create_a:.0f} ms with attention exposed.")
    out.append(f"- Peak RSS of the whole process after T = 128, 512, 1024: {rss_p:.0f} MB plain, {rss_a:.0f} MB with attention (target ≤ 2000 MB), PyTorch {rss_t:.0f} MB.")
    return out


def main():
    name, results, path = sys.argv[1:4]
    rows = [json.loads(l) for l in open(results) if l.strip()]
    body = {"spine": spine}[name](rows)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    head = [f"<!-- {name}:start -->",
            f"Measured {datetime.date.today()} at commit {commit} with `make bench` on {machine()}.", ""]
    section = "\n".join(head + body + [f"<!-- {name}:end -->"])
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start in text and end in text:
        text = text[:text.index(start)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + f"\n\n## Spine: attention through onnxruntime\n\n{section}\n"
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
