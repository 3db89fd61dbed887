"""Export a model from export.models to ONNX with the reference attention beside it.

export(model, folder, opset, input_names) writes
  folder/model.onnx       TorchScript-exporter ONNX, dynamic batch and sequence axes on every
                          input and on the `logits` output;
  folder/config.json      architecture, sizes, opset, torch version, input names;
  folder/reference.json   logits and per-layer attention probabilities computed by PyTorch
                          for two seeded prompts (the Go tests compare onnxruntime to these).
The ONNX graph's only output is `logits`; the attention probabilities are internal Softmax
outputs that the Go side exposes by rewriting the graph.
"""
import inspect
import json
import os
import warnings

import numpy as np
import onnx
import torch
import torch.nn as nn

SEQ_LENS = (7, 19)  # one reference run per length, batch 1


def model_info(model):
    """The sizes every architecture reports, under common names."""
    cfg = model.config
    return {
        "architecture": type(model).__name__,
        "n_layers": cfg.n_layers,
        "n_heads": cfg.n_heads,
        "d_model": cfg.d_model,
        "d_head": getattr(cfg, "d_head", cfg.d_model // cfg.n_heads),
        "vocab_size": cfg.vocab_size,
        "n_positions": getattr(cfg, "n_positions", None) or getattr(cfg, "n_ctx"),
    }


def implied_inputs(input_ids):
    """The inputs a run implies besides the ids: nothing masked, positions 0..T-1, one segment."""
    B, T = input_ids.shape
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones(B, T, dtype=torch.long),
        "position_ids": torch.arange(T).expand(B, T).contiguous(),
        "token_type_ids": torch.zeros(B, T, dtype=torch.long),
    }


class _Positional(nn.Module):
    """Calls model(**{name: arg}) so that the exporter sees exactly input_names, in order."""

    def __init__(self, model, input_names):
        super().__init__()
        self.model = model
        self.input_names = list(input_names)

    def forward(self, *args):
        return self.model(**dict(zip(self.input_names, args)))


def export_onnx(model, path, opset, input_names):
    """Writes model.onnx with the TorchScript exporter; returns the loaded, checked ModelProto."""
    model.eval()
    example = implied_inputs(torch.zeros(2, 5, dtype=torch.long))  # B, T unlike either run
    args = tuple(example[n] for n in input_names)
    axes = {n: {0: "batch", 1: "sequence"} for n in list(input_names) + ["logits"]}
    kwargs = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # torch >= 2.5 may default to the dynamo exporter
    with torch.no_grad(), warnings.catch_warnings():
        # Tracing warns about every size read in Python; the dynamic axes are tested instead.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            _Positional(model, input_names), args, path,
            input_names=list(input_names), output_names=["logits"], dynamic_axes=axes,
            opset_version=opset, do_constant_folding=True, **kwargs)
    proto = onnx.load(path)
    onnx.checker.check_model(proto)
    return proto


def count_ops(proto, op_type):
    return sum(1 for node in proto.graph.node if node.op_type == op_type)


def attention_chains(proto):
    """For each Softmax, the op chain from the scores MatMul to the probabilities x V MatMul,
    e.g. "MatMul Mul Where Softmax MatMul": the pattern the Go detector looks for. Walks back
    through elementwise ops along the operand that leads to a MatMul/Einsum; "?" if none does."""
    producer = {out: n for n in proto.graph.node for out in n.output}
    consumers = {}
    for n in proto.graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    elementwise = ("Mul", "Div", "Add", "Sub", "Where", "Cast")

    def back(node, depth):
        if node.op_type in ("MatMul", "Einsum"):
            return [node.op_type]
        if node.op_type not in elementwise or depth == 0:
            return None
        data = node.input[1:] if node.op_type == "Where" else node.input  # skip the condition
        for name in data:
            if name in producer:
                ops = back(producer[name], depth - 1)
                if ops:
                    return ops + [node.op_type]
        return None

    chains = []
    for sm in (n for n in proto.graph.node if n.op_type == "Softmax"):
        src = producer.get(sm.input[0])
        before = (src and back(src, 6)) or ["?"]
        after = [c.op_type for c in consumers.get(sm.output[0], [])]
        chains.append(" ".join(before + ["Softmax", "/".join(after)]))
    return chains


def reference_runs(model, input_names, seq_lens=SEQ_LENS, seed=0):
    """PyTorch's logits and attention for seeded prompts, in reference.json's `runs` format."""
    model.eval()
    rng = np.random.RandomState(seed)
    runs = []
    for T in seq_lens:
        ids = torch.from_numpy(rng.randint(0, model.config.vocab_size, size=(1, T))).long()
        inputs = implied_inputs(ids)
        with torch.no_grad():
            logits, attns = model(**{n: inputs[n] for n in input_names}, return_attn=True)
        runs.append({
            "ids": ids[0].tolist(),
            "logits": _tensor_json(logits),
            "attention": [_tensor_json(a) for a in attns],
        })
    return runs


def _tensor_json(t):
    a = t.detach().to(torch.float32).contiguous().numpy()
    return {"shape": list(a.shape), "data": a.reshape(-1).tolist()}  # exact float32 values


def export(model, folder, opset, input_names, name=None, seq_lens=SEQ_LENS, seed=0):
    """Writes model.onnx, config.json and reference.json into folder; returns config.json's dict
    plus `softmax_nodes`, the number of Softmax nodes in the exported graph."""
    os.makedirs(folder, exist_ok=True)
    name = name or os.path.basename(os.path.normpath(folder))
    info = model_info(model)
    proto = export_onnx(model, os.path.join(folder, "model.onnx"), opset, input_names)

    config = {"model": name, **info, "opset": opset, "torch": torch.__version__,
              "inputs": list(input_names), "outputs": ["logits"]}
    reference = {
        "model": name, "opset": opset, "torch": torch.__version__,
        "n_layers": info["n_layers"], "n_heads": info["n_heads"],
        "vocab_size": info["vocab_size"], "n_positions": info["n_positions"],
        "inputs": list(input_names),
        "runs": reference_runs(model, input_names, seq_lens, seed),
    }
    _write_json(os.path.join(folder, "config.json"), config, indent=2)
    _write_json(os.path.join(folder, "reference.json"), reference)
    return {**config, "softmax_nodes": count_ops(proto, "Softmax"),
            "attention_chains": attention_chains(proto)}


def _write_json(path, obj, indent=None):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=indent)
        f.write("\n")
    os.replace(tmp, path)
