"""Writes testdata/models/fp16step: a float16 single-step decoder, deterministically.

    python -m export.fixtures_fp16_step --out testdata/models   (from the repository root)

The model is export.forms.CachedGPT2 (GPT-2 with Hugging Face's key/value cache) with weights
rounded to float16, exported (TorchScript, opset 17) as one decoding step: input_ids of fixed
length 1 ([batch, 1]), attention_mask over past and new token, past_key_values.N.key/value
[batch, heads, past_sequence, head size]; outputs logits [batch, 1, vocab] and
present.N.key/value with one more position. export.forms.to_float16 then makes every float
tensor, input and output float16, the past and present state included.

reference.json holds what PyTorch float32 gives on the rounded weights for a WHOLE prompt
(logits [1, T, vocab], attention [1, H, T, T]) at two lengths: a tool that feeds the step
model token by token must assemble the same maps and logits within float16 error
(reference.json's "tolerance"). config.json's max_abs_diff is what onnxruntime's Python API,
fed token by token the same way, gives against that reference.
"""
import argparse
import inspect
import os
import sys
import tempfile
import warnings

import numpy as np
import onnx
import torch

from export.fixtures import sharpen
from export.forms import (FP16_TOLERANCE, CachedGPT2, _FlatCache, cache_names,
                          reference_header, to_float16, topological_nodes, write_form)
from export.models import GPT2Config
from export.onnx_export import SEQ_LENS, _tensor_json, model_info

# Opset 17 exports LayerNorm as LayerNormalization: onnxruntime 1.24's CPU optimiser fails on
# the float16 form of the decomposed LayerNorm that opset 14 gives (SimplifiedLayerNormFusion
# looks for a Cast it inserted itself), as export.forms' fp16 model found too.
STEP_OPSET = 17


def step_model(seed):
    """A CachedGPT2 (2 layers, 4 heads of 8, vocab 64, 32 positions) whose weights are exactly
    float16 values."""
    torch.manual_seed(seed)
    cfg = GPT2Config(n_layers=2, n_heads=4, d_model=32, vocab_size=64, n_positions=32)
    return sharpen(CachedGPT2(cfg), qk_std=0.3).half().float().eval()


def export_step(model):
    """TorchScript export of one decoding step: input_ids [batch, 1] (fixed length 1)."""
    cfg = model.config
    past, present = (cache_names("past_key_values", cfg.n_layers),
                     cache_names("present", cfg.n_layers))
    B, P, D = 2, 3, cfg.d_model // cfg.n_heads
    axes = {"input_ids": {0: "batch"}, "attention_mask": {0: "batch", 1: "past_sequence + 1"},
            "logits": {0: "batch"},
            **{n: {0: "batch", 2: "past_sequence"} for n in past},
            **{n: {0: "batch", 2: "past_sequence + 1"} for n in present}}
    args = (torch.zeros(B, 1, dtype=torch.long), torch.ones(B, P + 1, dtype=torch.long),
            *[torch.zeros(B, cfg.n_heads, P, D) for _ in past])
    kwargs = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # torch >= 2.5 may default to the dynamo exporter
    with torch.no_grad(), warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
        warnings.simplefilter("ignore")  # tracer warnings about sizes read in Python
        path = os.path.join(tmp, "model.onnx")
        torch.onnx.export(_FlatCache(model), args, path,
                          input_names=["input_ids", "attention_mask"] + past,
                          output_names=["logits"] + present, dynamic_axes=axes,
                          opset_version=STEP_OPSET, do_constant_folding=True, **kwargs)
        proto = onnx.load(path)
    onnx.checker.check_model(proto)
    return proto


def whole_prompt_runs(model, seq_lens=SEQ_LENS, seed=0):
    """PyTorch float32 on whole prompts (no cache): reference.json's runs."""
    rng = np.random.RandomState(seed)
    runs = []
    for T in seq_lens:
        ids = torch.from_numpy(rng.randint(0, model.config.vocab_size, size=(1, T))).long()
        with torch.no_grad():
            logits, _, attns = model(ids, torch.ones_like(ids))
        runs.append({"ids": ids[0].tolist(), "logits": _tensor_json(logits),
                     "attention": [_tensor_json(a) for a in attns]})
    return runs


def stepwise_differences(proto, runs, n_heads, d_head):
    """Max |onnxruntime - reference| when the float16 step model is fed each run's ids one
    token at a time (present -> past), rows assembled into whole-prompt maps."""
    import onnxruntime as ort
    from onnx import TensorProto, helper
    exposed = type(proto)()
    exposed.CopyFrom(proto)
    for node in topological_nodes(exposed.graph, {"Softmax"}):
        exposed.graph.output.append(helper.make_tensor_value_info(node.output[0],
                                                                  TensorProto.FLOAT16, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(exposed.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    past_names = [i.name for i in proto.graph.input if i.name.startswith("past_key_values")]
    logits_diff = attention_diff = 0.0
    for run in runs:
        ids = run["ids"]
        T = len(ids)
        past = {n: np.zeros((1, n_heads, 0, d_head), np.float16) for n in past_names}
        logits = np.zeros((T, len(run["logits"]["data"]) // T), np.float32)
        attn = [np.zeros((n_heads, T, T), np.float32) for _ in run["attention"]]
        for t, i in enumerate(ids):
            feed = {"input_ids": np.array([[i]], np.int64),
                    "attention_mask": np.ones((1, t + 1), np.int64), **past}
            out = dict(zip(names, sess.run(None, feed)))
            logits[t] = out["logits"].astype(np.float32).reshape(-1)
            softmaxes = [out[n] for n in names[1 + len(past_names):]]
            for l, a in enumerate(softmaxes):
                attn[l][:, t, :t + 1] = a.astype(np.float32).reshape(n_heads, t + 1)
            past = {n: out[n.replace("past_key_values", "present")] for n in past_names}
        logits_diff = max(logits_diff, float(np.abs(logits.ravel() - run["logits"]["data"]).max()))
        for a, ref in zip(attn, run["attention"]):
            attention_diff = max(attention_diff, float(np.abs(a.ravel() - ref["data"]).max()))
    return {"logits": logits_diff, "attention": attention_diff,
            "onnxruntime": ort.__version__, "provider": "CPUExecutionProvider"}


def build_fp16_step(folder, name="fp16step"):
    model = step_model(seed=15)
    cfg = model.config
    proto = to_float16(export_step(model))
    runs = whole_prompt_runs(model)
    inputs = [i.name for i in proto.graph.input]
    config = {"model": name, **model_info(model), "opset": STEP_OPSET, "torch": torch.__version__,
              "dtype": "float16", "inputs": inputs,
              "outputs": [o.name for o in proto.graph.output],
              "max_abs_diff": stepwise_differences(proto, runs, cfg.n_heads,
                                                   cfg.d_model // cfg.n_heads),
              "notes": "export.forms.CachedGPT2 (2 layers, 4 heads of 8, vocab 64, 32 positions, "
                       "seed 15) with weights rounded to float16, exported as a single decoding "
                       "step (input_ids [batch, 1], past_key_values.N.key/value in, "
                       "present.N.key/value out; TorchScript, opset 17) and converted by "
                       "export.forms.to_float16: past and present state are float16. "
                       "reference.json: PyTorch float32 on the rounded weights, whole prompts "
                       "without a cache; max_abs_diff: onnxruntime (Python) fed token by token "
                       "against it."}
    sites = [{"kind": "causal-self", "node": n.name}
             for n in topological_nodes(proto.graph, {"Softmax"})]
    reference = reference_header(config, sites, len(sites))
    reference["runs"] = runs
    reference["tolerance"] = FP16_TOLERANCE
    write_form(folder, proto, config, reference)
    return config


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="testdata/models", help="folder to write the model into")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    folder = os.path.join(args.out, "fp16step")
    config = build_fp16_step(folder)
    print(f"fp16step: {folder}: max_abs_diff {config['max_abs_diff']}", file=sys.stderr)


if __name__ == "__main__":
    main()
