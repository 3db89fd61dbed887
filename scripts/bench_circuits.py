"""The circuits benchmark's reference: every composition score of the GPT-2-small-sized model
(export/bench_model.py, seed 0) computed by numpy from its PyTorch parameters, timed, and
compared with `inspect circuits --composition`'s CSV.

    python scripts/bench_circuits.py GO.csv

Prints one JSON line: numpy's seconds (parameters already in memory), the pair count, and the
largest difference from Go's scores.
"""
import csv
import json
import math
import sys
import time

import numpy as np
import torch

sys.path.insert(0, ".")
from export import bench_model, circuits_ref as cr  # noqa: E402


def compositions(canon):
    """{(fl, fh, tl, th): (q, k, v)} for every pair of heads in different layers, computed
    as circuits_ref.comp_score does (traces of d_head-sized products), batched per pair of
    layers so that BLAS does the work."""
    layers = [cr.folded_layer(l) for l in canon["layers"]]
    out = {}
    for b, lb in enumerate(layers):
        right = {"q": (lb["W_Q"], lb["W_K"]), "k": (lb["W_K"], lb["W_Q"]),
                 "v": (lb["W_V"], np.transpose(lb["W_O"], (0, 2, 1)))}
        gram = {m: (np.einsum("hdk,hdl->hkl", X, X), np.einsum("hdk,hdl->hkl", Y, Y))
                for m, (X, Y) in right.items()}
        for a in range(b):
            la = layers[a]
            V, O = la["W_V"], la["W_O"]
            VtV = np.einsum("hdk,hdl->hkl", V, V)
            left = np.einsum("hkl,hlk->h", VtV, O @ np.transpose(O, (0, 2, 1)))
            scores = {}
            for m, (X, Y) in right.items():
                XtX, YtY = gram[m]
                OX = np.einsum("akd,bdl->abkl", O, X)
                num = np.einsum("akl,ablm,bmn,abkn->ab", VtV, OX, YtY, OX, optimize=True)
                r = np.einsum("bkl,blk->b", XtX, YtY)
                scores[m] = np.sqrt(np.maximum(num, 0)) / np.sqrt(np.outer(left, r))
            for i in range(V.shape[0]):
                for j in range(X.shape[0]):
                    out[(a, i, b, j)] = tuple(float(scores[m][i, j]) for m in "qkv")
    return out


def main():
    torch.set_num_threads(2)
    canon = cr.canonical(bench_model.build(), "gpt2-small")
    t0 = time.perf_counter()
    ref = compositions(canon)
    seconds = time.perf_counter() - t0
    worst = 0.0
    with open(sys.argv[1]) as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        key = (int(r["from_layer"]), int(r["from_head"]), int(r["to_layer"]), int(r["to_head"]))
        for got, want in zip((r["q_comp"], r["k_comp"], r["v_comp"]), ref[key]):
            worst = max(worst, abs(float(got) - want) / max(abs(want), 1e-3))
    if len(rows) != len(ref):
        worst = math.inf
    print(json.dumps({"numpy_s": round(seconds, 2), "pairs": len(ref), "go_rows": len(rows),
                      "max_rel_diff": worst}))


if __name__ == "__main__":
    main()
