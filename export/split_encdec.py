"""Exports the fixtures of split encoder–decoders and Hub-layout folders.

    python -m export.split_encdec --out testdata/models/split-encdec   # the split BART
    python -m export.split_encdec --hub testdata/hub/tiny                # the Hub-layout folder

The split fixture is a tiny randomly initialised BART (transformers' BartConfig, built
locally: nothing is downloaded; seed 0) exported the way optimum exports encoder–decoders
(T5, BART, Marian, Whisper), as two files:

    encoder_model.onnx  inputs input_ids, attention_mask [batch, encoder_sequence_length]
                        output last_hidden_state [batch, encoder_sequence_length, d_model]
    decoder_model.onnx  inputs input_ids [batch, decoder_sequence_length],
                        encoder_attention_mask [batch, encoder_sequence_length],
                        encoder_hidden_states [batch, encoder_sequence_length, d_model]
                        output logits [batch, decoder_sequence_length, vocab]
    decoder_model_merged.onnx  the same decoder inside an If on use_cache_branch ([1],
                        bool), in both branches (optimum's merged layout, without past)

with eager attention, so every Softmax is a node. reference.json holds transformers' own
attention (output_attentions=True) and logits on seeded source/target pairs, layers in the
order attnscope numbers them: the encoder's layers, then per decoder layer its
self-attention and its cross-attention. config.json is the model's Hugging Face config.

The Hub fixture copies a small committed model (testdata/models/attn1l) into the layout the
Hub's ONNX repositories use: config.json and tokenizer.json in the folder, the model in
onnx/model.onnx (no symbolic links), with its reference.json, and writes a word-level
tokenizer of the model's 64 ids.
"""
import argparse
import json
import os
import shutil
import sys

import numpy as np
import onnx
import torch

from export.onnx_export import _tensor_json, _write_json

OPSET = 14
# (source length, target length) of the reference runs: S != T in both, two lengths each.
PAIRS = ((7, 4), (11, 6))


def bart(seed=0):
    """A randomly initialised tiny BART with eager attention and no cache."""
    from transformers import BartConfig, BartForConditionalGeneration
    torch.manual_seed(seed)
    cfg = BartConfig(
        vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=32,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, use_cache=False,
    )
    cfg._attn_implementation = "eager"
    model = BartForConditionalGeneration(cfg)
    # Random init gives near-uniform attention; sharper weights make a wrong map visible.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                p.mul_(4.0)
    model.config.use_cache = False
    return model.eval()


class Encoder(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.encoder = model.model.encoder

    def forward(self, input_ids, attention_mask):
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class Decoder(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.decoder = model.model.decoder
        self.lm_head = model.lm_head
        self.register_buffer("final_logits_bias", model.final_logits_bias.clone())

    def forward(self, input_ids, encoder_attention_mask, encoder_hidden_states):
        h = self.decoder(input_ids=input_ids, encoder_hidden_states=encoder_hidden_states,
                         encoder_attention_mask=encoder_attention_mask, use_cache=False).last_hidden_state
        return self.lm_head(h) + self.final_logits_bias


def _export(module, args, path, inputs, outputs, axes):
    import inspect
    import warnings
    kwargs = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(module, args, path, input_names=inputs, output_names=outputs,
                          dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True, **kwargs)
    proto = onnx.load(path)
    onnx.checker.check_model(proto)
    return proto


def export_split(out, seed=0):
    os.makedirs(out, exist_ok=True)
    model = bart(seed)
    cfg = model.config
    S, T = 5, 3  # export shapes unlike either reference run
    src = torch.full((2, S), 5, dtype=torch.long)
    mask = torch.ones(2, S, dtype=torch.long)
    enc_axes = {"input_ids": {0: "batch_size", 1: "encoder_sequence_length"},
                "attention_mask": {0: "batch_size", 1: "encoder_sequence_length"},
                "last_hidden_state": {0: "batch_size", 1: "encoder_sequence_length"}}
    _export(Encoder(model), (src, mask), os.path.join(out, "encoder_model.onnx"),
            ["input_ids", "attention_mask"], ["last_hidden_state"], enc_axes)
    hidden = Encoder(model)(src, mask).detach()
    tgt = torch.full((2, T), 7, dtype=torch.long)
    dec_axes = {"input_ids": {0: "batch_size", 1: "decoder_sequence_length"},
                "encoder_attention_mask": {0: "batch_size", 1: "encoder_sequence_length"},
                "encoder_hidden_states": {0: "batch_size", 1: "encoder_sequence_length"},
                "logits": {0: "batch_size", 1: "decoder_sequence_length"}}
    _export(Decoder(model), (tgt, mask, hidden), os.path.join(out, "decoder_model.onnx"),
            ["input_ids", "encoder_attention_mask", "encoder_hidden_states"], ["logits"], dec_axes)

    rng = np.random.RandomState(seed)
    runs = []
    for s_len, t_len in PAIRS:
        ids = torch.from_numpy(rng.randint(3, cfg.vocab_size, size=(1, s_len))).long()
        dec = torch.from_numpy(rng.randint(3, cfg.vocab_size, size=(1, t_len))).long()
        with torch.no_grad():
            o = model(input_ids=ids, attention_mask=torch.ones_like(ids), decoder_input_ids=dec,
                      output_attentions=True, use_cache=False)
        attn = list(o.encoder_attentions)
        for self_a, cross_a in zip(o.decoder_attentions, o.cross_attentions):
            attn += [self_a, cross_a]
        runs.append({"ids": ids[0].tolist(), "decoder_ids": dec[0].tolist(),
                     "logits": _tensor_json(o.logits), "attention": [_tensor_json(a) for a in attn]})
    # decoder_model_merged.onnx as optimum writes it: an If on use_cache_branch, here with
    # the same no-past decoder in both branches (attnscope feeds it false), weights shared.
    from export.forms import merge_decoders
    dec_proto = onnx.load(os.path.join(out, "decoder_model.onnx"))
    onnx.save(merge_decoders(dec_proto, dec_proto), os.path.join(out, "decoder_model_merged.onnx"))
    check_onnxruntime(out, runs)
    check_onnxruntime(out, runs, decoder="decoder_model_merged.onnx")
    n_sites = cfg.encoder_layers + 2 * cfg.decoder_layers
    reference = {"model": "split-encdec", "opset": OPSET, "torch": torch.__version__,
                 "n_layers": n_sites, "n_heads": cfg.encoder_attention_heads,
                 "vocab_size": cfg.vocab_size, "n_positions": cfg.max_position_embeddings,
                 "inputs": ["input_ids", "decoder_input_ids"], "runs": runs}
    _write_json(os.path.join(out, "reference.json"), reference)
    hf = cfg.to_dict()
    hf["_comment"] = ("tiny random BART (seed %d) exported by export/split_encdec.py as optimum's "
                      "encoder_model.onnx + decoder_model.onnx" % seed)
    _write_json(os.path.join(out, "config.json"), hf, indent=2)
    return reference


def check_onnxruntime(out, runs, tol=1e-4, decoder="decoder_model.onnx"):
    """Runs the two files with onnxruntime, encoder then decoder, on each reference run and
    checks the logits equal transformers' (the Go tests check the attention)."""
    import onnxruntime as ort
    enc = ort.InferenceSession(os.path.join(out, "encoder_model.onnx"), providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(os.path.join(out, decoder), providers=["CPUExecutionProvider"])
    for run in runs:
        ids = np.array([run["ids"]], dtype=np.int64)
        mask = np.ones_like(ids)
        hidden = enc.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        feeds = {"input_ids": np.array([run["decoder_ids"]], dtype=np.int64),
                 "encoder_attention_mask": mask, "encoder_hidden_states": hidden}
        if decoder != "decoder_model.onnx":
            feeds["use_cache_branch"] = np.array([False])
        logits = dec.run(None, feeds)[0]
        diff = float(np.abs(logits.reshape(-1) - np.array(run["logits"]["data"], dtype=np.float32)).max())
        if diff > tol:
            raise SystemExit("onnxruntime's logits differ from transformers' by %g" % diff)


def word_tokenizer(vocab_size):
    """A word-level tokenizer.json of vocab_size ids: [UNK], then w1 … w{n-1}."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    vocab = {"[UNK]": 0}
    for i in range(1, vocab_size):
        vocab["w%d" % i] = i
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


def export_hub(out, source="testdata/models/attn1l"):
    """Copies source's model.onnx into out/onnx/, its reference.json beside, and writes a
    Hugging Face-style config.json and a tokenizer.json for its vocabulary in out."""
    with open(os.path.join(source, "config.json")) as f:
        src_cfg = json.load(f)
    os.makedirs(os.path.join(out, "onnx"), exist_ok=True)
    shutil.copyfile(os.path.join(source, "model.onnx"), os.path.join(out, "onnx", "model.onnx"))
    shutil.copyfile(os.path.join(source, "reference.json"), os.path.join(out, "reference.json"))
    vocab, positions = src_cfg["vocab_size"], src_cfg["n_positions"]
    cfg = {"model_type": "attn-only", "vocab_size": vocab, "max_position_embeddings": positions,
           "n_layer": src_cfg["n_layers"], "n_head": src_cfg["n_heads"],
           "_comment": "copied from %s by export/split_encdec.py --hub" % source}
    _write_json(os.path.join(out, "config.json"), cfg, indent=2)
    word_tokenizer(vocab).save(os.path.join(out, "tokenizer.json"))
    _write_json(os.path.join(out, "tokenizer_config.json"),
                {"model_max_length": positions, "unk_token": "[UNK]"}, indent=2)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="folder for the split encoder–decoder fixture")
    p.add_argument("--hub", help="folder for the Hub-layout fixture")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if not a.out and not a.hub:
        p.error("give --out and/or --hub")
    if a.out:
        ref = export_split(a.out, a.seed)
        print("wrote %s: %d attention layers, %d reference runs" % (a.out, ref["n_layers"], len(ref["runs"])),
              file=sys.stderr)
    if a.hub:
        export_hub(a.hub)
        print("wrote %s" % a.hub, file=sys.stderr)


if __name__ == "__main__":
    main()
