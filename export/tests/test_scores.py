"""Closed-form cases of export/scores.py: heads whose scores are known exactly."""
import math

import numpy as np
import pytest

from export import scores


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
