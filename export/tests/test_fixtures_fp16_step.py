"""export/fixtures_fp16_step.py: the float16 single-step decoder is what it claims (fixed
length 1, float16 state, one more position in the present), the committed fixture is what the
generator writes, and onnxruntime fed token by token agrees with the whole-prompt reference."""
import json
import pathlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from export import fixtures_fp16_step as step
from export.forms import FP16_TOLERANCE

pytest.importorskip("onnxruntime", reason="Python onnxruntime not installed")

REPO = pathlib.Path(__file__).resolve().parents[2]
COMMITTED = REPO / "testdata" / "models" / "fp16step"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("fp16step")
    step.build_fp16_step(str(out / "fp16step"))
    return out / "fp16step"


def dims(vi):
    return [d.dim_value or d.dim_param for d in vi.type.tensor_type.shape.dim]


def test_graph_is_a_float16_single_step(built):
    proto = onnx.load(str(built / "model.onnx"))
    inputs = {i.name: i for i in proto.graph.input}
    outputs = {o.name: o for o in proto.graph.output}
    assert dims(inputs["input_ids"]) == ["batch", 1]
    past = [n for n in inputs if n.startswith("past_key_values")]
    assert len(past) == 4
    for name in past:
        present = outputs[name.replace("past_key_values", "present")]
        assert inputs[name].type.tensor_type.elem_type == TensorProto.FLOAT16
        assert present.type.tensor_type.elem_type == TensorProto.FLOAT16
        assert dims(inputs[name]) == ["batch", 4, "past_sequence", 8]
        assert dims(present) == ["batch", 4, "past_sequence + 1", 8]


def test_committed_fixture_is_the_generators(built):
    new = json.loads((built / "reference.json").read_text())
    old = json.loads((COMMITTED / "reference.json").read_text())
    assert [r["ids"] for r in new["runs"]] == [r["ids"] for r in old["runs"]]
    for a, b in zip(new["runs"], old["runs"], strict=True):
        np.testing.assert_allclose(a["logits"]["data"], b["logits"]["data"], atol=1e-5,
                                   equal_nan=False)


def test_onnxruntime_token_by_token_matches_reference(built):
    config = json.loads((built / "config.json").read_text())
    diff = config["max_abs_diff"]
    assert 0 < diff["attention"] <= FP16_TOLERANCE["attention"]
    assert 0 < diff["logits"] <= FP16_TOLERANCE["logits"]
