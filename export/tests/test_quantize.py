import json
import os

import numpy as np
import onnx
import pytest

from export.quantize import quantize_model, quantize_weight

try:
    import onnxruntime as ort
except ImportError:
    ort = None

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLOAT = os.path.join(REPO, "testdata", "models", "gpt2tiny")


def test_quantize_weight_round_trip():
    w = np.random.RandomState(0).randn(16, 8).astype(np.float32)
    q, scale = quantize_weight(w)
    assert q.dtype == np.int8 and np.abs(q).max() == 127
    assert np.abs(q.astype(np.float32) * scale - w).max() <= scale / 2 + 1e-7


def test_quantized_model_runs_close_to_float():
    if ort is None:
        pytest.skip("onnxruntime is not installed; run `make setup`")
    model, count = quantize_model(onnx.load(os.path.join(FLOAT, "model.onnx")))
    ops = [n.op_type for n in model.graph.node]
    assert count == ops.count("MatMulInteger") == 9  # 4 per block (qkv, proj, fc, out) x 2 + unembed
    assert ops.count("Softmax") == 2
    onnx.checker.check_model(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    with open(os.path.join(FLOAT, "reference.json")) as f:
        run = json.load(f)["runs"][0]
    ids = np.array([run["ids"]], np.int64)
    T = ids.shape[1]
    logits = sess.run(["logits"], {"input_ids": ids, "attention_mask": np.ones((1, T), np.int64),
                                   "position_ids": np.arange(T)[None]})[0]
    assert np.abs(logits.ravel() - np.array(run["logits"]["data"])).max() < 0.05
