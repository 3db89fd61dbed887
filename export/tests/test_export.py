import json
import os
import pathlib

import numpy as np
import onnx
import pytest
import torch

from export.fixtures import BERT_INPUTS, GPT2_INPUTS, generate
from export.onnx_export import export
from export.tests.test_models import make

try:  # optional: lets these tests run the exported graphs as the Go side does
    import onnxruntime as ort
except ImportError:
    ort = None

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMMITTED = os.path.join(REPO, "testdata", "models")
CASES = [("attnonly", 14, ["input_ids"]), ("attnonly-mlp-ln", 17, ["input_ids"]),
         ("gpt2", 17, GPT2_INPUTS), ("gpt2", 14, ["input_ids"]), ("bert", 14, BERT_INPUTS)]


@pytest.mark.parametrize("kind,opset,inputs", CASES)
def test_export_round_trip(tmp_path, kind, opset, inputs):
    m = make(kind)
    info = export(m, str(tmp_path), opset, inputs, name="t", seq_lens=(3, 9))
    proto = onnx.load(str(tmp_path / "model.onnx"))
    onnx.checker.check_model(proto)
    assert info["softmax_nodes"] == m.config.n_layers
    # The Go detector's rule: a last-axis Softmax fed from an activation MatMul through
    # elementwise ops (scale, mask), feeding the probabilities x V MatMul.
    expected = {"attnonly": "MatMul Mul Where Softmax MatMul",
                "attnonly-mlp-ln": "MatMul Mul Where Softmax MatMul",
                "gpt2": "MatMul Mul Where Add Softmax MatMul" if "attention_mask" in inputs
                        else "MatMul Mul Where Softmax MatMul",
                "bert": "MatMul Mul Add Softmax MatMul"}[kind]
    assert info["attention_chains"] == [expected] * m.config.n_layers
    for node in proto.graph.node:
        if node.op_type == "Softmax":
            assert [a.i for a in node.attribute if a.name == "axis"] == [-1]
    assert [op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")] == [opset]
    assert [i.name for i in proto.graph.input] == inputs
    assert [o.name for o in proto.graph.output] == ["logits"]
    for vi in list(proto.graph.input) + list(proto.graph.output):
        dims = vi.type.tensor_type.shape.dim
        assert [d.dim_param for d in dims[:2]] == ["batch", "sequence"], vi.name

    config = json.loads((tmp_path / "config.json").read_text())
    assert config["inputs"] == inputs and config["opset"] == opset
    ref = json.loads((tmp_path / "reference.json").read_text())
    assert list(ref) == ["model", "opset", "torch", "n_layers", "n_heads", "vocab_size",
                         "n_positions", "inputs", "runs"]
    assert [len(r["ids"]) for r in ref["runs"]] == [3, 9]
    H, L = m.config.n_heads, m.config.n_layers
    for run in ref["runs"]:
        T = len(run["ids"])
        assert run["logits"]["shape"] == [1, T, m.config.vocab_size]
        assert len(run["logits"]["data"]) == T * m.config.vocab_size
        assert [a["shape"] for a in run["attention"]] == [[1, H, T, T]] * L
        # The saved values are exactly what PyTorch computes for the implied inputs.
        with torch.no_grad():
            logits, attns = m(torch.tensor([run["ids"]]), return_attn=True)
        assert np.array_equal(np.float32(run["logits"]["data"]), logits.numpy().ravel())
        for a, saved in zip(attns, run["attention"], strict=True):
            assert np.array_equal(np.float32(saved["data"]), a.numpy().ravel())

    if ort is None:  # a skip after the PyTorch checks; a failure under CI
        pytest.skip("Python onnxruntime not installed (export/requirements.txt; make setup): "
                    "the export was not run through onnxruntime")
    check_with_onnxruntime(ort, tmp_path)


@pytest.mark.parametrize("name", ["attn1l", "attn2l", "gpt2tiny", "gpt2tiny-op14", "bert"])
def test_committed_fixtures_run_in_onnxruntime(name):
    if ort is None:
        pytest.skip("Python onnxruntime not installed (export/requirements.txt; make setup)")
    folder = pathlib.Path(COMMITTED, name)
    assert folder.exists(), f"{folder} is committed but missing: restore it or run `make fixtures`"
    check_with_onnxruntime(ort, folder)


def check_with_onnxruntime(ort, folder):
    """Runs model.onnx with every Softmax exposed as an output, as the Go side does."""
    proto = onnx.load(str(folder / "model.onnx"))
    for node in proto.graph.node:
        if node.op_type == "Softmax":
            proto.graph.output.append(onnx.helper.make_tensor_value_info(
                node.output[0], onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = json.loads((folder / "reference.json").read_text())
    for run in ref["runs"]:
        ids = np.array([run["ids"]], dtype=np.int64)
        T = ids.shape[1]
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids),
                 "position_ids": np.arange(T, dtype=np.int64)[None],
                 "token_type_ids": np.zeros_like(ids)}
        logits, *attns = sess.run(None, {n: feeds[n] for n in ref["inputs"]})
        np.testing.assert_allclose(logits.ravel(), run["logits"]["data"], atol=1e-5,
                                   equal_nan=False)
        for a, saved in zip(attns, run["attention"], strict=True):
            np.testing.assert_allclose(a.ravel(), saved["data"], atol=1e-5, equal_nan=False)


def test_fixtures_are_deterministic_and_match_committed(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    generate(str(a), log=open(os.devnull, "w"))
    generate(str(b), log=open(os.devnull, "w"))
    names = sorted(os.listdir(a))
    assert names == ["attn1l", "attn2l", "bert", "gpt2tiny", "gpt2tiny-op14"]
    for name in names:
        for f in ["model.onnx", "config.json", "reference.json"]:
            assert (a / name / f).read_bytes() == (b / name / f).read_bytes(), f"{name}/{f}"
        size = (a / name / "model.onnx").stat().st_size
        assert size < 600_000, f"{name}/model.onnx is {size} bytes"
        committed = os.path.join(COMMITTED, name, "reference.json")
        assert os.path.exists(committed), f"{committed} is committed but missing"
        with open(committed) as f:
            old = json.load(f)
        new = json.loads((a / name / "reference.json").read_text())
        assert old["inputs"] == new["inputs"] and old["opset"] == new["opset"]
        for r_old, r_new in zip(old["runs"], new["runs"], strict=True):
            assert r_old["ids"] == r_new["ids"], f"{name}: run `make fixtures`"
            np.testing.assert_allclose(r_old["logits"]["data"], r_new["logits"]["data"],
                                       atol=1e-4, err_msg=f"{name}: run `make fixtures`",
                                       equal_nan=False)


def test_gpt2_op14_shares_weights_with_gpt2tiny(tmp_path):
    ref = {n: json.loads(open(os.path.join(COMMITTED, n, "reference.json")).read())
           for n in ["gpt2tiny", "gpt2tiny-op14"]}
    assert ref["gpt2tiny"]["runs"] == ref["gpt2tiny-op14"]["runs"]
