"""A markdown table of training runs, finished or stopped, from their run folders:

    python -m export.runs_table RUN_DIR [RUN_DIR ...] [--names a,b,...]

Each RUN_DIR is an `export.train --out` folder. The row's settings come from its
checkpoint's arguments (checkpoint.pt, written every --ckpt-every steps), its numbers from
metrics.csv (every evaluation, so a run stopped early still has a row): tokens and wall
time at the last evaluation, the best layer-1 induction and best layer-0 previous-token
scores at any evaluation (with the step where the induction peak was), and the held-out
loss and ICL score of the final evaluation (summary.json, on up to 20000 windows) of a
finished run, else of the last periodic one (--eval-windows, 64 by default: noisy). The scores are the trainer's own
(export/scores.py: induction on 8 probes of 50 random tokens repeated; previous-token on
8 held-out windows).
"""
import argparse
import csv
import json
import math
import os
import re
import sys

import torch

from export import corpus


def read_run(run_dir):
    """The run's settings (a dict) and its metrics rows (dicts of floats), ascending."""
    path = os.path.join(run_dir, "checkpoint.pt")
    if not os.path.exists(path):
        raise ValueError(f"{run_dir} has no checkpoint.pt yet (it is written every --ckpt-every steps)")
    ck = torch.load(path, map_location="cpu")
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        rows = [{k: float(v) for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(f)]
    if not rows:
        raise ValueError(f"{run_dir}/metrics.csv has no evaluations")
    return ck["args"], rows


def best(rows, prefix):
    """(value, step, head) of the largest value in the columns PREFIX + "H<n>" (prefix
    ind_L1 or prev_L0, say); NaN cells (a diverged evaluation) are left out."""
    out = (float("nan"), 0, "-")
    pattern = re.compile(re.escape(prefix) + r"(H\d+)")
    for r in rows:
        for k, v in r.items():
            m = pattern.fullmatch(k)
            if m and not math.isnan(v) and not (v <= out[0]):
                out = (v, int(r["step"]), m.group(1))
    return out


def data_name(args):
    """The folders holding the run's text files: tinyshakespeare+wikitext-2, say."""
    try:
        files = corpus.list_files(args["data"])
    except (OSError, ValueError):
        files = args["data"]
    return "+".join(sorted({os.path.basename(os.path.dirname(os.path.abspath(p))) for p in files}))


def row(name, run_dir):
    args, rows = read_run(run_dir)
    last = rows[-1]
    layers = args["layers"]
    ind = best(rows, "ind_L1") if layers > 1 else best(rows, "ind_L0")
    loss, icl, windows = last["val_loss"], last["icl"], args.get("eval_windows", 64)
    summary = os.path.join(run_dir, "summary.json")
    if os.path.exists(summary):  # the final evaluation, on many more windows
        with open(summary) as f:
            s = json.load(f)
        if s.get("steps") == int(last["step"]):
            loss, icl, windows = s["final_val_loss"], s["icl_score"], s["eval_windows"]
    prev = best(rows, "prev_L0")
    planned = args["steps"] * args["batch"] * args["n_ctx"]
    status = "finished" if int(last["step"]) >= args["steps"] else \
        f"stopped at {int(last['step'])} of {args['steps']} steps"
    return (f"| {name} | {data_name(args)} | {layers} × {args['heads']} (d_head {args['d_head']}) | "
            f"{args['vocab_size']} | {args['n_ctx']} | {args['batch']} | {args['lr']:g} "
            f"(→ {args['lr'] * args['min_lr_frac']:g}) | {last['tokens'] / 1e6:.1f} M of "
            f"{planned / 1e6:.1f} M ({status}) | {last['elapsed_s'] / 60:.1f} min | "
            f"{ind[0]:.3f} (L{1 if layers > 1 else 0}{ind[2]}, step {ind[1]}) | "
            f"{prev[0]:.3f} (L0{prev[2]}) | {loss:.3f} | {icl:+.3f} | {windows} |")


HEADER = ("| run | data | layers × heads | vocab | context | batch | lr (cosine to) | tokens | "
          "wall time | best induction (head, step) | best prev-token | held-out loss | ICL | "
          "held-out windows |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--names", default=None, help="comma-separated row names (default: folder names)")
    a = ap.parse_args(argv)
    names = a.names.split(",") if a.names else [os.path.basename(os.path.normpath(r)) for r in a.runs]
    if len(names) != len(a.runs):
        sys.exit(f"runs_table: {len(a.runs)} runs but {len(names)} names")
    print(HEADER)
    for n, r in zip(names, a.runs):
        try:
            print(row(n, r))
        except (OSError, ValueError) as e:
            print(f"runs_table: {n}: {e}", file=sys.stderr)


if __name__ == "__main__":
    main()
