"""export/split_encdec.py: a tiny random BART as optimum's two files, and the Hub layout."""
import json
import os

import onnx
import pytest

pytest.importorskip("transformers", reason="transformers not installed (export/requirements.txt; make setup)")

from export import split_encdec  # noqa: E402


def test_split_export(tmp_path):
    ref = split_encdec.export_split(str(tmp_path))  # checks onnxruntime against transformers
    enc = onnx.load(str(tmp_path / "encoder_model.onnx"))
    dec = onnx.load(str(tmp_path / "decoder_model.onnx"))
    assert [i.name for i in enc.graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in enc.graph.output] == ["last_hidden_state"]
    assert [i.name for i in dec.graph.input] == ["input_ids", "encoder_attention_mask", "encoder_hidden_states"]
    assert sum(n.op_type == "Softmax" for n in enc.graph.node) == 1
    assert sum(n.op_type == "Softmax" for n in dec.graph.node) == 4
    shapes = [a["shape"] for a in ref["runs"][0]["attention"]]
    S, T = len(ref["runs"][0]["ids"]), len(ref["runs"][0]["decoder_ids"])
    assert shapes == [[1, 2, S, S], [1, 2, T, T], [1, 2, T, S], [1, 2, T, T], [1, 2, T, S]]
    size = sum(os.path.getsize(tmp_path / f) for f in os.listdir(tmp_path))
    assert size < 500_000
    assert json.load(open(tmp_path / "config.json"))["model_type"] == "bart"


def test_hub_layout(tmp_path):
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    split_encdec.export_hub(str(tmp_path), source=os.path.join(repo, "testdata", "models", "attn1l"))
    assert sorted(os.listdir(tmp_path)) == ["config.json", "onnx", "reference.json", "tokenizer.json", "tokenizer_config.json"]
    assert os.listdir(tmp_path / "onnx") == ["model.onnx"]
    cfg = json.load(open(tmp_path / "config.json"))
    assert cfg["vocab_size"] == 64 and cfg["max_position_embeddings"] == 32
