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


def analysis(rows):
    """The analysis section (issue 5): rows of scripts/benchanalysis, one process per round;
    within a round the cases of a group are timed in turn, so ratios are taken per round."""
    setup = next(r for r in rows if r["what"] == "setup")
    rounds = sorted({r.get("round", 1) for r in rows})
    def get(rnd, what, key="median_ms", **kv):
        return next(r[key] for r in rows if r.get("round", 1) == rnd and r["what"] == what
                    and all(r.get(k) == v for k, v in kv.items()))
    per = []
    for rnd in rounds:
        b = get(rnd, "probe_forward", batched=True)
        per.append({"round": rnd, "load": get(rnd, "setup", key="load") if "load" in setup else None,
                    "batched": b, "one_by_one": get(rnd, "probe_forward", batched=False),
                    "census": get(rnd, "census"),
                    "plain": get(rnd, "corpus", key="tokens_per_s", mode="plain"),
                    "attn": get(rnd, "corpus", key="tokens_per_s", mode="attn"),
                    "score": get(rnd, "corpus", key="tokens_per_s", mode="score")})
    best = min(per, key=lambda p: p["batched"])  # the least contended round
    sample = next(r["sample_tokens"] for r in rows if r["what"] == "census")
    K, L, T = setup["K"], setup["probe_len"], setup["T"]
    loads = ", ".join(f"{p['load']:.2f}" for p in per if p["load"] is not None)
    out = [f"onnxruntime {setup['ort']} (CPU), GPT-2-small-sized model of the spine section "
           f"({setup['model_bytes'] / 1e6:.0f} MB, {setup['layers']} layers × 12 heads, random weights, "
           f"GPT-2's built-in tokenizer). {len(per)} rounds (one process each; load average at their start: {loads}); "
           f"in each, the cases of a table are timed in turn, {setup['reps']} times after a warm-up, and the "
           f"medians are shown for round {best['round']}, the least contended; the ratios of every round are listed below each table.",
           "",
           f"Head census (`inspect heads MODEL` once the session is open): {K} probes of "
           f"BOS + 2 × {setup['N']} tokens ({L} tokens each) and the built-in sample ({sample} tokens).",
           "",
           "| what | time | × one probe-batch forward (target ≤ 1.5) |",
           "|---|---|---|",
           f"| forward pass of the probe batch, one [{K},{L}] run (`session.RunBatch`) | {best['batched']:.0f} ms | 1.00 |",
           f"| the same {K} sequences one after another (`session.Run`) | {best['one_by_one']:.0f} ms | {best['one_by_one'] / best['batched']:.2f} |",
           f"| whole census: draw, batched probe run, scores, sample run, scores | {best['census']:.0f} ms | {best['census'] / best['batched']:.2f} |",
           "",
           "Census ÷ probe-batch forward per round: " + ", ".join(f"{p['census'] / p['batched']:.2f}" for p in per)
           + "; one by one ÷ batched: " + ", ".join(f"{p['one_by_one'] / p['batched']:.2f}" for p in per) + ".",
           "",
           f"Corpus mode (`inspect heads MODEL --text-file F --window {T}`), {setup['windows']} windows of "
           f"WikiText-2 test text, batch 1:",
           "",
           "| what | tokens/s | × plain (target ≥ 0.80) |",
           "|---|---|---|",
           f"| plain forward passes (logits only, the model as exported) | {best['plain']:.0f} | 1.00 |",
           f"| forward passes with all attention exposed, nothing scored | {best['attn']:.0f} | {best['attn'] / best['plain']:.2f} |",
           f"| corpus mode: tokenize, run, score every head, ICL losses (`analysis.ScoreCorpus`) | {best['score']:.0f} | {best['score'] / best['plain']:.2f} |",
           "",
           "Corpus mode ÷ plain per round: " + ", ".join(f"{p['score'] / p['plain']:.2f}" for p in per) + ".",
           ""]
    return out


def tui(rows):
    """The terminal UI section: rows of scripts/bench_tui.sh."""
    frames = {}
    for r in rows:
        if r["what"] == "frame":
            frames.setdefault(r["name"], []).append(r["ns"] / 1e6)
    b = next(r for r in rows if r["what"] == "bytes")
    out = ["Frame building (`go test ./tui -bench .`, the model's Update and View without the terminal; best of 3 × 200 frames):", "",
           "| frame | time |", "|---|---|"]
    names = {"BenchmarkGridFrame/cached": "200×60 grid, 12 layers × 12 heads, T = 256, drawn from cached thumbnails (every frame after the first; target ≤ 2 ms)",
             "BenchmarkGridFrame/first": "the same grid with every thumbnail pooled anew (first frame, resize, new prompt)",
             "BenchmarkGridFrame/view": "View once Update has drawn the frame (what Bubble Tea asks for after every message)",
             "BenchmarkCursorMoveFrame": "head view 200×60 at T = 256 after a cursor move (Update, which draws, and View)",
             "BenchmarkPrompt100KB/paste": "prompt editor over that grid: 100 KB pasted as one message, and the frame after it",
             "BenchmarkPrompt100KB/key": "one key typed at the end of a 100 KB prompt, and the frame after it"}
    for key, label in names.items():
        if key in frames:
            ms = min(frames[key])
            out.append(f"| {label} | {ms:.2f} ms |" if ms >= 0.01 else f"| {label} | {ms * 1e3:.2f} µs |")
    out += ["", f"Bytes written to the terminal by Bubble Tea v2's cell-diffing renderer in 256 colours at 200×60 "
            f"(`TestBytesPerCursorMove`, head view, T = 40): {b['first']} bytes for the first frames, "
            f"{b['move']} bytes for one cursor move.", "",
            "Time to first frame (`scripts/benchtui`: load, session, run on random ids, layout and render of a 200×60 grid "
            "in 256 colours; the terminal's drawing excluded; best of 3):", "",
            "| model | T | open | run | frame | first frame |", "|---|---|---|---|---|---|"]
    best = {}
    for r in rows:
        if r["what"] == "first":
            k = (r["model"], r["T"])
            if k not in best or r["first_frame_ms"] < best[k]["first_frame_ms"]:
                best[k] = r
    for (model, T), r in best.items():
        out.append(f"| `{model}` ({r['layers']}×{r['heads']}) | {T} | {r['open_ms']:.0f} ms | {r['run_ms']:.0f} ms | {r['frame_ms']:.0f} ms | {r['first_frame_ms']:.0f} ms |")
    return out


SECTIONS = {
    "spine": (spine, "make bench", "Spine: attention through onnxruntime"),
    "analysis": (analysis, "bash scripts/bench_analysis.sh", "Analysis: head census and corpus mode"),
    "tui": (tui, "bash scripts/bench_tui.sh", "Terminal UI"),
}


def main():
    name, results, path = sys.argv[1:4]
    rows = [json.loads(l) for l in open(results) if l.strip()]
    fn, command, title = SECTIONS[name]
    body = fn(rows)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    head = [f"<!-- {name}:start -->",
            f"Measured {datetime.date.today()} at commit {commit} with `{command}` on {machine()}.", ""]
    section = "\n".join(head + body + [f"<!-- {name}:end -->"])
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start in text and end in text:
        text = text[:text.index(start)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + f"\n\n## {title}\n\n{section}\n"
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
