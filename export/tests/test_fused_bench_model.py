import numpy as np
import pytest

from export.fused_bench_model import build

try:
    import onnxruntime as ort
except ImportError:
    ort = None


def test_fused_model_runs_with_attention_nodes():
    if ort is None:
        pytest.skip("onnxruntime is not installed; run `make setup`")
    model = build(n_layers=2, d=32, heads=4, vocab=50, positions=16)
    assert [n.op_type for n in model.graph.node].count("Attention") == 2
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ids = np.array([[1, 7, 3, 9]], np.int32)
    logits = sess.run(["logits"], {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
    assert logits.shape == (1, 4, 50) and np.isfinite(logits).all()
