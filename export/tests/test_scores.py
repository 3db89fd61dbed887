"""Closed-form cases of export/scores.py: heads whose scores are known exactly."""
import csv
import io
import json
import math
import os

import numpy as np
import pytest

from export import scores
from export.tests import inspect_cli


def shifted(T, shift):
    """Each row i looks at i - shift (row i looks at 0 when i < shift): a causal head."""
    A = np.zeros((T, T))
    for i in range(T):
        A[i, max(i - shift, 0)] = 1.0
    return A


def uniform_causal(T):
    A = np.tril(np.ones((T, T)))
    return A / A.sum(axis=1, keepdims=True)


def induction_head(n, start=0):
    """On the probe, the second copy attends to the token after the earlier occurrence;
    every other row attends to position 0."""
    T = start + 2 * n
    A = np.zeros((T, T))
    A[:, 0] = 1.0
    for i in range(start + n, T):
        A[i, 0] = 0.0
        A[i, i - n + 1] = 1.0
    return A


def test_previous_token_head():
    T, n = 20, 10
    A = shifted(T, 1)
    assert scores.prev_token(A) == 1.0
    assert scores.induction(A, n) == 0.0
    assert scores.duplicate_token(A, n) == 0.0
    assert scores.self_score(A) == pytest.approx(1 / T)   # row 0 looks at itself
    assert scores.first_token(A) == pytest.approx(2 / T)  # rows 0 and 1
    assert scores.entropy(A) == 0.0


def test_self_and_first_token_heads():
    T = 16
    assert scores.self_score(np.eye(T)) == 1.0
    assert scores.prev_token(np.eye(T)) == 0.0
    A = shifted(T, T)  # every row at position 0
    assert scores.first_token(A) == 1.0
    assert scores.self_score(A) == pytest.approx(1 / T)


def test_induction_and_duplicate_heads():
    n = 8
    for start in (0, 1):
        A = induction_head(n, start)
        assert scores.induction(A, n, start) == 1.0
        assert scores.duplicate_token(A, n, start) == 0.0
        D = shifted(start + 2 * n, n)  # looks n back: the earlier copy of the same token
        assert scores.duplicate_token(D, n, start) == 1.0
        assert scores.induction(D, n, start) == 0.0


def test_uniform_entropy():
    T = 12
    want = np.mean([math.log(i + 1) for i in range(T)])
    assert scores.entropy(uniform_causal(T)) == pytest.approx(want, abs=1e-12)
    assert scores.prev_token(uniform_causal(T)) == pytest.approx(np.mean([1 / (i + 1) for i in range(1, T)]))


def test_repeated_tokens_and_losses():
    rng = np.random.default_rng(0)
    p = scores.repeated_tokens(rng, 5, 3, 7, bos=6)
    assert p.shape == (3, 11)
    assert (p[:, 0] == 6).all() and (p[:, 1:6] == p[:, 6:]).all()
    assert all(len(set(r[1:6])) == 5 and 6 not in r[1:] for r in p)
    logits = np.zeros((4, 10))  # uniform predictions: loss log 10 everywhere
    assert np.allclose(scores.token_losses(logits, [1, 2, 3, 4]), math.log(10))
    assert scores.icl_score([[3.0, 2.0, 1.0]], 0, 2) == -2.0


def run_inspect(*args):
    out = inspect_cli.run(*args)
    assert out.returncode == 0, out.stderr
    return list(csv.DictReader(io.StringIO(out.stdout)))


@pytest.mark.parametrize("folder", ["models/demo"])
def test_go_scores_trained_model_like_python(folder):
    """For a model trained by export/train.py, `inspect heads --ids PROMPT` (onnxruntime's
    attention, Go's formulas) gives the text scores that these formulas give on PyTorch's
    attention recorded in the model's reference.json, and `inspect tokens` its losses."""
    path = os.path.join(inspect_cli.REPO, folder)
    assert os.path.exists(os.path.join(path, "reference.json")), \
        f"{folder}/reference.json is committed but missing (export/train.py writes it)"
    ref = json.load(open(os.path.join(path, "reference.json")))
    run = ref["runs"][-1]
    ids = run["ids"]
    attn = [np.array(a["data"], dtype=np.float64).reshape(a["shape"]) for a in run["attention"]]
    want = scores.head_scores(attn, len(ids) // 2, 0, attn)
    model = os.path.join(folder, "model.onnx")
    got = run_inspect("heads", model, "--ids", ",".join(map(str, ids)), "--probes", "1", "--device", "cpu")
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert (int(g["layer"]), int(g["head"])) == (w["layer"], w["head"])
        for col in ("prev_token", "first_token", "self", "entropy"):
            assert float(g[col]) == pytest.approx(w[col], abs=1e-5), (g["layer"], g["head"], col)
    logits = np.array(run["logits"]["data"]).reshape(run["logits"]["shape"])[0]
    losses = scores.token_losses(logits, ids)
    rows = run_inspect("tokens", model, "--ids", ",".join(map(str, ids)), "--device", "cpu")
    # One row per token; the last has no next token, so no loss.
    assert len(rows) == len(ids) and rows[-1]["loss"] == "", rows[-1]
    for r, w in zip(rows[:-1], losses, strict=True):
        assert float(r["loss"]) == pytest.approx(w, abs=1e-5)
