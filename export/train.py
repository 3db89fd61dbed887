"""Trains an AttnOnly transformer on local text, watches induction heads form, exports it.

    python -m export.train --data ../shared/data --out runs/demo --export models/demo
    python -m export.train bench --steps 300 [same model flags]   # tokens/s vs plain PyTorch
    python -m export.train compare RUN_DIR...                      # markdown table of runs
    python -m export.train export RUN_DIR OUT_DIR                  # export a checkpoint
    python -m export.train timeline OUT CKPT.pt...                 # a timeline from checkpoints

What it does, in order:
  1. reads the text files under --data, trains a tokenizer on them (byte-level BPE by
     default) and writes it to OUT/tokenizer.json; the last --held-out share is held out;
  2. trains with AdamW (linear warm-up, cosine decay to --min-lr-frac of --lr, gradient
     clipping at 1), batches of random windows, a --repeat-frac share of which repeat a span
     of themselves (0 by default: natural text only);
  3. every --eval-every steps: held-out loss, in-context-learning score, and the induction,
     duplicate-token and previous-token score of every head on the standard probe
     (export/scores.py), appended to OUT/metrics.csv and drawn in OUT/training.png;
  4. every --ckpt-every steps and at the end: OUT/checkpoint.pt (model, optimiser, data RNG,
     step); --resume continues from it to the very state an uninterrupted run reaches;
  5. with --timeline log|every:N|STEPS: OUT/timeline/, the model exported at those steps
     (0, 1, 2, 5, 10, 20, 50, ... and the last for log) with a metrics row each; the
     training itself is unchanged (export/timeline.py);
  6. with --export DIR: model.onnx, tokenizer.json, config.json, reference.json (PyTorch's
     attention on random ids and on the default prompt), metrics.csv, training.png, CARD.md.

Deterministic for a given --seed and thread count. A GPU is used when present (--device).
"""
import argparse
import csv
import json
import math
import os
import shutil
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from export import corpus, scores, timeline
from export.models import AttnOnly, AttnOnlyConfig
from export.onnx_export import _tensor_json, _write_json, export as onnx_export

DEFAULT_PROMPT = ("The king is dead, and the queen will rule the land alone. "
                  "The king is dead, and the queen will rule the land alone.")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = ap.add_argument
    a("--data", nargs="+", default=["../shared/data"], help="text files or folders of *.txt")
    a("--out", default="runs/train", help="run folder: tokenizer, metrics, checkpoint, PNG")
    a("--export", default=None, help="write the inspector-ready model folder here at the end")
    a("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    a("--tokenizer", choices=["bpe", "word"], default="bpe")
    a("--vocab-size", type=int, default=2048)
    a("--layers", type=int, default=2)
    a("--heads", type=int, default=8)
    a("--d-model", type=int, default=128)
    a("--d-head", type=int, default=16)
    a("--n-ctx", type=int, default=256)
    a("--mlp", action="store_true", help="an MLP after each attention layer")
    a("--layernorm", action="store_true", help="pre-LayerNorm")
    a("--batch", type=int, default=16)
    a("--steps", type=int, default=2000)
    a("--lr", type=float, default=1e-3)
    a("--min-lr-frac", type=float, default=0.1)
    a("--warmup", type=int, default=100)
    a("--weight-decay", type=float, default=0.1)
    a("--repeat-frac", type=float, default=0.0,
      help="share of training windows that repeat a span of themselves")
    a("--repeat-kind", choices=["text", "random", "tiled"], default="text",
      help="the repeated span: the window's own text, or uniformly random token ids; "
           "tiled replaces the whole window by a random segment of 8-48 ids repeated")
    a("--held-out", type=float, default=0.1)
    a("--eval-every", type=int, default=100)
    a("--eval-windows", type=int, default=64, help="held-out windows per periodic evaluation")
    a("--final-eval-windows", type=int, default=20000,
      help="held-out windows (at most all) for the final loss and ICL score; they start every "
           "n_ctx/8 tokens, so that the ICL score compares positions over the same tokens")
    a("--ckpt-every", type=int, default=500)
    a("--timeline", default="none",
      help="write OUT/timeline/ (each step's model.onnx and config.json, one tokenizer.json, "
           "metrics.csv) at these steps: none, log (0,1,2,5,10,20,50,... and the last), "
           "every:N, or a list such as 0,10,100")
    a("--timeline-fp16", action="store_true",
      help="float16 weights in the timeline's models (half the size)")
    a("--attention", choices=["fused", "plain"], default="fused",
      help="training's score computation: fused (one baddbmm for scale, Q·Kᵀ and mask; "
           "faster) or plain (as the export; bit-exact replays of runs made before fused)")
    a("--until", type=int, default=None,
      help="stop with a checkpoint after this step (the schedule still runs to --steps)")
    a("--seed", type=int, default=0)
    a("--threads", type=int, default=1, help="torch CPU threads")
    a("--device", default="auto", help="auto, cpu or cuda")
    a("--quiet", action="store_true")
    args = ap.parse_args(argv)
    try:
        args.timeline = timeline.parse_schedule(args.timeline)
        timeline.schedule_steps(args.timeline, args.steps)
    except ValueError as e:
        ap.error(str(e))
    return args


def set_threads(n):
    """torch's intra-op threads, and OpenBLAS's own pool (Debian's torch calls OpenBLAS, whose
    pthread build otherwise starts a spinning thread per core whatever torch is told)."""
    torch.set_num_threads(n)
    try:
        import ctypes
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "openblas" in line.lower()}
        for lib in libs:
            ctypes.CDLL(lib).openblas_set_num_threads(n)
    except (OSError, AttributeError):
        pass


def lr_at(step, args):
    """Linear warm-up to args.lr, then cosine decay to args.lr * args.min_lr_frac."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    t = (step - args.warmup) / max(1, args.steps - args.warmup)
    floor = args.lr * args.min_lr_frac
    return floor + 0.5 * (args.lr - floor) * (1 + math.cos(math.pi * min(1.0, t)))


def tiled(args):
    return getattr(args, "repeat_kind", "text") == "tiled"


def random_vocab(args, tok):
    return tok.get_vocab_size() if getattr(args, "repeat_kind", "text") in ("random", "tiled") else None


def make_model(args, vocab_size):
    cfg = AttnOnlyConfig(n_layers=args.layers, n_heads=args.heads, d_model=args.d_model,
                         d_head=args.d_head, vocab_size=vocab_size, n_ctx=args.n_ctx,
                         mlp=args.mlp, layernorm=args.layernorm)
    model = AttnOnly(cfg)
    for block in model.blocks:
        block.attn.fused = getattr(args, "attention", "fused") == "fused"
    return model


def make_optimizer(model, args):
    """AdamW; weight decay on matrices only (not on LayerNorm gains or biases)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": args.weight_decay},
              {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95))


PROBE_N, PROBE_COUNT, PROBE_SEED = 50, 8, 0


def icl_positions(n_ctx):
    """(early, late) positions of the ICL score: 50 and 500 where the context allows,
    otherwise ~10 % of the context and its last position."""
    if n_ctx > 500:
        return 50, 500
    return max(1, n_ctx // 10), n_ctx - 1


def per_head(attn, fn, *a):
    """[L][B, H, T, T] tensors -> [L, H] tensor of fn(A, *a) averaged over the batch."""
    if not attn:
        return torch.zeros(0, 0)
    return torch.tensor([[sum(fn(x[b, h].numpy(), *a) for b in range(x.size(0))) / x.size(0)
                          for h in range(x.size(1))] for x in attn]).reshape(len(attn), -1)


def per_position_loss(logits, targets):
    """[B, T, V], [B, T] -> [T]: cross-entropy per position, averaged over the batch."""
    loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none")
    return loss.view(targets.shape).mean(dim=0)


@torch.no_grad()
def evaluate(model, x, y):
    """Held-out loss, per-position loss, the ICL score, and every head's scores
    (export/scores.py): induction and duplicate-token on the standard probe (PROBE_COUNT
    sequences of PROBE_N random ids repeated, seed PROBE_SEED), previous-token on the first
    8 held-out windows."""
    model.eval()
    device = next(model.parameters()).device
    pos_loss = torch.zeros(x.size(1))
    text_attn = None
    for i in range(0, x.size(0), 16):
        logits, attn = model(x[i:i + 16], return_attn=True)
        if text_attn is None:
            text_attn = [a[:8].float().cpu() for a in attn]
        pos_loss += per_position_loss(logits, y[i:i + 16]).cpu() * x[i:i + 16].size(0)
    pos_loss /= x.size(0)
    n = min(PROBE_N, model.config.n_ctx // 2)  # shorter probes for contexts under 100
    probe = torch.from_numpy(scores.repeated_tokens(
        np.random.RandomState(PROBE_SEED), n, PROBE_COUNT, model.config.vocab_size))
    _, probe_attn = model(probe.to(device), return_attn=True)
    probe_attn = [a.float().cpu() for a in probe_attn]
    model.train()
    early, late = icl_positions(x.size(1))
    return {"val_loss": float(pos_loss.mean()),
            "icl": float(pos_loss[late] - pos_loss[early]), "pos_loss": pos_loss,
            "induction": per_head(probe_attn, scores.induction, n),
            "duplicate_token": per_head(probe_attn, scores.duplicate_token, n),
            "prev_token": per_head(text_attn, scores.prev_token)}


def head_names(n_layers, n_heads):
    return [f"L{l}H{h}" for l in range(n_layers) for h in range(n_heads)]


def metrics_header(n_layers, n_heads):
    heads = head_names(n_layers, n_heads)
    return (["step", "tokens", "elapsed_s", "lr", "train_loss", "val_loss", "icl",
             "induction_max", "prev_token_max"]
            + [f"ind_{h}" for h in heads] + [f"prev_{h}" for h in heads]
            + [f"dup_{h}" for h in heads])


def metrics_row(step, tokens, elapsed, lr, train_loss, ev):
    flat = lambda t: [f"{v:.4f}" for v in t.flatten().tolist()]
    ind, prev = ev["induction"], ev["prev_token"]
    return ([step, tokens, f"{elapsed:.1f}", f"{lr:.6g}", f"{train_loss:.4f}",
             f"{ev['val_loss']:.4f}", f"{ev['icl']:.4f}",
             f"{ind.max().item() if ind.numel() else 0:.4f}",
             f"{prev.max().item() if prev.numel() else 0:.4f}"]
            + flat(ind) + flat(prev) + flat(ev["duplicate_token"]))


def read_metrics(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def write_metrics(path, header, rows):
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    os.replace(tmp, path)


def plot(metrics_path, png_path, title):
    """Loss and induction score over tokens seen: the phase-change picture."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("train: matplotlib not installed, no PNG (apt-get install python3-matplotlib)",
              file=sys.stderr)
        return
    rows = read_metrics(metrics_path)
    if not rows:
        return
    tok = [int(r["tokens"]) / 1e6 for r in rows]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    ax1.plot(tok, [float(r["train_loss"]) for r in rows], label="train loss")
    ax1.plot(tok, [float(r["val_loss"]) for r in rows], label="held-out loss")
    ax1.set_ylabel("loss (nats/token)")
    ax1.legend()
    ax1.grid(alpha=0.3)
    ax1.set_title(title, fontsize=10)
    ind_cols = [k for k in rows[0] if k.startswith("ind_")]
    layers = sorted({k.split("H")[0][len("ind_L"):] for k in ind_cols}, key=int)
    for l in layers:
        cols = [k for k in ind_cols if k.startswith(f"ind_L{l}H")]
        ax2.plot(tok, [max(float(r[c]) for c in cols) for r in rows],
                 label=f"best induction score, layer {l}")
    prev_cols = [k for k in rows[0] if k.startswith("prev_L0H")]
    if prev_cols:
        ax2.plot(tok, [max(float(r[c]) for c in prev_cols) for r in rows], "--",
                 label="best previous-token score, layer 0")
    ax2.plot(tok, [-float(r["icl"]) for r in rows], ":", label="−ICL score (nats)")
    ax2.set_xlabel("training tokens (millions)")
    ax2.set_ylabel("score")
    ax2.set_ylim(bottom=min(0, ax2.get_ylim()[0]))
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    tmp = png_path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, png_path)


def save_checkpoint(path, model, opt, g, step, tokens, elapsed, args):
    tmp = path + ".tmp"
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "data_rng": g.get_state(),
                "step": step, "tokens": tokens, "elapsed": elapsed, "args": vars(args)}, tmp)
    os.replace(tmp, path)


def load_data(args, log):
    texts = corpus.read_texts(args.data)
    tok_path = os.path.join(args.out, "tokenizer.json")
    if args.resume and os.path.exists(tok_path):
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(tok_path)
    else:
        tok = corpus.build_tokenizer(texts, args.tokenizer, args.vocab_size)
        tok.save(tok_path)
    ids = corpus.encode(tok, texts)
    train_ids, val_ids = corpus.split(ids, args.held_out)
    log(f"train: {len(texts)} files, {sum(map(len, texts))} characters, {len(ids)} tokens "
        f"({len(train_ids)} train, {len(val_ids)} held out), vocabulary {tok.get_vocab_size()}")
    return tok, train_ids, val_ids


class TimelineRun:
    """The timeline a training run writes (nothing when args.timeline is none): at each
    scheduled step, the model exported and a metrics row, at no change to the training."""

    def __init__(self, args, tok, resume_step):
        self.args, self.tok, self.seconds = args, tok, 0.0
        self.steps = set(timeline.schedule_steps(getattr(args, "timeline", "none"), args.steps))
        self.loss_sum, self.loss_n, self.writer = torch.zeros(()), 0, None
        if self.steps:
            name = os.path.basename(os.path.normpath(args.export or args.out))
            self.writer = timeline.Writer(os.path.join(args.out, "timeline"), name, tok,
                                          resume_step, getattr(args, "timeline_fp16", False))

    def add_loss(self, loss):
        if self.writer:
            self.loss_sum += loss.detach().cpu()
            self.loss_n += 1

    def maybe_snapshot(self, step, tokens, model, get_eval, lr, elapsed):
        """Writes the step when it is scheduled; get_eval() gives its evaluation."""
        if self.writer is None or step not in self.steps:
            return
        t = time.time()
        train_loss = float(self.loss_sum) / self.loss_n if self.loss_n else None
        self.loss_sum, self.loss_n = torch.zeros(()), 0
        add_snapshot(self.writer, self.args, self.tok, step, tokens, model, get_eval(),
                     train_loss, lr, elapsed)
        self.seconds += time.time() - t


def config_fields(args, tok, tokenizer_file, prompt, command, training, scores):
    """The config.json fields beyond model_info that an export (final or a timeline step)
    writes: the model's options, its tokenizer, the default prompt, how it was trained
    (training adds the step's or the run's numbers) and its head scores."""
    return {
        "mlp": args.mlp, "layernorm": args.layernorm,
        "tokenizer": {"file": tokenizer_file, "kind": args.tokenizer,
                      "vocab_size": tok.get_vocab_size()},
        "default_prompt": prompt,
        "training": {"data": [os.path.relpath(p) for p in corpus.list_files(args.data)],
                     "repeat_frac": args.repeat_frac,
                     "repeat_kind": getattr(args, "repeat_kind", "text"),
                     "batch": args.batch, "lr": args.lr, "seed": args.seed,
                     "command": command, **training},
        "scores": scores,
    }


def add_snapshot(writer, args, tok, step, tokens, model, ev, train_loss, lr, elapsed):
    """Adds the model at step to the timeline writer: its config.json fields (the final
    export's, for this step) and its metrics row from the evaluation ev."""
    ind, prev = ev["induction"], ev["prev_token"]
    config = config_fields(args, tok, "../tokenizer.json", DEFAULT_PROMPT,
                           getattr(args, "command", None), {
                               "steps": step, "tokens_seen": tokens, "train_loss": train_loss,
                               "eval_loss": ev["val_loss"], "icl_score": ev["icl"],
                               "icl_positions": list(icl_positions(args.n_ctx))},
                           {"induction": ind.tolist(), "prev_token": prev.tolist(),
                            "duplicate_token": ev["duplicate_token"].tolist()})
    writer.add(step, tokens, model, config, {
        "train_loss": train_loss, "eval_loss": ev["val_loss"], "icl": ev["icl"],
        "lr": lr, "elapsed_s": elapsed,
        "induction_max": ind.max().item() if ind.numel() else None,
        "prev_token_max": prev.max().item() if prev.numel() else None})


def train(args):
    """Runs the training that args describe; returns (model, tokenizer, summary dict)."""
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    set_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    os.makedirs(args.out, exist_ok=True)
    tok, train_ids, val_ids = load_data(args, log)

    torch.manual_seed(args.seed)
    model = make_model(args, tok.get_vocab_size()).to(device)
    opt = make_optimizer(model, args)
    g = torch.Generator().manual_seed(args.seed)
    step, tokens, elapsed0 = 0, 0, 0.0
    ckpt_path = os.path.join(args.out, "checkpoint.pt")
    metrics_path = os.path.join(args.out, "metrics.csv")
    header = metrics_header(args.layers, args.heads)
    rows = []
    if args.resume:
        ck = torch.load(ckpt_path, map_location=device)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        g.set_state(ck["data_rng"])
        step, tokens, elapsed0 = ck["step"], ck["tokens"], ck["elapsed"]
        prev = ck["args"]
        if prev.get("attention", "plain") != getattr(args, "attention", "fused"):
            log(f"train: warning: the checkpoint was trained with --attention "
                f"{prev.get('attention', 'plain')}, this run goes on with --attention "
                f"{args.attention} (the same numbers up to float rounding, not bit for bit)")
        cmd = getattr(args, "command", None)
        if cmd and prev.get("command") and cmd != prev.get("command"):  # a continuation
            args.command = (prev["command"] + f"   (to step {step}, then:)   " + cmd)
        rows = [[r[k] for k in header] for r in read_metrics(metrics_path)
                if int(r["step"]) <= step]
        log(f"train: resumed at step {step} ({tokens} tokens)")
    n_params = sum(p.numel() for p in model.parameters())
    log(f"train: {args.layers} layers x {args.heads} heads, d_model {args.d_model}, "
        f"d_head {args.d_head}, context {args.n_ctx}, {n_params} parameters, on {device}")

    vx, vy = corpus.eval_windows(val_ids, args.n_ctx, args.eval_windows)
    vx, vy = vx.to(device), vy.to(device)
    tl = TimelineRun(args, tok, step if args.resume else None)
    title = (f"{args.layers}-layer {'attention-only' if not args.mlp else 'with MLPs'}, "
             f"{args.heads} heads, d_model {args.d_model}, context {args.n_ctx}")
    t0 = time.time() - elapsed0
    loss_sum, loss_n = torch.zeros(()), 0
    model.train()
    if step == 0 and not args.resume:  # the untrained model's row
        ev = evaluate(model, vx, vy)
        rows.append(metrics_row(0, 0, 0.0, 0.0, ev["val_loss"], ev))
        tl.maybe_snapshot(0, 0, model, lambda: ev, 0.0, 0.0)
    ev = None
    stop = min(args.steps, args.until or args.steps)
    while step < stop:
        lr = lr_at(step, args)
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = corpus.sample_batch(train_ids, args.batch, args.n_ctx, g, args.repeat_frac,
                                   random_vocab(args, tok), tiled(args))
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        tokens += x.numel()
        loss_sum += loss.detach().cpu()
        loss_n += 1
        tl.add_loss(loss)
        evaluated = step % args.eval_every == 0 or step == args.steps
        if evaluated:
            ev = evaluate(model, vx, vy)
            train_loss = float(loss_sum) / loss_n
            loss_sum, loss_n = torch.zeros(()), 0
            rows.append(metrics_row(step, tokens, time.time() - t0, lr, train_loss, ev))
            write_metrics(metrics_path, header, rows)
            ind = ev["induction"]
            log(f"step {step:5d}  tokens {tokens / 1e6:7.2f}M  {time.time() - t0:7.1f}s  "
                f"train {train_loss:.3f}  held-out {ev['val_loss']:.3f}  icl {ev['icl']:+.3f}  "
                f"induction max {ind.max().item() if ind.numel() else 0:.3f}  "
                f"prev-token max {ev['prev_token'].max().item() if ind.numel() else 0:.3f}")
        tl.maybe_snapshot(step, tokens, model, (lambda: ev) if evaluated else
                          (lambda: evaluate(model, vx, vy)), lr, time.time() - t0)
        if step % args.ckpt_every == 0 or step == stop:
            save_checkpoint(ckpt_path, model, opt, g, step, tokens, time.time() - t0, args)
    loop_time = time.time() - t0  # training and periodic evaluation, before the final one
    write_metrics(metrics_path, header, rows)
    plot(metrics_path, os.path.join(args.out, "training.png"), title)
    fx, fy = corpus.eval_windows(val_ids, args.n_ctx, args.final_eval_windows,
                                 stride=max(1, args.n_ctx // 8))
    ev = evaluate(model, fx.to(device), fy.to(device))
    log(f"train: final held-out loss {ev['val_loss']:.3f} and ICL score {ev['icl']:+.3f} "
        f"on {fx.size(0)} windows")
    summary = {"steps": step, "tokens_seen": tokens, "wall_time_s": round(time.time() - t0, 1),
               "loop_time_s": round(loop_time, 2),
               "final_train_loss": float(rows[-1][4]), "final_val_loss": ev["val_loss"],
               "icl_score": ev["icl"], "icl_positions": list(icl_positions(args.n_ctx)),
               "induction": ev["induction"].tolist(), "prev_token": ev["prev_token"].tolist(),
               "duplicate_token": ev["duplicate_token"].tolist(),
               "parameters": n_params, "device": device, "eval_windows": fx.size(0),
               "threads": args.threads}
    if tl.writer:
        summary["timeline_s"] = round(tl.seconds, 2)
        log(f"train: timeline of {len(tl.writer.steps)} steps in {os.path.join(args.out, 'timeline')} "
            f"({tl.seconds:.1f} s of the loop's {loop_time:.1f} s)")
    _write_json(os.path.join(args.out, "summary.json"), summary, indent=2)
    return model.cpu().eval(), tok, summary


def export_model(model, tok, summary, args, folder, prompt=DEFAULT_PROMPT, command=None):
    """Writes the inspector-ready folder: model.onnx, tokenizer.json, config.json,
    reference.json (with a run on `prompt`), metrics.csv, training.png and CARD.md."""
    name = os.path.basename(os.path.normpath(folder))
    os.makedirs(folder, exist_ok=True)
    onnx_export(model, folder, 17, ["input_ids"], name=name)
    tok.save(os.path.join(folder, "tokenizer.json"))
    ids = tok.encode(prompt, add_special_tokens=False).ids
    if len(ids) > model.config.n_ctx:
        raise ValueError(f"the default prompt is {len(ids)} tokens, over the context of "
                         f"{model.config.n_ctx}: give a shorter one")
    with torch.no_grad():
        logits, attn = model(torch.tensor([ids]), return_attn=True)
    ref_path = os.path.join(folder, "reference.json")
    with open(ref_path) as f:
        ref = json.load(f)
    ref["runs"].append({"ids": ids, "text": prompt, "logits": _tensor_json(logits),
                        "attention": [_tensor_json(a) for a in attn]})
    _write_json(ref_path, ref)
    cfg_path = os.path.join(folder, "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg.update(config_fields(args, tok, "tokenizer.json", prompt, command, {
        k: summary[k] for k in ("steps", "tokens_seen", "wall_time_s", "final_train_loss",
                                "final_val_loss", "icl_score", "icl_positions", "device")},
        {k: summary[k] for k in ("induction", "prev_token", "duplicate_token")}))
    _write_json(cfg_path, cfg, indent=2)
    for f in ("metrics.csv", "training.png"):
        if os.path.exists(os.path.join(args.out, f)):
            shutil.copyfile(os.path.join(args.out, f), os.path.join(folder, f))
    write_card(os.path.join(folder, "CARD.md"), cfg, summary, args, command)
    write_tokenizer_golden(tok, os.path.join(folder, "tokenizer_golden.json"), args.data, prompt)
    return cfg


EDGE_TEXTS = ["", " ", "  two  spaces\n\n\tand a tab", "naïve café — “quotes” 😀 日本語",
              "<|endoftext|> inside text", "ROMEO:\nWhat, ho! Apothecary!"]


def write_tokenizer_golden(tok, path, data, prompt, chars=1500):
    """Python's ids for sample text (the start and middle of every training file, the
    default prompt, edge cases): the Go tests must produce the same."""
    texts = [prompt] + EDGE_TEXTS
    for t in corpus.read_texts(data):
        texts += [t[:chars], t[len(t) // 2: len(t) // 2 + chars]]
    cases = [{"text": t, "ids": tok.encode(t, add_special_tokens=False).ids} for t in texts]
    _write_json(path, {"tokenizers": __import__("tokenizers").__version__, "cases": cases})


def score_table(summary):
    ind, prev, dup = summary["induction"], summary["prev_token"], summary["duplicate_token"]
    lines = ["| head | induction | previous-token | duplicate-token |", "|---|---|---|---|"]
    for l in range(len(ind)):
        for h in range(len(ind[l])):
            lines.append(f"| L{l}H{h} | {ind[l][h]:.3f} | {prev[l][h]:.3f} | {dup[l][h]:.3f} |")
    return "\n".join(lines)


def write_card(path, cfg, summary, args, command):
    t = cfg["training"]
    early, late = t["icl_positions"]
    kind = "attention-only" if not args.mlp else "with MLPs"
    text = f"""# {cfg['model']}: {cfg['n_layers']}-layer {kind} transformer

{cfg['n_layers']} layers x {cfg['n_heads']} heads, d_model {cfg['d_model']}, d_head {cfg['d_head']},
context {cfg['n_positions']}, learned positional embeddings, residual stream,
{'pre-LayerNorm' if args.layernorm else 'no LayerNorm'}, {summary['parameters']} parameters.
Tokenizer: byte-level BPE with {cfg['tokenizer']['vocab_size']} tokens trained on the same text
({cfg['tokenizer']['kind']}; `tokenizer.json`).

## Training

- command: `{command}`
- data: {', '.join(t['data'])} (the last {args.held_out:.0%} of the tokens held out)
- {t['repeat_frac']:.0%} of the training windows repeat a span of themselves (a span of 8 to
  n_ctx/2 tokens at a random place, {'first replaced by uniformly random token ids, ' if t.get('repeat_kind') == 'random' else ''}written
  again right after itself); the rest is natural text, and every evaluation below is on
  natural held-out text or the standard random-token probe
- {t['steps']} steps of {args.batch} x {args.n_ctx} tokens = {t['tokens_seen']} tokens seen,
  AdamW lr {args.lr} (warm-up {args.warmup} steps, cosine to {args.lr * args.min_lr_frac:g}),
  weight decay {args.weight_decay}, seed {args.seed}
- wall time {t['wall_time_s'] / 60:.1f} min on {t['device']} ({args.threads} thread(s), PyTorch
  {cfg['torch']})

## Results

- final train loss {t['final_train_loss']:.3f} (mean of the last {args.eval_every} steps),
  held-out loss {t['final_val_loss']:.3f} nats/token ({summary['eval_windows']} held-out windows
  starting every {max(1, args.n_ctx // 8)} tokens)
- in-context-learning score (mean held-out loss at position {late} minus at position {early},
  same windows): {t['icl_score']:+.3f} nats
- head scores (DESIGN.md definitions; induction and duplicate-token on 8 probes of 50 random
  tokens repeated, seed 0; previous-token on the first 8 held-out windows):

{score_table(summary)}

![loss and induction score over training](training.png)

`metrics.csv` has every evaluation; `reference.json` PyTorch's attention on two random id
sequences and on the default prompt: "{cfg['default_prompt']}"
"""
    with open(path, "w") as f:
        f.write(text)


def bench(argv):
    """Tokens/s of train() against a plain PyTorch loop over the same model, optimiser and
    batches (forward, loss, backward, AdamW step; no schedule, clipping, evaluation,
    checkpoints or metrics), in one process, plain first. Prints one line per loop."""
    import tempfile
    args = parse_args(argv)
    set_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        args.out, args.export, args.quiet = tmp, None, True
        tok, train_ids, _ = load_data(args, lambda *a: None)
        torch.manual_seed(args.seed)
        model = make_model(args, tok.get_vocab_size())
        opt = make_optimizer(model, args)
        g = torch.Generator().manual_seed(args.seed)
        batches = [corpus.sample_batch(train_ids, args.batch, args.n_ctx, g, args.repeat_frac,
                                       random_vocab(args, tok), tiled(args))
                   for _ in range(args.steps)]
        t = time.time()
        for x, y in batches:
            loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        plain = args.steps * args.batch * args.n_ctx / (time.time() - t)
        _, _, summary = train(args)
        ours = summary["tokens_seen"] / summary["loop_time_s"]
    print(f"plain PyTorch loop: {plain:.0f} tokens/s")
    print(f"export.train:       {ours:.0f} tokens/s ({args.steps} steps with evaluation at step 0 and every "
          f"{args.eval_every}, checkpoint every {args.ckpt_every}; overhead "
          f"{100 * (plain / ours - 1):.1f} %)")
    return plain, ours


def export_checkpoint(run_dir, folder):
    """Exports RUN_DIR/checkpoint.pt (evaluated as at the end of train()) into folder."""
    ck = torch.load(os.path.join(run_dir, "checkpoint.pt"), map_location="cpu")
    args = argparse.Namespace(**{**vars(parse_args([])), **ck["args"]})
    args.out, args.resume, args.steps, args.until = run_dir, True, ck["step"], None
    args.timeline = "none"  # leave the run's timeline as it is
    model, tok, summary = train(args)  # loads the checkpoint, trains nothing, evaluates
    summary["wall_time_s"] = round(ck["elapsed"], 1)
    return export_model(model, tok, summary, args, folder,
                        command=ck["args"].get("command") or f"(checkpoint at step {ck['step']})")


SHAPE_ARGS = ("layers", "heads", "d_model", "d_head", "n_ctx", "vocab_size", "mlp",
              "layernorm", "tokenizer", "data", "held_out")


def timeline_from_checkpoints(out, paths, fp16=False):
    """Writes a timeline folder at out from export.train checkpoints (checkpoint.pt files
    of one run kept at several steps: copies, or --ckpt-every runs' saved copies), each
    evaluated as train's own snapshots are (the same held-out windows and probes). They
    must share one model shape, tokenizer and data; the tokenizer is the tokenizer.json
    beside the first (by step). Returns the steps written. Raises ValueError with a
    sentence saying what is wrong."""
    if os.path.exists(out) and os.listdir(out):
        raise ValueError(f"{out} is not empty: give a new folder for the timeline")
    cks = []
    for p in paths:
        try:
            ck = torch.load(p, map_location="cpu")
        except (OSError, RuntimeError, EOFError) as e:
            raise ValueError(f"{p}: not a readable export.train checkpoint ({e})") from e
        if not isinstance(ck, dict) or not {"model", "args", "step", "tokens"} <= ck.keys():
            raise ValueError(f"{p}: not an export.train checkpoint (no model, args, step and tokens)")
        cks.append((ck["step"], p, ck))
    cks.sort(key=lambda c: c[0])
    steps = [c[0] for c in cks]
    if len(set(steps)) != len(steps):
        raise ValueError(f"two checkpoints are of the same step ({steps}): give one per step")
    first = cks[0][2]["args"]
    for step, p, ck in cks[1:]:
        diff = [k for k in SHAPE_ARGS if ck["args"].get(k) != first.get(k)]
        if diff:
            raise ValueError(f"{p} (step {step}) is of another run than {cks[0][1]}: its "
                             f"{', '.join(diff)} differ")
    args = argparse.Namespace(**{**vars(parse_args([])), **first})
    args.out, args.resume = os.path.dirname(os.path.abspath(cks[0][1])), True
    if not os.path.exists(os.path.join(args.out, "tokenizer.json")):
        raise ValueError(f"no tokenizer.json beside {cks[0][1]}: the run's folder holds it")
    tok, _, val_ids = load_data(args, lambda *a: None)
    vx, vy = corpus.eval_windows(val_ids, args.n_ctx, args.eval_windows)
    name = os.path.basename(os.path.normpath(args.export or args.out))
    writer = timeline.Writer(out, name, tok, None, fp16)
    for step, p, ck in cks:
        a = argparse.Namespace(**{**vars(parse_args([])), **ck["args"]})
        model = make_model(a, tok.get_vocab_size())
        model.load_state_dict(ck["model"])
        add_snapshot(writer, a, tok, step, ck["tokens"], model, evaluate(model, vx, vy), None,
                     lr_at(step, a), ck.get("elapsed"))
    return steps


def compare(run_dirs):
    """Markdown: loss, ICL score and the best heads of each run folder (its summary.json),
    then every head's induction and previous-token score side by side."""
    runs = []
    for d in run_dirs:
        with open(os.path.join(d, "summary.json")) as f:
            runs.append((os.path.basename(os.path.normpath(d)), json.load(f)))
    out = ["| run | layers | tokens | wall time | held-out loss | ICL score | best induction "
           "(head) | best previous-token (head) |", "|---|---|---|---|---|---|---|---|"]
    for name, s in runs:
        best = lambda key: max(((v, f"L{l}H{h}") for l, row in enumerate(s[key])
                                for h, v in enumerate(row)), default=(0.0, "-"))
        (iv, ih), (pv, ph) = best("induction"), best("prev_token")
        e, l = s["icl_positions"]
        out.append(f"| {name} | {len(s['induction'])} | {s['tokens_seen'] / 1e6:.1f} M | "
                   f"{s['wall_time_s'] / 60:.1f} min | {s['final_val_loss']:.3f} | "
                   f"{s['icl_score']:+.3f} (pos {l} − pos {e}) | {iv:.3f} ({ih}) | {pv:.3f} ({ph}) |")
    out += ["", "| head | " + " | ".join(f"{n} induction | {n} prev-token" for n, _ in runs) + " |",
            "|---|" + "---|---|" * len(runs)]
    heads = sorted({(l, h) for _, s in runs for l, row in enumerate(s["induction"])
                    for h in range(len(row))})
    for l, h in heads:
        cells = []
        for _, s in runs:
            ok = l < len(s["induction"])
            cells += [f"{s['induction'][l][h]:.3f}" if ok else "", f"{s['prev_token'][l][h]:.3f}" if ok else ""]
        out.append(f"| L{l}H{h} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        bench(argv[1:])
        return
    if argv[:1] == ["export"]:
        if len(argv) != 3:
            sys.exit("usage: python -m export.train export RUN_DIR OUT_DIR")
        export_checkpoint(argv[1], argv[2])
        return
    if argv[:1] == ["timeline"]:
        ap = argparse.ArgumentParser(prog="python -m export.train timeline",
                                     description="a timeline folder from checkpoints of one run")
        ap.add_argument("out", help="the new timeline folder")
        ap.add_argument("checkpoints", nargs="+", help="checkpoint.pt files, one per step")
        ap.add_argument("--fp16", action="store_true", help="float16 weights (half the size)")
        a = ap.parse_args(argv[1:])
        try:
            steps = timeline_from_checkpoints(a.out, a.checkpoints, a.fp16)
        except ValueError as e:
            sys.exit(f"train timeline: {e}")
        print(f"train: timeline of {len(steps)} steps ({', '.join(map(str, steps))}) in {a.out}",
              file=sys.stderr)
        return
    if argv[:1] == ["compare"]:
        print(compare(argv[1:]))
        return
    args = parse_args(argv)
    args.command = "python -m export.train " + " ".join(argv)
    model, tok, summary = train(args)
    if args.export:
        export_model(model, tok, summary, args, args.export, command=args.command)
        print(f"train: exported to {args.export}", file=sys.stderr)


if __name__ == "__main__":
    main()
