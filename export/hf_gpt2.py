"""Turns a Hugging Face transformers GPT-2 checkpoint into a folder the inspector opens.

    python -m export.hf_gpt2 CHECKPOINT_DIR OUT_DIR            # a local from_pretrained folder
    python -m export.hf_gpt2 --random OUT_DIR                   # GPT2Config(n_layer=2, n_head=4, n_embd=64)
    python -m export.hf_gpt2 --random --full OUT_DIR            # GPT2Config(): GPT-2-small size
    python -m export.hf_gpt2 --fixtures testdata/hf             # the committed test fixtures

OUT_DIR gets model.onnx (torch.onnx.export of GPT2LMHeadModel with eager attention, so every
layer's Softmax is a node; inputs input_ids, attention_mask, position_ids; opset 17),
tokenizer.json (the checkpoint's, when it has one), config.json and reference.json:
transformers' own attention (output_attentions=True) and logits on seeded prompts. The
export is then run through onnxruntime with every Softmax exposed and compared with that
reference (max abs difference must be <= 1e-5), which is what the Go inspector does.

optimum's exporter (`export_optimum`) writes the same weights the way users download them
from the Hugging Face hub (onnx-community/…, optimum-cli export onnx --task text-generation);
both are kept as fixtures under testdata/hf/. optimum is not in export/requirements.txt:
`pip install optimum==1.23.3` (the last 1.x line that carries optimum.exporters.onnx and fits
transformers 4.46) pulls datasets, pandas, pyarrow and numpy 2; on Debian's torch 1.13 follow
it with `pip uninstall -y numpy` so that Debian's numpy 1.24 is the one imported.
"""
import argparse
import json
import os
import sys

import numpy as np
import onnx
import torch

from export.onnx_export import _tensor_json, _write_json, attention_chains, count_ops, export_onnx

INPUTS = ["input_ids", "attention_mask", "position_ids"]
SEQ_LENS = (7, 19)


def load(checkpoint):
    """A GPT2LMHeadModel with eager attention (Softmax nodes in the export), no KV cache."""
    from transformers import GPT2LMHeadModel
    model = GPT2LMHeadModel.from_pretrained(checkpoint, attn_implementation="eager")
    return prepare(model)


def prepare(model):
    model.config.use_cache = False
    model.config._attn_implementation = "eager"
    return model.eval()


def random_model(full=False, seed=0, **overrides):
    """A randomly initialised GPT-2 (weights cannot be downloaded here)."""
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(seed)
    cfg = GPT2Config() if full else GPT2Config(n_layer=2, n_head=4, n_embd=64, **overrides)
    if full:
        for k, v in overrides.items():
            setattr(cfg, k, v)
    cfg._attn_implementation = "eager"
    return prepare(GPT2LMHeadModel(cfg))


class _LogitsOnly(torch.nn.Module):
    """GPT2LMHeadModel(input_ids, attention_mask, position_ids) -> logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.config = model.config

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          position_ids=position_ids, use_cache=False, return_dict=True).logits


def reference_runs(model, seq_lens=SEQ_LENS, seed=0, prompts=()):
    """transformers' logits and attentions (output_attentions=True), reference.json's runs."""
    model.eval()  # (from_pretrained and the exporter may leave dropout on)
    rng = np.random.RandomState(seed)
    id_lists = [rng.randint(0, model.config.vocab_size, size=T).tolist() for T in seq_lens]
    id_lists += [list(p) for p in prompts]
    runs = []
    for ids in id_lists:
        x = torch.tensor([ids])
        with torch.no_grad():
            out = model(input_ids=x, attention_mask=torch.ones_like(x),
                        position_ids=torch.arange(len(ids))[None], output_attentions=True,
                        use_cache=False, return_dict=True)
        runs.append({"ids": ids, "logits": _tensor_json(out.logits),
                     "attention": [_tensor_json(a) for a in out.attentions]})
    return runs


def write_reference(model, folder, name, source, prompts=()):
    cfg = model.config
    ref = {"model": name, "opset": onnx_opset(os.path.join(folder, "model.onnx")),
           "torch": torch.__version__, "n_layers": cfg.n_layer, "n_heads": cfg.n_head,
           "vocab_size": cfg.vocab_size, "n_positions": cfg.n_positions,
           "inputs": onnx_inputs(os.path.join(folder, "model.onnx")),
           "runs": reference_runs(model, prompts=prompts), "source": source}
    _write_json(os.path.join(folder, "reference.json"), ref)
    return ref


def onnx_opset(path):
    proto = onnx.load(path, load_external_data=False)
    return [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")][0]


def onnx_inputs(path):
    return [i.name for i in onnx.load(path, load_external_data=False).graph.input]


def save_tokenizer(tokenizer, folder):
    """tokenizer: a tokenizers.Tokenizer, a transformers fast tokenizer, or a tokenizer.json path."""
    if tokenizer is None:
        return None
    dst = os.path.join(folder, "tokenizer.json")
    if isinstance(tokenizer, str):
        if os.path.abspath(tokenizer) != os.path.abspath(dst):
            with open(tokenizer, "rb") as src, open(dst, "wb") as out:
                out.write(src.read())
    elif hasattr(tokenizer, "backend_tokenizer"):
        tokenizer.backend_tokenizer.save(dst)
    else:
        tokenizer.save(dst)
    return "tokenizer.json"


def export(model, folder, tokenizer=None, opset=17, name=None, prompts=()):
    """Writes model.onnx, tokenizer.json, config.json and reference.json for a transformers
    GPT-2; checks the export's attention against output_attentions. Returns config.json's dict."""
    os.makedirs(folder, exist_ok=True)
    name = name or os.path.basename(os.path.normpath(folder))
    model = prepare(model)
    proto = export_onnx(_LogitsOnly(model), os.path.join(folder, "model.onnx"), opset, INPUTS)
    cfg = model.config
    config = {"model": name, "architecture": "GPT2LMHeadModel", "exporter": "torch.onnx.export",
              "n_layers": cfg.n_layer, "n_heads": cfg.n_head, "d_model": cfg.n_embd,
              "d_head": cfg.n_embd // cfg.n_head, "vocab_size": cfg.vocab_size,
              "n_positions": cfg.n_positions, "opset": opset, "torch": torch.__version__,
              "transformers": _version("transformers"), "inputs": INPUTS, "outputs": ["logits"],
              "tokenizer": save_tokenizer(tokenizer, folder),
              "softmax_nodes": count_ops(proto, "Softmax"),
              "attention_chains": sorted(set(attention_chains(proto)))}
    _write_json(os.path.join(folder, "config.json"), config, indent=2)
    write_reference(model, folder, name, "transformers output_attentions=True", prompts)
    config["max_abs_diff"] = check(folder)
    return config


def export_optimum(model, folder, tokenizer=None, opset=17, name=None, prompts=()):
    """The same weights through optimum's exporter (task text-generation, no KV cache: the
    merged with-past decoder hides attention inside an If); reference.json as in export()."""
    import tempfile
    from optimum.exporters.onnx import main_export
    os.makedirs(folder, exist_ok=True)
    name = name or os.path.basename(os.path.normpath(folder))
    model = prepare(model)
    with tempfile.TemporaryDirectory() as ckpt:
        model.save_pretrained(ckpt)
        if tokenizer is not None:
            fast = _fast_tokenizer(tokenizer)
            fast.save_pretrained(ckpt)
        main_export(ckpt, output=folder, task="text-generation", opset=opset,
                    no_post_process=True, do_validation=False, device="cpu")
    for junk in ("vocab.json", "merges.txt", "special_tokens_map.json"):
        p = os.path.join(folder, junk)  # tokenizer.json says all of it
        if os.path.exists(p):
            os.remove(p)
    proto = onnx.load(os.path.join(folder, "model.onnx"))
    config = {"model": name, "architecture": "GPT2LMHeadModel", "exporter": "optimum " +
              _version("optimum"), "n_layers": model.config.n_layer,
              "n_heads": model.config.n_head, "vocab_size": model.config.vocab_size,
              "n_positions": model.config.n_positions, "opset": opset,
              "torch": torch.__version__, "transformers": _version("transformers"),
              "inputs": [i.name for i in proto.graph.input],
              "outputs": [o.name for o in proto.graph.output],
              "tokenizer": "tokenizer.json" if tokenizer is not None else None,
              "softmax_nodes": count_ops(proto, "Softmax"),
              "attention_chains": sorted(set(attention_chains(proto)))}
    # config.json stays the Hugging Face config optimum wrote, as on the hub.
    _write_json(os.path.join(folder, "export.json"), config, indent=2)
    write_reference(model, folder, name, "transformers output_attentions=True", prompts)
    config["max_abs_diff"] = check(folder)
    return config


def _fast_tokenizer(tokenizer):
    from transformers import PreTrainedTokenizerFast
    if isinstance(tokenizer, PreTrainedTokenizerFast):
        return tokenizer
    if isinstance(tokenizer, str):
        return PreTrainedTokenizerFast(tokenizer_file=tokenizer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer)


def _version(pkg):
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(pkg)
    except PackageNotFoundError:
        return None


def check(folder, atol=1e-5):
    """Runs model.onnx in onnxruntime with every Softmax exposed (what the inspector does)
    and returns the largest difference from reference.json's attention; raises past atol."""
    import onnxruntime as ort
    proto = onnx.load(os.path.join(folder, "model.onnx"))
    soft = [n.output[0] for n in proto.graph.node if n.op_type == "Softmax"]
    for s in soft:
        proto.graph.output.append(onnx.helper.make_tensor_value_info(s, onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = json.load(open(os.path.join(folder, "reference.json")))
    worst = 0.0
    n_out = len(sess.get_outputs()) - len(soft)
    for run in ref["runs"]:
        ids = np.array([run["ids"]], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids),
                 "position_ids": np.arange(ids.shape[1], dtype=np.int64)[None]}
        outs = sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()})
        attns = outs[n_out:]
        if len(attns) != len(run["attention"]):
            raise AssertionError(f"{folder}: {len(attns)} Softmax nodes, "
                                 f"{len(run['attention'])} layers")
        for a, want in zip(attns, run["attention"]):
            worst = max(worst, float(np.abs(a.ravel() - np.float32(want["data"])).max()))
    if worst > atol:
        raise AssertionError(f"{folder}: ONNX attention differs from transformers by {worst:g}")
    return worst


FIXTURE_TEXT = ("First Citizen: Before we proceed any further, hear me speak. "
                "All: Speak, speak. The king is dead, long live the king! ") * 4


def fixture_tokenizer(vocab_size):
    """A small byte-level BPE (GPT-2's pre-tokenizer and decoder) for the random fixtures."""
    from export.corpus import build_tokenizer
    return build_tokenizer([FIXTURE_TEXT], "bpe", vocab_size)


def fixtures(out):
    """testdata/hf/{transformers,optimum}: one random GPT-2 (2 layers, 4 heads, d 64, a
    512-token vocabulary so that the files stay small), exported both ways."""
    model = random_model(seed=0, vocab_size=512, n_positions=64)
    tok = fixture_tokenizer(512)
    prompt = tok.encode("The king is dead, long live the king!").ids
    a = export(model, os.path.join(out, "transformers"), tok, prompts=[prompt])
    b = export_optimum(model, os.path.join(out, "optimum"), tok, prompts=[prompt])
    return a, b


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", nargs="?", help="a from_pretrained folder")
    ap.add_argument("out", nargs="?")
    ap.add_argument("--random", action="store_true", help="a randomly initialised GPT-2")
    ap.add_argument("--full", action="store_true", help="with --random: GPT2Config() (GPT-2 small)")
    ap.add_argument("--optimum", action="store_true", help="use optimum's exporter")
    ap.add_argument("--fixtures", metavar="DIR", help="write the test fixtures into DIR")
    ap.add_argument("--opset", type=int, default=17)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.fixtures:
        for c in fixtures(args.fixtures):
            print(f"hf_gpt2: {c['model']}: {c['exporter']}, max |diff| {c['max_abs_diff']:.2g}",
                  file=sys.stderr)
        return
    if args.random:
        out, model, tok = args.out or args.checkpoint, random_model(full=args.full), None
    else:
        if not (args.checkpoint and args.out):
            ap.error("give CHECKPOINT_DIR OUT_DIR, or --random OUT_DIR, or --fixtures DIR")
        out, model = args.out, load(args.checkpoint)
        tj = os.path.join(args.checkpoint, "tokenizer.json")
        tok = tj if os.path.exists(tj) else None
    fn = export_optimum if args.optimum else export
    c = fn(model, out, tok, opset=args.opset)
    print(f"hf_gpt2: wrote {out}: {c['n_layers']} layers x {c['n_heads']} heads, "
          f"max |attention - transformers| {c['max_abs_diff']:.2g}", file=sys.stderr)


if __name__ == "__main__":
    main()
