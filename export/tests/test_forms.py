"""export/forms.py: the four model forms build, their graphs have the promised shape, and
onnxruntime agrees with the PyTorch references (which is what proves the references)."""
import copy
import json
import os
import pathlib

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from export import forms
from export.models import GPT2

ort = pytest.importorskip(
    "onnxruntime", reason="Python onnxruntime not installed (export/requirements.txt; make setup)")

REPO = pathlib.Path(__file__).resolve().parents[2]
COMMITTED = REPO / "testdata" / "models"
NAMES = [name for name, _ in forms.FORMS]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """All four forms, built once into a temporary folder."""
    out = tmp_path_factory.mktemp("forms")
    with open(os.devnull, "w") as devnull:
        forms.generate(str(out), log=devnull)
    return out


def load(folder):
    """(ModelProto, config.json, reference.json) of a form's folder."""
    folder = pathlib.Path(folder)
    return (onnx.load(str(folder / "model.onnx")),
            json.loads((folder / "config.json").read_text()),
            json.loads((folder / "reference.json").read_text()))


def feeds(run):
    """A run's inputs as numpy arrays (input_ids alone when the run lists none)."""
    if "inputs" not in run:
        return {"input_ids": np.array([run["ids"]], np.int64)}
    return {name: np.array(t["data"], dtype=t["dtype"]).reshape(t["shape"])
            for name, t in run["inputs"].items()}


def session(proto):
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def array(t):
    return np.float32(t["data"]).reshape(t["shape"])


def run_sites(ref, run):
    """The sites a run's attention entries belong to (merged: those of the run's branch)."""
    return [s for s in ref["sites"] if s.get("branch", run.get("branch")) == run.get("branch")]


def graph_nodes(proto):
    """{(branch or None, node name): node} over the graph and any If branches."""
    nodes = {}
    for n in proto.graph.node:
        nodes[(None, n.name)] = n
        for attr in n.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                nodes.update({(attr.name, m.name): m for m in attr.g.node})
    return nodes


@pytest.mark.parametrize("name", NAMES)
def test_every_form_has_files_sites_and_sharp_attention(built, name):
    proto, config, ref = load(built / name)
    onnx.checker.check_model(proto)
    assert (built / name / "model.onnx").stat().st_size < 300_000
    assert config["notes"] and config["model"] == ref["model"] == name
    for key in ["model", "n_layers", "n_heads", "inputs", "sites", "runs"]:
        assert key in ref, key
    assert ref["inputs"] == [i.name for i in proto.graph.input]
    nodes = graph_nodes(proto)
    for site in ref["sites"]:
        assert site["kind"] in ("self", "causal-self", "cross")
        node = nodes[(site.get("branch"), site["node"])]
        assert node.op_type in ("Softmax", "GroupQueryAttention")
    assert len(ref["runs"]) >= 2
    for run in ref["runs"]:
        T, H = len(run["ids"]), ref["n_heads"]
        if "decoder_ids" in run:
            T = len(run["decoder_ids"])
        assert run["logits"]["shape"] == [1, T, ref["vocab_size"]]
        assert set(feeds(run)) == set(ref["inputs"])
        assert len(run["attention"]) == len(run_sites(ref, run))
        for a in map(array, run["attention"]):
            assert a.shape[:2] == (1, H) and a.shape[2] in (len(run["ids"]), T)
            np.testing.assert_allclose(a.sum(-1), 1, atol=1e-5, equal_nan=False)
            assert a.max(-1).mean() > 0.3, "attention too close to uniform"


def test_encdec_has_one_softmax_per_site_and_matches_onnxruntime(built):
    proto, config, ref = load(built / "encdec")
    assert [(i.name, i.type.tensor_type.elem_type) for i in proto.graph.input] == [
        ("input_ids", TensorProto.INT64), ("decoder_input_ids", TensorProto.INT64)]
    assert [o.name for o in proto.graph.output] == ["logits"]
    softmaxes = [n.name for n in proto.graph.node if n.op_type == "Softmax"]
    assert softmaxes == [s["node"] for s in ref["sites"]]
    assert [s["kind"] for s in ref["sites"]] == ["self", "causal-self", "cross",
                                                 "causal-self", "cross"]
    assert {(len(r["ids"]), len(r["decoder_ids"])) for r in ref["runs"]} == {(7, 5), (4, 9)}
    sess = session(forms.with_softmax_outputs(proto, TensorProto.FLOAT))
    for run in ref["runs"]:
        S, T = len(run["ids"]), len(run["decoder_ids"])
        logits, *attns = sess.run(None, feeds(run))
        np.testing.assert_allclose(logits, array(run["logits"]), atol=1e-4, equal_nan=False)
        for site, a, saved in zip(ref["sites"], attns, run["attention"], strict=True):
            expected = {"self": (S, S), "causal-self": (T, T), "cross": (T, S)}[site["kind"]]
            assert a.shape == (1 * 2,) + expected, site  # heads folded into the batch
            np.testing.assert_allclose(a.reshape(1, 2, *expected), array(saved), atol=1e-5,
                                       err_msg=site["node"], equal_nan=False)
            if site["kind"] == "causal-self":
                assert np.triu(array(saved)[0], k=1).max() == 0


def with_qk_output(proto):
    """A copy whose GroupQueryAttention nodes set qk_output=2 and expose output_qk."""
    proto = copy.deepcopy(proto)
    for node in proto.graph.node:
        if node.op_type == "GroupQueryAttention":
            node.attribute.append(helper.make_attribute("qk_output", 2))
            node.output.append(f"{node.name}/output_qk")
            proto.graph.output.append(helper.make_tensor_value_info(
                node.output[3], TensorProto.FLOAT, None))
    return proto


def test_gqa_matches_pytorch_through_onnxruntime(built):
    proto, config, ref = load(built / "gqa")
    gqa = [n for n in proto.graph.node if n.op_type == "GroupQueryAttention"]
    assert [n.name for n in gqa] == [s["node"] for s in ref["sites"]]
    assert not any(n.op_type == "Softmax" for n in proto.graph.node)
    for n in gqa:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        assert n.domain == "com.microsoft" and attrs == {"num_heads": 4, "kv_num_heads": 2}
        assert list(n.input[3:5]) == ["", ""] and len(n.output) == 3
    assert [(i.name, [d.dim_param for d in i.type.tensor_type.shape.dim])
            for i in proto.graph.input] == [("input_ids", ["batch", "sequence_length"]),
                                            ("attention_mask", ["batch", "total_sequence_length"])]
    plain, exposed = session(proto), session(with_qk_output(proto))
    for run in ref["runs"]:
        (logits,) = plain.run(None, feeds(run))
        np.testing.assert_allclose(logits, array(run["logits"]), atol=1e-4, equal_nan=False)
        logits, *qk = exposed.run(None, feeds(run))
        T = len(run["ids"])
        for a, saved in zip(qk, run["attention"], strict=True):
            assert a.shape == (1, 4, T, T)
            np.testing.assert_allclose(a, array(saved), atol=1e-5, equal_nan=False)


def test_fp16_is_float16_throughout_and_close_to_reference(built):
    proto, config, ref = load(built / "fp16")
    floats = {i.data_type for i in proto.graph.initializer} - {TensorProto.INT64,
                                                               TensorProto.BOOL}
    assert floats == {TensorProto.FLOAT16}
    assert proto.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    inferred = onnx.shape_inference.infer_shapes(proto).graph
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.value_info}
    softmaxes = [n for n in proto.graph.node if n.op_type == "Softmax"]
    assert [n.name for n in softmaxes] == [s["node"] for s in ref["sites"]]
    for n in softmaxes:
        assert types[n.input[0]] == types[n.output[0]] == TensorProto.FLOAT16
    assert TensorProto.FLOAT not in types.values()

    sess = session(forms.with_softmax_outputs(proto, TensorProto.FLOAT16))
    diff = {"logits": 0.0, "attention": 0.0}
    for run in ref["runs"]:
        logits, *attns = sess.run(None, feeds(run))
        assert logits.dtype == np.float16 and all(a.dtype == np.float16 for a in attns)
        diff["logits"] = max(diff["logits"], np.abs(logits - array(run["logits"])).max())
        for a, saved in zip(attns, run["attention"], strict=True):
            diff["attention"] = max(diff["attention"], np.abs(a - array(saved)).max())
    assert ref["tolerance"] == {"attention": 5e-3, "logits": 2e-2}
    assert diff["logits"] <= 2e-2 and diff["attention"] <= 5e-3, diff
    for key in diff:
        assert config["max_abs_diff"][key] == pytest.approx(float(diff[key]), abs=1e-6)


def with_branch_attention(proto):
    """A copy of the merged model whose If node also outputs each branch's Softmax i as
    attention.i (a graph output): both branches must output the same number of values."""
    proto = copy.deepcopy(proto)
    if_node = proto.graph.node[0]
    for attr in if_node.attribute:
        softmaxes = forms.topological_nodes(attr.g, {"Softmax"})
        for sm in softmaxes:
            attr.g.output.append(helper.make_tensor_value_info(sm.output[0],
                                                               TensorProto.FLOAT, None))
    for i in range(len(softmaxes)):
        if_node.output.append(f"attention.{i}")
        proto.graph.output.append(helper.make_tensor_value_info(f"attention.{i}",
                                                                TensorProto.FLOAT, None))
    return proto


def test_merged_is_one_if_with_shared_weights_and_matches_pytorch(built):
    proto, config, ref = load(built / "merged")
    (if_node,) = proto.graph.node
    assert if_node.op_type == "If" and list(if_node.input) == ["use_cache_branch"]
    names = [i.name for i in proto.graph.input]
    assert names == ["input_ids", "attention_mask"] + forms.cache_names("past_key_values", 2) + [
        "use_cache_branch"]
    assert proto.graph.input[-1].type.tensor_type.elem_type == TensorProto.BOOL
    assert [o.name for o in proto.graph.output] == ["logits"] + forms.cache_names("present", 2)
    contents = [numpy_helper.to_array(i).tobytes() + bytes(i.dims) for i in proto.graph.initializer]
    assert len(contents) == len(set(contents)), "duplicate top-level initializers"
    for attr in if_node.attribute:
        assert all(forms.stays_in_branch(i) for i in attr.g.initializer), attr.name
        assert [o.name for o in attr.g.output] == [o.name for o in proto.graph.output]
    assert {r["branch"] for r in ref["runs"]} == {"then_branch", "else_branch"}

    sess = session(with_branch_attention(proto))
    for run in ref["runs"]:
        inputs = feeds(run)
        P, T = inputs["past_key_values.0.key"].shape[2], len(run["ids"])
        assert inputs["use_cache_branch"].tolist() == [run["branch"] == "then_branch"]
        logits, *rest = sess.run(None, inputs)
        presents, attns = rest[:4], rest[4:]
        np.testing.assert_allclose(logits, array(run["logits"]), atol=1e-4, equal_nan=False)
        assert [p.shape for p in presents] == [(1, 4, P + T, 8)] * 4
        for a, saved in zip(attns, run["attention"], strict=True):
            assert a.shape == (1, 4, T, P + T)
            np.testing.assert_allclose(a, array(saved), atol=1e-5, equal_nan=False)


def test_cached_gpt2_is_gpt2_and_its_cache_continues_the_prompt():
    cached = forms.merged_model(seed=0)
    plain = GPT2(cached.config).eval()
    plain.load_state_dict(cached.state_dict())
    ids = torch.randint(0, 64, (1, 9))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        logits, attns = plain(ids, attention_mask=mask, return_attn=True)
        c_logits, presents, c_attns = cached(ids, mask)
        _, past, _ = cached(ids[:, :5], mask[:, :5])
        tail, _, tail_attns = cached(ids[:, 5:], mask, past)
    torch.testing.assert_close(c_logits, logits, atol=0, rtol=0)
    for a, b, t in zip(attns, c_attns, tail_attns, strict=True):
        torch.testing.assert_close(b, a, atol=0, rtol=0)
        torch.testing.assert_close(t, a[:, :, 5:], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(tail, logits[:, 5:], atol=1e-5, rtol=1e-5)
    assert presents[0][0].shape == (1, 4, 9, 8)


@pytest.mark.parametrize("name", NAMES)
def test_committed_forms_match_a_fresh_build(built, name):
    folder = COMMITTED / name
    assert (folder / "reference.json").exists(), \
        f"{folder} is committed but missing: restore it or run `make fixtures`"
    _, old_config, old = load(folder)
    _, _, new = load(built / name)
    assert old["sites"] == new["sites"] and old["inputs"] == new["inputs"]
    for r_old, r_new in zip(old["runs"], new["runs"], strict=True):
        assert r_old["ids"] == r_new["ids"], f"{name}: run `make fixtures`"
        np.testing.assert_allclose(r_old["logits"]["data"], r_new["logits"]["data"], atol=1e-4,
                                   err_msg=f"{name}: run `make fixtures`", equal_nan=False)


def test_forms_are_deterministic(built, tmp_path):
    with open(os.devnull, "w") as devnull:
        forms.generate(str(tmp_path), log=devnull)
    for name in NAMES:
        for f in ["model.onnx", "config.json", "reference.json"]:
            assert (tmp_path / name / f).read_bytes() == (built / name / f).read_bytes(), (
                f"{name}/{f}")
