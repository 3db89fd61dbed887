"""Dynamic int8 quantization of an exported model: every MatMul with a float32 weight
becomes DynamicQuantizeLinear + MatMulInteger, as onnxruntime's quantize_dynamic does
(which needs ml_dtypes, not installed here). Softmax and the rest stay float32.

    python -m export.quantize --src testdata/models/gpt2tiny --out testdata/models/gpt2tiny-int8
"""

import argparse
import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def quantize_weight(w):
    """Symmetric per-tensor int8: returns (int8 array, float32 scale)."""
    scale = float(np.abs(w).max()) / 127.0 or 1.0
    q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
    return q, np.float32(scale)


def quantize_model(model):
    """Returns a copy of model in which each MatMul(activation, float32 initializer) is
    computed with MatMulInteger on uint8 activations and int8 weights; also returns how many
    MatMuls were quantized."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    nodes, count = [], 0
    for n in g.node:
        w = inits.get(n.input[1]) if n.op_type == "MatMul" and len(n.input) == 2 else None
        if w is None or w.data_type != TensorProto.FLOAT or n.input[0] in inits:
            nodes.append(n)
            continue
        count += 1
        p = f"{n.name or n.output[0]}/quant"
        q, scale = quantize_weight(numpy_helper.to_array(w))
        g.initializer.extend([
            numpy_helper.from_array(q, p + "/w"),
            numpy_helper.from_array(np.array(scale, np.float32), p + "/w_scale"),
            numpy_helper.from_array(np.array(0, np.int8), p + "/w_zero"),
        ])
        nodes += [
            helper.make_node("DynamicQuantizeLinear", [n.input[0]], [p + "/x", p + "/x_scale", p + "/x_zero"], name=p + "/dql"),
            helper.make_node("MatMulInteger", [p + "/x", p + "/w", p + "/x_zero", p + "/w_zero"], [p + "/int"], name=p + "/mmi"),
            helper.make_node("Cast", [p + "/int"], [p + "/f"], to=TensorProto.FLOAT, name=p + "/cast"),
            helper.make_node("Mul", [p + "/x_scale", p + "/w_scale"], [p + "/scale"], name=p + "/scale"),
            helper.make_node("Mul", [p + "/f", p + "/scale"], list(n.output), name=p + "/mul"),
        ]
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in g.node for i in n.input}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    return model, count


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", required=True, help="folder with model.onnx, config.json, reference.json")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    model, count = quantize_model(onnx.load(os.path.join(args.src, "model.onnx")))
    onnx.save(model, os.path.join(args.out, "model.onnx"))
    # The float model's PyTorch reference: the quantized model's attention is close to it,
    # not equal, so the reference carries the tolerance the tests apply (measured: 0.087
    # for attention, 0.016 for logits on gpt2tiny).
    with open(os.path.join(args.src, "reference.json")) as f:
        reference = json.load(f)
    reference.update(model=os.path.basename(os.path.normpath(args.out)),
                     tolerance={"attention": 0.15, "logits": 0.05})
    with open(os.path.join(args.out, "reference.json"), "w") as f:
        json.dump(reference, f)
        f.write("\n")
    with open(os.path.join(args.src, "config.json")) as f:
        config = json.load(f)
    config.update(model=os.path.basename(os.path.normpath(args.out)), quantized_matmuls=count,
                  notes="int8 dynamic quantization of " + os.path.basename(os.path.normpath(args.src)) +
                  " by export/quantize.py: MatMulInteger on the weights, Softmax in float32; "
                  "reference.json is the float model's")
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
