"""Draws the effects matrix of `inspect ablate --effects` as a heatmap PNG.

    bin/inspect ablate models/demo --ids "$(cat models/demo/repeat_ids.txt)" --effects --out sweep.csv
    .venv/bin/python scripts/ablation_figure.py sweep.csv models/demo/ablation.png

Rows are the heads switched off, columns every head's induction-score change on the
probes (and its previous-token change beside it); the clean row is left out.
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def main(src, dst, title="what each head switched off does to the others"):
    with open(src, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["ablated"] != "none"]
    ind = [c for c in rows[0] if c.startswith("induction_delta.")]
    prev = [c for c in rows[0] if c.startswith("prev_token_delta.")]
    names = [r["ablated"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.32 * len(rows) + 2.2), constrained_layout=True)
    for ax, cols, what in ((axes[0], ind, "induction score change"), (axes[1], prev, "previous-token score change")):
        m = np.array([[float(r[c]) for c in cols] for r in rows])
        lim = max(np.nanmax(np.abs(m)), 1e-6)
        im = ax.imshow(m, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
        ax.set_xticks(range(len(cols)), [c.split(".", 1)[1] for c in cols], rotation=90, fontsize=8)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set_xlabel("head whose score changed")
        ax.set_ylabel("head switched off (zero ablation)")
        ax.set_title(what)
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(title)
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(*sys.argv[1:])
