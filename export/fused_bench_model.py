"""A GPT-2-small-sized model in the form onnxruntime's transformer optimizer writes:
each layer's attention is one com.microsoft.Attention node (packed QKV weights,
unidirectional), with random weights. For benchmarking what exposing such a model costs
(attnscope rewrites the node into standard operators); not a trained model.

    python -m export.fused_bench_model --out /tmp/fused-gpt2s.onnx
"""

import argparse

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def build(n_layers=12, d=768, heads=12, vocab=50257, positions=1024, seed=0):
    """Returns the ModelProto: input_ids and attention_mask (int32, as the optimizer's
    GPT-2 exports take them) → logits."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def weight(name, *shape, std=0.02):
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * std).astype(np.float32), name))
        return name

    def ones(name, n):
        inits.append(numpy_helper.from_array(np.ones(n, np.float32), name))
        return name

    def zeros(name, n):
        inits.append(numpy_helper.from_array(np.zeros(n, np.float32), name))
        return name

    def node(op, inputs, out, **attrs):
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def layer_norm(x, name):
        return node("LayerNormalization", [x, ones(name + ".g", d), zeros(name + ".b", d)], name, axis=-1, epsilon=1e-5)

    inits.append(numpy_helper.from_array(np.array([1], np.int64), "one"))
    inits.append(numpy_helper.from_array(np.array([0], np.int64), "zero"))
    ids = node("Cast", ["input_ids"], "ids64", to=TensorProto.INT64)
    # positions 0…T−1 from the ids' shape
    length = node("Gather", [node("Shape", [ids], "shape"), "one"], "len", axis=0)
    pos = node("Range", [node("Squeeze", ["zero"], "z0"), node("Squeeze", [length], "T"), node("Squeeze", ["one"], "s1")], "pos")
    x = node("Add", [node("Gather", [weight("wte", vocab, d), ids], "tok"), node("Gather", [weight("wpe", positions, d), pos], "posemb")], "x0")
    for i in range(n_layers):
        p = f"h.{i}"
        h = layer_norm(x, p + ".ln1")
        a = node("Attention", [h, weight(p + ".qkv", d, 3 * d), zeros(p + ".qkv_b", 3 * d), "attention_mask"], p + ".attn",
                 domain="com.microsoft", num_heads=heads, unidirectional=1)
        x = node("Add", [x, node("MatMul", [a, weight(p + ".proj", d, d)], p + ".proj_out")], p + ".res1")
        h = layer_norm(x, p + ".ln2")
        h = node("Gelu", [node("MatMul", [h, weight(p + ".fc", d, 4 * d)], p + ".fc_out")], p + ".gelu", domain="com.microsoft")
        x = node("Add", [x, node("MatMul", [h, weight(p + ".out", 4 * d, d)], p + ".mlp_out")], p + ".res2")
    x = layer_norm(x, "ln_f")
    node("MatMul", [x, weight("unembed", d, vocab)], "logits")
    graph = helper.make_graph(
        nodes, "fused_gpt2",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT32, ["batch", "seq"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT32, ["batch", "seq"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "seq", vocab])],
        inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
                             producer_name="attnscope.export.fused_bench_model")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--layers", type=int, default=12)
    args = ap.parse_args(argv)
    onnx.save(build(n_layers=args.layers), args.out)


if __name__ == "__main__":
    main()
