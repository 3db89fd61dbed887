"""Head scores, per-token loss and the in-context-learning score, in numpy, written from the
formulas of DESIGN.md (independently of the Go code in analysis/), so that the two can be
checked against each other.

A is one head's attention for one sequence, [T, T], rows = queries, each row sums to 1.

    previous-token   mean over i >= 1 of A[i, i-1]
    self             mean over all i of A[i, i]
    first-token      mean over all i of A[i, 0]
    entropy          mean over all i of -sum_j A[i, j] log A[i, j]   (nats; 0 log 0 = 0)
    induction        on the probe "n random tokens, then the same n again", starting at
                     position s (s = 1 after a BOS token, else 0): mean over the second copy's
                     positions i in [s+n, s+2n) of A[i, i-n+1]
    duplicate-token  on the same probe, mean over the second copy of A[i, i-n]

Scores over several sequences (probes, corpus windows) are the mean of the per-sequence
scores. Induction and duplicate-token come from the probe; the others from a prompt.

    loss[p]          cross-entropy of the logits at position p against token p+1 (nats)
    ICL score        mean loss at a late position minus the mean loss at an early one
                     (Olsson et al. 2022: 500 vs 50)

    python -m export.scores golden --out testdata/scores
    python -m export.scores from-reference models/demo --out testdata/scores/demo.json

The first rebuilds the committed test models (export/fixtures.py, same seeds), checks them against
their reference.json, runs seeded probes and a prompt through PyTorch with return_attn=True,
and writes <model>.json with the ids used and the scores, for the Go tests to compare with.
The second scores the PyTorch attention that a trained model's export recorded in its
reference.json (see from_reference).
"""
import argparse
import json
import os
import sys

import numpy as np

SCORES = ("induction", "prev_token", "duplicate_token", "first_token", "self", "entropy")


# ---------------------------------------------------------------------------------------
# Scores of one head on one sequence


def prev_token(A):
    A = np.asarray(A, dtype=np.float64)
    T = A.shape[0]
    if T < 2:
        return 0.0
    return float(np.mean([A[i, i - 1] for i in range(1, T)]))


def self_score(A):
    A = np.asarray(A, dtype=np.float64)
    return float(np.mean(np.diagonal(A)))


def first_token(A):
    A = np.asarray(A, dtype=np.float64)
    return float(np.mean(A[:, 0]))


def entropy(A):
    A = np.asarray(A, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(A > 0, -A * np.log(np.where(A > 0, A, 1.0)), 0.0)
    return float(np.mean(terms.sum(axis=1)))


def induction(A, n, start=0):
    A = np.asarray(A, dtype=np.float64)
    return float(np.mean([A[i, i - n + 1] for i in range(start + n, start + 2 * n)]))


def duplicate_token(A, n, start=0):
    A = np.asarray(A, dtype=np.float64)
    return float(np.mean([A[i, i - n] for i in range(start + n, start + 2 * n)]))


# ---------------------------------------------------------------------------------------
# Probes and whole-model scores


def repeated_tokens(rng, n, k, vocab, bos=None, avoid=()):
    """k probes of n random ids (distinct within a copy when the vocabulary allows), repeated
    twice, with bos in front when given: [k, (bos is not None) + 2n] int64."""
    banned = set(avoid) | ({bos} if bos is not None else set())
    candidates = np.array([i for i in range(vocab) if i not in banned], dtype=np.int64)
    rows = []
    for _ in range(k):
        half = rng.choice(candidates, size=n, replace=n > len(candidates))
        row = ([bos] if bos is not None else []) + list(half) + list(half)
        rows.append(row)
    return np.array(rows, dtype=np.int64)


def head_scores(probe_attns, n, start, text_attns):
    """probe_attns and text_attns: per layer, [B, H, T, T] arrays (B probes / B texts).
    Returns one dict per (layer, head), layers then heads in order."""
    out = []
    for layer, (pa, ta) in enumerate(zip(probe_attns, text_attns)):
        pa, ta = np.asarray(pa), np.asarray(ta)
        for h in range(pa.shape[1]):
            out.append({
                "layer": layer, "head": h,
                "induction": float(np.mean([induction(pa[b, h], n, start) for b in range(pa.shape[0])])),
                "prev_token": float(np.mean([prev_token(ta[b, h]) for b in range(ta.shape[0])])),
                "duplicate_token": float(np.mean([duplicate_token(pa[b, h], n, start) for b in range(pa.shape[0])])),
                "first_token": float(np.mean([first_token(ta[b, h]) for b in range(ta.shape[0])])),
                "self": float(np.mean([self_score(ta[b, h]) for b in range(ta.shape[0])])),
                "entropy": float(np.mean([entropy(ta[b, h]) for b in range(ta.shape[0])])),
            })
    return out


def token_losses(logits, ids):
    """logits [T, V], ids [T] -> [T-1]: loss[p] = -log softmax(logits[p])[ids[p+1]]."""
    logits = np.asarray(logits, dtype=np.float64)
    m = logits.max(axis=1, keepdims=True)
    logz = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
    ids = np.asarray(ids)
    return logz[:-1] - logits[np.arange(len(ids) - 1), ids[1:]]


def icl_score(losses, early, late):
    """losses: [B, T-1] per-sequence losses; mean loss at late minus mean loss at early."""
    losses = np.asarray(losses, dtype=np.float64)
    return float(losses[:, late].mean() - losses[:, early].mean())


# ---------------------------------------------------------------------------------------
# Golden files for the committed test models


def _golden_cases():
    """(fixture name, probes, bos or None, prompt length); probe length follows the positions."""
    return {
        "attn1l": (4, None, 24),
        "attn2l": (4, None, 24),
        "gpt2tiny": (4, 127, 40),  # exercises a BOS token in front of the probe
        "gpt2tiny-op14": (4, None, 40),
        "bert": (3, None, 30),
    }


def _dumps(doc):
    """JSON with one line per top-level field, probe row and head."""
    lines = ["{"]
    items = list(doc.items())
    for i, (k, v) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        if k == "probe":
            rows = ",\n  ".join(json.dumps(r) for r in v["ids"])
            lines.append(f' "probe": {{"n": {v["n"]}, "bos": {json.dumps(v["bos"])}, "ids": [\n  {rows}]}}{comma}')
        elif k == "heads":
            rows = ",\n  ".join(json.dumps(h) for h in v)
            lines.append(f' "heads": [\n  {rows}]{comma}')
        else:
            lines.append(f" {json.dumps(k)}: {json.dumps(v)}{comma}")
    return "\n".join(lines + ["}"])


def golden(out, models_dir="testdata/models", log=sys.stderr):
    import torch
    from export.fixtures import fixtures
    torch.set_num_threads(1)
    os.makedirs(out, exist_ok=True)
    cases = _golden_cases()
    for name, make, _opset, _inputs in fixtures():
        model = make().eval()
        if name not in cases:
            continue
        k, bos, prompt_len = cases[name]
        ref = json.load(open(os.path.join(models_dir, name, "reference.json")))
        with torch.no_grad():
            for run in ref["runs"]:  # the rebuilt model is the committed one
                logits, attns = model(torch.tensor([run["ids"]]), return_attn=True)
                want = np.array(run["attention"][0]["data"]).reshape(run["attention"][0]["shape"])
                assert np.abs(attns[0].numpy() - want).max() < 1e-6, f"{name}: rebuilt model differs"
        vocab, positions = ref["vocab_size"], ref["n_positions"]
        start = 1 if bos is not None else 0
        n = min(50, (positions - start) // 2)
        rng = np.random.default_rng(sum(map(ord, name)))
        probe = repeated_tokens(rng, n, k, vocab, bos=bos)
        prompt = rng.integers(0, vocab, size=prompt_len, dtype=np.int64)
        with torch.no_grad():
            _, pattn = model(torch.tensor(probe), return_attn=True)
            plogits, tattn = model(torch.tensor(prompt[None, :]), return_attn=True)
        heads = head_scores([a.double().numpy() for a in pattn], n, start,
                            [a.double().numpy() for a in tattn])
        losses = token_losses(plogits[0].numpy(), prompt)
        doc = {
            "model": name,
            "generator": "python -m export.scores golden --out testdata/scores",
            "probe": {"n": n, "bos": bos, "ids": probe.tolist()},
            "prompt": prompt.tolist(),
            "losses": [float(x) for x in losses],
            "heads": heads,
        }
        path = os.path.join(out, f"{name}.json")
        with open(path, "w") as f:
            f.write(_dumps(doc) + "\n")
        print(f"scores: {path}: {len(heads)} heads, probe {k}x{probe.shape[1]}, prompt {prompt_len}", file=log)


def from_reference(model_dir, out, log=sys.stderr):
    """Golden scores for a model exported with its reference.json (a trained model, say),
    computed from the PyTorch attention recorded there: the last run (a trained model's
    default prompt, a text said twice) is both the text and, with n = T // 2, the probe."""
    ref = json.load(open(os.path.join(model_dir, "reference.json")))
    run = ref["runs"][-1]
    ids = run["ids"]
    attn = [np.array(a["data"], dtype=np.float64).reshape(a["shape"]) for a in run["attention"]]
    n = len(ids) // 2
    logits = np.array(run["logits"]["data"], dtype=np.float64).reshape(run["logits"]["shape"])[0]
    doc = {
        "model": os.path.basename(os.path.normpath(model_dir)),
        "model_path": os.path.join(model_dir, "model.onnx"),
        "generator": f"python -m export.scores from-reference {model_dir} --out {out}",
        "probe": {"n": n, "bos": None, "ids": [ids]},
        "prompt": ids,
        "losses": [float(x) for x in token_losses(logits, ids)],
        "heads": head_scores(attn, n, 0, attn),
    }
    with open(out, "w") as f:
        f.write(_dumps(doc) + "\n")
    print(f"scores: {out}: {len(doc['heads'])} heads from {model_dir}/reference.json "
          f"({len(ids)} tokens, n = {n})", file=log)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("golden", help="write reference scores for the committed test models")
    g.add_argument("--out", default="testdata/scores")
    g.add_argument("--models", default="testdata/models")
    r = sub.add_parser("from-reference", help="scores from a model folder's reference.json")
    r.add_argument("model_dir")
    r.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.cmd == "golden":
        golden(args.out, args.models)
    else:
        from_reference(args.model_dir, args.out)


if __name__ == "__main__":
    main()
