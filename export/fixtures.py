"""Writes the committed test models under testdata/models, deterministically.

    python -m export.fixtures --out testdata/models      (from the repository root; `make fixtures`)

Each folder gets model.onnx, config.json and reference.json (see export/onnx_export.py).
Weights are random but seeded, with query/key weights drawn wider than usual so that heads
are far from uniform and the Go tests that compare attention mean something.
"""
import argparse
import os
import sys

import torch
import torch.nn as nn

from export.models import (AttnOnly, AttnOnlyConfig, BertConfig, BertEncoder, GPT2,
                           GPT2Config)
from export.onnx_export import export

GPT2_INPUTS = ["input_ids", "attention_mask", "position_ids"]
BERT_INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


def sharpen(model, qk_std, embed_std=None):
    """Redraws query and key weights from N(0, qk_std) (and token/position embeddings from
    N(0, embed_std)), so that attention scores spread over a few units instead of ~0, and
    perturbs biases and LayerNorm parameters as training would. (Left at their zero/one
    init, equal tensors are merged by the exporter into one initializer plus Identity nodes.)"""
    for name, p in model.named_parameters():
        if p.dim() == 1:
            with torch.no_grad():
                p.add_(torch.randn_like(p), alpha=0.05)
            continue
        if name.endswith(("W_Q.weight", "W_K.weight", "query.weight", "key.weight")):
            nn.init.normal_(p, std=qk_std)
        elif name.endswith("c_attn.weight"):  # fused [q; k; v] rows
            d = p.shape[1]
            nn.init.normal_(p[: 2 * d], std=qk_std)
        elif embed_std and name.endswith(("embed.weight", "wte.weight", "wpe.weight",
                                          "word_embeddings.weight",
                                          "position_embeddings.weight")):
            nn.init.normal_(p, std=embed_std)
    return model


def attn_only(n_layers, seed):
    torch.manual_seed(seed)
    cfg = AttnOnlyConfig(n_layers=n_layers, n_heads=4, d_model=64, d_head=16,
                         vocab_size=64, n_ctx=32)
    return sharpen(AttnOnly(cfg), qk_std=0.25, embed_std=0.5)


def gpt2_tiny(seed):
    torch.manual_seed(seed)
    cfg = GPT2Config(n_layers=2, n_heads=4, d_model=64, vocab_size=128, n_positions=64)
    return sharpen(GPT2(cfg), qk_std=0.25)


def bert_tiny(seed):
    torch.manual_seed(seed)
    cfg = BertConfig(n_layers=2, n_heads=2, d_model=48, vocab_size=128, n_positions=64)
    return sharpen(BertEncoder(cfg), qk_std=0.3)


def fixtures():
    """(folder name, model factory, opset, input names); factories are called in order."""
    gpt2 = gpt2_tiny(seed=3)  # one set of weights for both GPT-2 exports
    return [
        ("attn1l", lambda: attn_only(1, seed=1), 14, ["input_ids"]),
        ("attn2l", lambda: attn_only(2, seed=2), 17, ["input_ids"]),
        ("gpt2tiny", lambda: gpt2, 17, GPT2_INPUTS),
        ("gpt2tiny-op14", lambda: gpt2, 14, ["input_ids"]),
        ("bert", lambda: bert_tiny(seed=4), 14, BERT_INPUTS),
    ]


def generate(out, log=sys.stderr):
    torch.set_num_threads(1)  # steadier on small machines, and one summation order
    written = []
    for name, make, opset, inputs in fixtures():
        model = make().eval()
        folder = os.path.join(out, name)
        info = export(model, folder, opset, inputs, name=name)
        assert info["softmax_nodes"] == info["n_layers"], (
            f"{name}: {info['softmax_nodes']} Softmax nodes, expected {info['n_layers']}")
        size = os.path.getsize(os.path.join(folder, "model.onnx"))
        print(f"fixtures: {folder}: {info['architecture']}, opset {opset}, "
              f"inputs {','.join(inputs)}, {size // 1024} KiB, "
              f"attention {sorted(set(info['attention_chains']))}", file=log)
        written.append(folder)
    return written


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="testdata/models", help="folder to write the models into")
    args = ap.parse_args(argv)
    generate(args.out)


if __name__ == "__main__":
    main()
