"""Writes the committed test models for model forms beyond a plain decoder, deterministically.

    python -m export.forms --out testdata/models      (from the repository root; `make fixtures`)

  encdec  nn.TransformerEncoder + nn.TransformerDecoder in one graph: encoder self-attention,
          causal decoder self-attention and non-square cross-attention, one Softmax each;
  gqa     a decoder built with onnx.helper around com.microsoft.GroupQueryAttention nodes
          (4 query heads sharing 2 key/value heads), the fused op that hides probabilities
          unless its qk_output attribute is set;
  fp16    GPT-2 converted to float16, Softmax included;
  merged  an optimum-style merged decoder: one If node choosing between the graph with a
          key/value cache and the graph without one.

Each folder gets model.onnx, config.json (with a "notes" field) and reference.json in
export/onnx_export.py's format, plus `sites`: per attention entry, its kind ("self",
"causal-self" or "cross") and the ONNX node that computes it, in graph order. Runs that need
inputs besides the ids carry all of them in run["inputs"] as name -> {shape, dtype, data}.
All reference attention comes from PyTorch.
"""
import argparse
import contextlib
import copy
import inspect
import json
import math
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass

import numpy as np
import onnx
import torch
import torch.nn as nn
from onnx import TensorProto, helper, numpy_helper

from export.fixtures import gpt2_tiny, sharpen
from export.models import (GPT2, GPT2Attention, GPT2Block, GPT2Config, init_weights,
                           merge_heads, padding_mask, split_heads)
from export.onnx_export import (_tensor_json, _write_json, export_onnx, model_info,
                                reference_runs)

OPSET = 14
DTYPES = {np.dtype(np.int64): "int64", np.dtype(np.int32): "int32",
          np.dtype(np.float32): "float32", np.dtype(np.float16): "float16",
          np.dtype(np.bool_): "bool"}


# ---------------------------------------------------------------------------------------
# Shared helpers


def input_json(array):
    """A run input as reference.json stores it: {shape, dtype, data}, data flattened."""
    a = np.asarray(array)
    return {"shape": list(a.shape), "dtype": DTYPES[a.dtype], "data": a.reshape(-1).tolist()}


def random_ids(rng, vocab_size, length):
    """[1, length] int64 token ids drawn from rng."""
    return torch.from_numpy(rng.randint(0, vocab_size, size=(1, length))).long()


def topological_nodes(graph, op_types):
    """The nodes of graph with an op in op_types, in the graph's (topological) node order."""
    return [n for n in graph.node if n.op_type in op_types]


def torch_export(module, args, input_names, output_names, axes):
    """torch.onnx.export with the TorchScript exporter at OPSET; returns the checked proto.
    Leaves autograd as the caller set it: with it on, nn.TransformerEncoderLayer skips its
    fused fast path, which has no ONNX form and would hide the probabilities."""
    kwargs = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # torch >= 2.5 may default to the dynamo exporter
    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
        warnings.simplefilter("ignore")  # tracer warnings about sizes read in Python
        path = os.path.join(tmp, "model.onnx")
        torch.onnx.export(module, args, path, input_names=input_names,
                          output_names=output_names, dynamic_axes=axes,
                          opset_version=OPSET, do_constant_folding=True, **kwargs)
        proto = onnx.load(path)
    onnx.checker.check_model(proto)
    return proto


def write_form(folder, proto, config, reference):
    """Writes model.onnx, config.json and reference.json into folder."""
    os.makedirs(folder, exist_ok=True)
    onnx.save(proto, os.path.join(folder, "model.onnx"))
    _write_json(os.path.join(folder, "config.json"), config, indent=2)
    _write_json(os.path.join(folder, "reference.json"), reference)


def reference_header(config, sites, n_attention):
    """reference.json's fields before `runs`, taken from config.json's, except n_layers:
    n_attention, the number of attention entries per run (the Go side's layers L0, L1...)."""
    return {"model": config["model"], "opset": config["opset"], "torch": torch.__version__,
            "n_layers": n_attention, "n_heads": config["n_heads"],
            "vocab_size": config["vocab_size"], "n_positions": config["n_positions"],
            "inputs": config["inputs"], "sites": sites}


def qk_sharpen(weights, std):
    """Redraws the given query/key weight tensors from N(0, std), so that heads are far from
    uniform (fixtures.sharpen does this for the module names it knows)."""
    with torch.no_grad():
        for w in weights:
            nn.init.normal_(w, std=std)


# ---------------------------------------------------------------------------------------
# encdec: nn.TransformerEncoder + nn.TransformerDecoder


@dataclass
class EncDecConfig:
    vocab_size: int = 64
    d_model: int = 32
    n_heads: int = 2
    n_encoder_layers: int = 1
    n_decoder_layers: int = 2
    d_ff: int = 64
    n_positions: int = 32


class EncDec(nn.Module):
    """A post-LN torch.nn encoder-decoder with one embedding shared by source, target and
    unembedding, and learned positions. forward(input_ids, decoder_input_ids) -> logits
    [B, tgt_len, vocab]; the decoder's self-attention is causal, its cross-attention reads
    the encoder output."""

    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        d = cfg.d_model
        self.embed = nn.Embedding(cfg.vocab_size, d)
        self.pos_embed = nn.Embedding(cfg.n_positions, d)
        layer = dict(d_model=d, nhead=cfg.n_heads, dim_feedforward=cfg.d_ff, dropout=0.0,
                     batch_first=True)
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(**layer),
                                             cfg.n_encoder_layers, norm=nn.LayerNorm(d),
                                             enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(**layer),
                                             cfg.n_decoder_layers, norm=nn.LayerNorm(d))
        n = cfg.n_positions  # True above the diagonal: keys a query may not see
        self.register_buffer("future", ~torch.tril(torch.ones(n, n, dtype=torch.bool)),
                             persistent=False)
        for p in self.parameters():  # as nn.Transformer does; the layers start as copies
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def embed_tokens(self, ids):
        pos = torch.arange(ids.size(1), device=ids.device)
        return self.embed(ids) + self.pos_embed(pos)

    def forward(self, input_ids, decoder_input_ids):
        T = decoder_input_ids.size(1)
        memory = self.encoder(self.embed_tokens(input_ids))
        h = self.decoder(self.embed_tokens(decoder_input_ids), memory,
                         tgt_mask=self.future[:T, :T])
        return h @ self.embed.weight.t()


def attention_modules(model):
    """{module name: nn.MultiheadAttention} for every attention module of model."""
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)}


@contextlib.contextmanager
def recorded_attention(model):
    """Within the block, each nn.MultiheadAttention of model returns per-head weights
    (need_weights=True, average_attn_weights=False) and stores them, [B, H, Q, K], in the
    yielded dict under its module name: the probabilities its output is made of."""
    seen = {}
    modules = attention_modules(model)

    def recording(name, mha):
        def forward(*args, **kwargs):
            kwargs.update(need_weights=True, average_attn_weights=False)
            out, weights = type(mha).forward(mha, *args, **kwargs)
            seen[name] = weights.detach()
            return out, weights
        return forward

    for name, mha in modules.items():
        mha.forward = recording(name, mha)
    try:
        yield seen
    finally:
        for mha in modules.values():
            del mha.forward


def encdec_model(seed):
    """An EncDec with seeded weights whose query/key projections are drawn wide."""
    torch.manual_seed(seed)
    model = sharpen(EncDec(EncDecConfig()), qk_std=0.3, embed_std=0.5)
    d = model.config.d_model
    qk_sharpen([m.in_proj_weight[: 2 * d] for m in attention_modules(model).values()], 0.3)
    return model.eval()


def module_of(node_name):
    """The PyTorch module a TorchScript-exported node came from:
    "/decoder/layers.0/self_attn/Softmax" -> "decoder.layers.0.self_attn"."""
    return node_name.strip("/").rpartition("/")[0].replace("/", ".")


def encdec_site(module_name):
    """The kind of attention an EncDec attention module computes."""
    if module_name.startswith("encoder."):
        return "self"
    return "cross" if module_name.endswith("multihead_attn") else "causal-self"


def encdec_runs(model, softmax_modules, lengths, seed):
    """Reference runs for (source length, target length) pairs; attention follows
    softmax_modules, the attention module of each Softmax in graph order."""
    rng = np.random.RandomState(seed)
    runs = []
    for src_len, tgt_len in lengths:
        src = random_ids(rng, model.config.vocab_size, src_len)
        tgt = random_ids(rng, model.config.vocab_size, tgt_len)
        with torch.enable_grad(), recorded_attention(model) as seen:  # grad: see torch_export
            logits = model(src, tgt).detach()
        runs.append({
            "ids": src[0].tolist(), "decoder_ids": tgt[0].tolist(),
            "inputs": {"input_ids": input_json(src.numpy()),
                       "decoder_input_ids": input_json(tgt.numpy())},
            "logits": _tensor_json(logits),
            "attention": [_tensor_json(seen[m]) for m in softmax_modules],
        })
    return runs


def build_encdec(folder, name="encdec"):
    """Exports EncDec and its reference; asserts one Softmax per attention module."""
    model = encdec_model(seed=11)
    cfg = model.config
    inputs = ["input_ids", "decoder_input_ids"]
    axes = {"input_ids": {0: "batch", 1: "sequence"},
            "decoder_input_ids": {0: "batch", 1: "decoder_sequence"},
            "logits": {0: "batch", 1: "decoder_sequence"}}
    example = (torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long))
    proto = torch_export(model, example, inputs, ["logits"], axes)
    softmaxes = topological_nodes(proto.graph, {"Softmax"})
    modules = [module_of(n.name) for n in softmaxes]
    assert sorted(modules) == sorted(attention_modules(model)), (
        f"{name}: Softmax nodes {modules} are not one per attention module")
    sites = [{"kind": encdec_site(m), "node": n.name} for m, n in zip(modules, softmaxes)]
    config = {"model": name, "architecture": "EncDec", "n_layers":
              cfg.n_encoder_layers + cfg.n_decoder_layers,
              "n_encoder_layers": cfg.n_encoder_layers, "n_decoder_layers": cfg.n_decoder_layers,
              "n_heads": cfg.n_heads, "d_model": cfg.d_model,
              "d_head": cfg.d_model // cfg.n_heads, "vocab_size": cfg.vocab_size,
              "n_positions": cfg.n_positions, "opset": OPSET, "torch": torch.__version__,
              "inputs": inputs, "outputs": ["logits"],
              "notes": "torch.nn.TransformerEncoder (1 layer) + TransformerDecoder (2 layers), "
                       "batch_first, post-LN, learned positions, one embedding for source, "
                       "target and unembedding; TorchScript export with autograd on so the "
                       "encoder's fused fast path is not taken. Exercises an encoder-decoder "
                       "graph: encoder self-attention [1,H,S,S], causal decoder self-attention "
                       "[1,H,T,T] and cross-attention [1,H,T,S] with S != T, one Softmax each. "
                       "nn.MultiheadAttention folds heads into the batch: each Softmax output "
                       "is [B*H, Q, K], reference.json keeps [1, H, Q, K]. "
                       "Runs carry decoder_ids beside ids. reference.json's n_layers counts "
                       "attention sites (5), config.json's transformer layers (3)."}
    reference = reference_header(config, sites, len(sites))
    reference["runs"] = encdec_runs(model, modules, [(7, 5), (4, 9)], seed=0)
    write_form(folder, proto, config, reference)
    return config


# ---------------------------------------------------------------------------------------
# gqa: a decoder around com.microsoft.GroupQueryAttention, built with onnx.helper


@dataclass
class GQAConfig:
    vocab_size: int = 64
    d_model: int = 32
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 2
    d_head: int = 8
    d_mlp: int = 64
    n_positions: int = 32
    layer_norm_eps: float = 1e-5


def repeat_kv(x, n_rep):
    """[B, H_kv, T, D] -> [B, H_kv * n_rep, T, D]; query head h reads key/value head
    h // n_rep, as in Hugging Face's repeat_kv and onnxruntime's GroupQueryAttention."""
    return x.repeat_interleave(n_rep, dim=1)


class GQABlock(nn.Module):
    """Pre-LN block: grouped-query causal self-attention without biases, then a ReLU MLP."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        d, inner, kv = cfg.d_model, cfg.n_heads * cfg.d_head, cfg.n_kv_heads * cfg.d_head
        self.ln_1 = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.q_proj = nn.Linear(d, inner, bias=False)
        self.k_proj = nn.Linear(d, kv, bias=False)
        self.v_proj = nn.Linear(d, kv, bias=False)
        self.o_proj = nn.Linear(inner, d, bias=False)
        self.ln_2 = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.up = nn.Linear(d, cfg.d_mlp)
        self.down = nn.Linear(cfg.d_mlp, d)

    def forward(self, x):
        """(x + attention + MLP, the attention probabilities [B, n_heads, T, T])."""
        cfg, T = self.cfg, x.size(1)
        h = self.ln_1(x)
        q = split_heads(self.q_proj(h), cfg.n_heads)
        n_rep = cfg.n_heads // cfg.n_kv_heads
        k = repeat_kv(split_heads(self.k_proj(h), cfg.n_kv_heads), n_rep)
        v = repeat_kv(split_heads(self.v_proj(h), cfg.n_kv_heads), n_rep)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(cfg.d_head)
        future = ~torch.tril(torch.ones(T, T, dtype=torch.bool))
        probs = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
        x = x + self.o_proj(merge_heads(probs @ v))
        x = x + self.down(torch.relu(self.up(self.ln_2(x))))
        return x, probs


class GQADecoder(nn.Module):
    """Token + learned position embeddings, GQABlocks, final LayerNorm, untied unembedding.
    forward(input_ids, return_attn=False) as in export.models."""

    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_embed = nn.Embedding(cfg.n_positions, cfg.d_model)
        self.layers = nn.ModuleList(GQABlock(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)

    def forward(self, input_ids, return_attn=False):
        pos = torch.arange(input_ids.size(1))
        x = self.embed(input_ids) + self.pos_embed(pos)
        attns = []
        for layer in self.layers:
            x, probs = layer(x)
            attns.append(probs)
        logits = self.lm_head(self.ln_f(x))
        return (logits, attns) if return_attn else logits


def gqa_model(seed):
    """A GQADecoder with seeded weights whose query/key projections are drawn wide."""
    torch.manual_seed(seed)
    model = sharpen(GQADecoder(GQAConfig()), qk_std=0.3, embed_std=0.5)
    qk_sharpen([w for layer in model.layers for w in (layer.q_proj.weight,
                                                      layer.k_proj.weight)], 0.3)
    return model.eval()


class GraphBuilder:
    """Collects the nodes and initializers of an ONNX graph. Node names follow the
    TorchScript exporter's "/module/path/Op"; the methods return the names of what they add
    (a node's output, an initializer)."""

    def __init__(self):
        self.nodes, self.initializers = [], []

    def weight(self, name, tensor):
        """Adds a float32 initializer from a torch tensor; returns its name."""
        array = tensor.detach().numpy().astype(np.float32)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def constant(self, name, array):
        """Adds a Constant node holding array; returns its output."""
        return self.node("Constant", [], name, value=numpy_helper.from_array(np.asarray(array)))

    def node(self, op, inputs, name, outputs=None, domain=None, **attrs):
        """Adds node `name`; its outputs are `outputs` or `{name}/output_0`."""
        outputs = outputs or [f"{name}/output_0"]
        self.nodes.append(helper.make_node(op, inputs, outputs, name=name, domain=domain,
                                           **attrs))
        return outputs[0] if len(outputs) == 1 else outputs

    def linear(self, x, module, name):
        """x @ W^T (+ b) with module's weights stored as {name}.MatMul.weight, [in, out]."""
        w = self.weight(f"{name}.MatMul.weight", module.weight.t())
        y = self.node("MatMul", [x, w], f"/{name.replace('.', '/')}/MatMul")
        if module.bias is None:
            return y
        b = self.weight(f"{name}.Add.bias", module.bias)
        return self.node("Add", [y, b], f"/{name.replace('.', '/')}/Add")

    def layer_norm(self, x, module, name):
        """LayerNormalization over the last axis with an nn.LayerNorm's parameters."""
        g = self.weight(f"{name}.weight", module.weight)
        b = self.weight(f"{name}.bias", module.bias)
        return self.node("LayerNormalization", [x, g, b],
                         f"/{name.replace('.', '/')}/LayerNormalization",
                         axis=-1, epsilon=module.eps)


def gqa_sequence_inputs(g):
    """seqlens_k (int32 [B], attended length - 1) and total_sequence_length (int32 scalar)
    from the attention_mask, as onnxruntime-genai's model builder computes them."""
    one = g.constant("/model/attn_mask_reformat/one", np.int64(1))
    axes = g.constant("/model/attn_mask_reformat/axes", np.array([1], np.int64))
    summed = g.node("ReduceSum", ["attention_mask", axes], "/model/attn_mask_reformat/ReduceSum",
                    keepdims=0)
    minus = g.node("Sub", [summed, one], "/model/attn_mask_reformat/Sub")
    seqlens_k = g.node("Cast", [minus], "/model/attn_mask_reformat/seqlens_k/Cast",
                       to=TensorProto.INT32)
    shape = g.node("Shape", ["attention_mask"], "/model/attn_mask_reformat/Shape")
    total = g.node("Gather", [shape, one], "/model/attn_mask_reformat/Gather", axis=0)
    total = g.node("Cast", [total], "/model/attn_mask_reformat/total_seq_len/Cast",
                   to=TensorProto.INT32)
    return seqlens_k, total


def gqa_embeddings(g, model):
    """embed[input_ids] + pos_embed[0..S-1]."""
    tokens = g.node("Gather", [g.weight("model.embed_tokens.weight", model.embed.weight),
                               "input_ids"], "/model/embed_tokens/Gather")
    shape = g.node("Shape", ["input_ids"], "/model/pos/Shape")
    length = g.node("Gather", [shape, g.constant("/model/pos/one", np.int64(1))],
                    "/model/pos/Gather", axis=0)
    pos = g.node("Range", [g.constant("/model/pos/zero", np.int64(0)), length,
                           g.constant("/model/pos/step", np.int64(1))], "/model/pos/Range")
    positions = g.node("Gather", [g.weight("model.embed_positions.weight",
                                           model.pos_embed.weight), pos],
                       "/model/embed_positions/Gather")
    return g.node("Add", [tokens, positions], "/model/embeddings/Add")


def gqa_layer(g, x, layer, i, seqlens_k, total):
    """One GQABlock as nodes; returns (residual stream out, GroupQueryAttention node name)."""
    cfg, p = layer.cfg, f"model.layers.{i}"
    h = g.layer_norm(x, layer.ln_1, f"{p}.input_layernorm")
    q, k, v = (g.linear(h, m, f"{p}.attn.{n}") for m, n in
               ((layer.q_proj, "q_proj"), (layer.k_proj, "k_proj"), (layer.v_proj, "v_proj")))
    site = f"/model/layers.{i}/attn/GroupQueryAttention"
    attn = g.node("GroupQueryAttention", [q, k, v, "", "", seqlens_k, total], site,
                  outputs=[f"{site}/output_0", f"present.{i}.key", f"present.{i}.value"],
                  domain="com.microsoft", num_heads=cfg.n_heads, kv_num_heads=cfg.n_kv_heads)
    x = g.node("Add", [x, g.linear(attn[0], layer.o_proj, f"{p}.attn.o_proj")],
               f"/model/layers.{i}/attn/residual/Add")
    h = g.layer_norm(x, layer.ln_2, f"{p}.post_attention_layernorm")
    h = g.node("Relu", [g.linear(h, layer.up, f"{p}.mlp.up_proj")], f"/model/layers.{i}/mlp/Relu")
    x = g.node("Add", [x, g.linear(h, layer.down, f"{p}.mlp.down_proj")],
               f"/model/layers.{i}/mlp/residual/Add")
    return x, site


def gqa_graph(model):
    """model as an ONNX graph of standard ops around GroupQueryAttention nodes (opset 17,
    com.microsoft 1); returns (ModelProto, the GroupQueryAttention node names in order)."""
    g = GraphBuilder()
    seqlens_k, total = gqa_sequence_inputs(g)
    x = gqa_embeddings(g, model)
    sites = []
    for i, layer in enumerate(model.layers):
        x, site = gqa_layer(g, x, layer, i, seqlens_k, total)
        sites.append(site)
    h = g.layer_norm(x, model.ln_f, "model.norm")
    g.node("MatMul", [h, g.weight("lm_head.MatMul.weight", model.lm_head.weight.t())],
           "/lm_head/MatMul", outputs=["logits"])
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64,
                                            ["batch", "sequence_length"]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64,
                                            ["batch", "total_sequence_length"])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                             ["batch", "sequence_length",
                                              model.config.vocab_size])]
    graph = helper.make_graph(g.nodes, "gqa", inputs, outputs, g.initializers)
    proto = helper.make_model(graph, producer_name="attnscope.export.forms", ir_version=8,
                              opset_imports=[helper.make_opsetid("", 17),
                                             helper.make_opsetid("com.microsoft", 1)])
    onnx.checker.check_model(proto)
    return proto, sites


def gqa_runs(model, lengths, seed):
    """Reference runs, one per prompt length, with an all-ones attention_mask."""
    rng = np.random.RandomState(seed)
    runs = []
    for T in lengths:
        ids = random_ids(rng, model.config.vocab_size, T)
        with torch.no_grad():
            logits, attns = model(ids, return_attn=True)
        runs.append({
            "ids": ids[0].tolist(),
            "inputs": {"input_ids": input_json(ids.numpy()),
                       "attention_mask": input_json(np.ones((1, T), np.int64))},
            "logits": _tensor_json(logits),
            "attention": [_tensor_json(a) for a in attns],
        })
    return runs


def build_gqa(folder, name="gqa"):
    """Writes the GroupQueryAttention decoder and its PyTorch reference."""
    model = gqa_model(seed=12)
    cfg = model.config
    proto, nodes = gqa_graph(model)
    inputs = ["input_ids", "attention_mask"]
    config = {"model": name, "architecture": "GQADecoder", "n_layers": cfg.n_layers,
              "n_heads": cfg.n_heads, "n_kv_heads": cfg.n_kv_heads, "d_model": cfg.d_model,
              "d_head": cfg.d_head, "vocab_size": cfg.vocab_size,
              "n_positions": cfg.n_positions, "opset": 17, "torch": torch.__version__,
              "inputs": inputs, "outputs": ["logits"],
              "notes": "Built with onnx.helper, weights from the PyTorch GQADecoder in "
                       "export/forms.py (pre-LN, learned positions, ReLU MLP). Each layer's "
                       "attention is one com.microsoft.GroupQueryAttention node (num_heads=4, "
                       "kv_num_heads=2, no past, no rotary); seqlens_k and "
                       "total_sequence_length come from attention_mask as in onnxruntime-genai's "
                       "model builder. qk_output is not set: a tool must set qk_output=2 and "
                       "expose the 4th output (output_qk, [B, num_heads, S, total], after "
                       "softmax). Reference attention: PyTorch softmax(QK^T/sqrt(d) + causal "
                       "mask) with repeat_kv."}
    sites = [{"kind": "causal-self", "node": n} for n in nodes]
    reference = reference_header(config, sites, len(sites))
    reference["runs"] = gqa_runs(model, [7, 12], seed=0)
    write_form(folder, proto, config, reference)
    return config


# ---------------------------------------------------------------------------------------
# fp16: GPT-2 converted to float16


FP16_MAX = float(np.finfo(np.float16).max)
# What tests accept from a float16 run against the float32 reference (reference.json's
# "tolerance"; measured on onnxruntime 1.24.1 CPU: 1.5e-3 attention, 2e-4 logits).
FP16_TOLERANCE = {"attention": 5e-3, "logits": 2e-2}


def half_tensor(tensor):
    """A float32 TensorProto as float16, values clipped to float16's finite range (GPT-2's
    mask value, float32's minimum, becomes -65504 rather than -inf)."""
    a = numpy_helper.to_array(tensor)
    return numpy_helper.from_array(np.clip(a, -FP16_MAX, FP16_MAX).astype(np.float16),
                                   tensor.name)


def to_float16(proto):
    """A float16 copy of a float32 model without subgraphs: float initializers and tensor
    attributes (Constant, ConstantOfShape) become float16, Cast(to=float) casts to float16,
    float graph inputs and outputs are declared float16, and value_info is dropped."""
    proto = copy.deepcopy(proto)
    g = proto.graph
    for init in g.initializer:
        if init.data_type == TensorProto.FLOAT:
            init.CopyFrom(half_tensor(init))
    for node in g.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(half_tensor(attr.t))
            elif node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16
    for vi in list(g.input) + list(g.output):
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            vi.type.tensor_type.elem_type = TensorProto.FLOAT16
    del g.value_info[:]
    onnx.checker.check_model(proto, full_check=True)
    return proto


def with_softmax_outputs(proto, elem_type):
    """A copy of proto whose Softmax outputs, of elem_type, are also graph outputs, after the
    others, in graph order (what the Go side's rewrite does)."""
    proto = copy.deepcopy(proto)
    for node in topological_nodes(proto.graph, {"Softmax"}):
        proto.graph.output.append(helper.make_tensor_value_info(node.output[0], elem_type,
                                                                None))
    return proto


def fp16_differences(proto, runs):
    """Max |onnxruntime - reference| over runs for logits and attention, running the float16
    model on onnxruntime's CPU provider with its Softmax outputs exposed."""
    import onnxruntime as ort  # measured at generation time; `make fixtures` installs it
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    exposed = with_softmax_outputs(proto, TensorProto.FLOAT16)
    sess = ort.InferenceSession(exposed.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    logits_diff = attention_diff = 0.0
    for run in runs:
        logits, *attns = sess.run(None, {"input_ids": np.array([run["ids"]], np.int64)})
        logits_diff = max(logits_diff, float(np.abs(
            logits.astype(np.float32).ravel() - run["logits"]["data"]).max()))
        for a, ref in zip(attns, run["attention"]):
            attention_diff = max(attention_diff, float(np.abs(
                a.astype(np.float32).ravel() - ref["data"]).max()))
    return {"logits": logits_diff, "attention": attention_diff,
            "onnxruntime": ort.__version__, "provider": "CPUExecutionProvider"}


def build_fp16(folder, name="fp16"):
    """Exports a tiny GPT-2 with float16-representable weights, converts it to float16 and
    writes the float32 PyTorch reference of those weights."""
    model = gpt2_tiny(seed=13).half().float().eval()  # weights exactly as float16 holds them
    with tempfile.TemporaryDirectory() as tmp:
        proto = to_float16(export_onnx(model, os.path.join(tmp, "model.onnx"), 17,
                                       ["input_ids"]))
    runs = reference_runs(model, ["input_ids"])
    sites = [{"kind": "causal-self", "node": n.name}
             for n in topological_nodes(proto.graph, {"Softmax"})]
    config = {"model": name, **model_info(model), "opset": 17, "torch": torch.__version__,
              "dtype": "float16", "inputs": ["input_ids"], "outputs": ["logits"],
              "max_abs_diff": fp16_differences(proto, runs),
              "notes": "export.models.GPT2 (fixtures.gpt2_tiny's config, seed 13) with weights "
                       "rounded to float16, exported in float32 (opset 17) and converted by "
                       "export.forms.to_float16: every float tensor, input, output and Softmax "
                       "is float16. Reference: PyTorch float32 on the rounded weights; "
                       "max_abs_diff is onnxruntime's float16 result against it. "
                       "onnxruntime 1.24's CPU provider has no float16 kernel for Softmax "
                       "(nor Add, Mul, Pow, Tanh...): it inserts Casts and runs those ops in "
                       "float32, yet the Softmax outputs it exposes are float16 tensors; "
                       "GPU providers run them in float16."}
    reference = reference_header(config, sites, len(sites))
    reference["runs"] = runs
    reference["tolerance"] = FP16_TOLERANCE
    write_form(folder, proto, config, reference)
    return config


# ---------------------------------------------------------------------------------------
# merged: an optimum-style decoder with and without a key/value cache behind one If node


class CachedAttention(GPT2Attention):
    """GPT2Attention with a key/value cache: forward(x, attention_mask, layer_past=None)
    prepends the past (key, value) [B, H, P, D] and returns (output, probabilities
    [B, H, T, P+T], (key, value) including the past)."""

    def forward(self, x, attention_mask, layer_past=None):
        q, k, v = self.c_attn(x).split(self.d_model, dim=2)
        q, k, v = (split_heads(t, self.n_heads) for t in (q, k, v))
        if layer_past is not None:
            k, v = torch.cat([layer_past[0], k], dim=2), torch.cat([layer_past[1], v], dim=2)
        T, K = q.size(2), k.size(2)
        scores = (q @ k.transpose(-2, -1)) * self.scale
        min_value = torch.full([], torch.finfo(scores.dtype).min, dtype=scores.dtype)
        scores = torch.where(self.bias[:, :, K - T:K, :K], scores, min_value) + attention_mask
        probs = scores.softmax(dim=-1)
        return self.c_proj(merge_heads(probs @ v)), probs, (k, v)


class CachedBlock(GPT2Block):
    """GPT2Block around CachedAttention; forward returns (x, probabilities, present)."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.attn = CachedAttention(cfg)

    def forward(self, x, attention_mask, layer_past=None):
        a, probs, present = self.attn(self.ln_1(x), attention_mask, layer_past)
        x = x + a
        return x + self.mlp(self.ln_2(x)), probs, present


class CachedGPT2(GPT2):
    """export.models.GPT2 with Hugging Face's key/value cache, same modules and arithmetic.
    forward(input_ids, attention_mask, past_key_values=None) returns (logits, presents,
    attns): past_key_values and presents hold per layer a (key, value) pair [B, H, P, D];
    queries sit at positions P..P+T-1 and attention_mask covers all P+T keys; attns[l] is
    [B, H, T, P+T]."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.transformer.h = nn.ModuleList(CachedBlock(cfg) for _ in range(cfg.n_layers))
        self.apply(init_weights)

    def forward(self, input_ids, attention_mask, past_key_values=None):
        P = 0 if past_key_values is None else past_key_values[0][0].size(2)
        pos = torch.arange(P, P + input_ids.size(1), device=input_ids.device)[None, :]
        x = self.transformer.wte(input_ids) + self.transformer.wpe(pos)
        mask = padding_mask(attention_mask, x.dtype)
        presents, attns = [], []
        for i, block in enumerate(self.transformer.h):
            past = None if past_key_values is None else past_key_values[i]
            x, probs, present = block(x, mask, past)
            presents.append(present)
            attns.append(probs)
        return self.lm_head(self.transformer.ln_f(x)), presents, attns


class _FlatCache(nn.Module):
    """CachedGPT2 with flat tensor arguments and results, as the exporter needs them:
    (input_ids, attention_mask, k0, v0, k1, v1, ...) -> (logits, k0, v0, k1, v1, ...)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, *past):
        pairs = list(zip(past[0::2], past[1::2])) or None
        logits, presents, _ = self.model(input_ids, attention_mask, pairs)
        return (logits, *[t for kv in presents for t in kv])


def cache_names(prefix, n_layers):
    """["{prefix}.0.key", "{prefix}.0.value", "{prefix}.1.key", ...]"""
    return [f"{prefix}.{i}.{kv}" for i in range(n_layers) for kv in ("key", "value")]


def export_decoder(model, with_past):
    """TorchScript export of CachedGPT2 with or without past_key_values.* inputs; outputs
    logits and present.* in both cases."""
    cfg = model.config
    past_names = cache_names("past_key_values", cfg.n_layers) if with_past else []
    present_names = cache_names("present", cfg.n_layers)
    B, P, T, D = 2, 3 if with_past else 0, 2, cfg.d_model // cfg.n_heads
    keys = "past_sequence + sequence" if with_past else "sequence"
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: keys},
            "logits": {0: "batch", 1: "sequence"},
            **{n: {0: "batch", 2: "past_sequence"} for n in past_names},
            **{n: {0: "batch", 2: keys} for n in present_names}}
    args = (torch.zeros(B, T, dtype=torch.long), torch.ones(B, P + T, dtype=torch.long),
            *[torch.zeros(B, cfg.n_heads, P, D) for _ in past_names])
    with torch.no_grad():
        return torch_export(_FlatCache(model), args, ["input_ids", "attention_mask"]
                            + past_names, ["logits"] + present_names, axes)


def stays_in_branch(tensor):
    """Optimum keeps scalars and 1-D integer tensors inside the branches."""
    return len(tensor.dims) == 0 or (len(tensor.dims) == 1 and tensor.data_type in
                                     (TensorProto.INT32, TensorProto.INT64))


def share_initializers(graphs):
    """Moves the initializers of graphs (except those that stay_in_branch) to one list,
    one per distinct tensor, renaming the graphs' references; names stay unique. Returns
    the shared list."""
    shared, by_content, taken = [], {}, set()
    for g in graphs:
        rename = {}
        for init in [i for i in g.initializer if not stays_in_branch(i)]:
            key = (init.data_type, tuple(init.dims), numpy_helper.to_array(init).tobytes())
            if key not in by_content:
                name = init.name if init.name not in taken else f"{init.name}_merged"
                tensor = copy.deepcopy(init)
                tensor.name = name
                shared.append(tensor)
                by_content[key] = name
                taken.add(name)
            rename[init.name] = by_content[key]
            g.initializer.remove(init)
        for node in g.node:
            node.input[:] = [rename.get(n, n) for n in node.input]
    kept = {i.name for g in graphs for i in g.initializer}
    assert not kept & taken, f"branch initializers shadow shared ones: {kept & taken}"
    return shared


def merge_decoders(no_past, with_past):
    """One model with an If node on the bool input `use_cache_branch` ([1]): then_branch is
    with_past's graph, else_branch no_past's; both output logits and present.*. Shared
    weights become top-level initializers (optimum's merge_decoders, in small)."""
    no_past, with_past = copy.deepcopy(no_past), copy.deepcopy(with_past)
    shared = share_initializers([with_past.graph, no_past.graph])
    branches = {}
    for key, model, name in (("then_branch", with_past, "with_past"),
                             ("else_branch", no_past, "no_past")):
        g = model.graph
        branches[key] = helper.make_graph(g.node, name, [], g.output, g.initializer)
    outputs = list(with_past.graph.output)
    if_node = helper.make_node("If", ["use_cache_branch"], [o.name for o in outputs],
                               name="optimum::if", **branches)
    use_cache = helper.make_tensor_value_info("use_cache_branch", TensorProto.BOOL, [1])
    graph = helper.make_graph([if_node], "merged", list(with_past.graph.input) + [use_cache],
                              outputs, shared)
    proto = helper.make_model(graph, producer_name="attnscope.export.forms",
                              ir_version=with_past.ir_version,
                              opset_imports=with_past.opset_import)
    onnx.checker.check_model(proto)
    return proto


def merged_model(seed):
    """A CachedGPT2 small enough for two copies of its graph (d_model 32, 4 heads of 8)."""
    torch.manual_seed(seed)
    cfg = GPT2Config(n_layers=2, n_heads=4, d_model=32, vocab_size=64, n_positions=32)
    return sharpen(CachedGPT2(cfg), qk_std=0.3).eval()


def merged_run(model, ids, prefix, use_cache):
    """One reference run of the merged model: ids after a cache PyTorch computed from
    prefix (empty: no past), through the branch use_cache selects."""
    cfg = model.config
    D = cfg.d_model // cfg.n_heads
    with torch.no_grad():
        past = model(prefix, torch.ones_like(prefix))[1] if prefix.size(1) else None
        mask = torch.ones(1, prefix.size(1) + ids.size(1), dtype=torch.long)
        logits, _, attns = model(ids, mask, past)
    flat = ([t for kv in past for t in kv] if past else
            [torch.zeros(1, cfg.n_heads, 0, D)] * (2 * cfg.n_layers))
    inputs = {"input_ids": input_json(ids.numpy()), "attention_mask": input_json(mask.numpy()),
              **{n: input_json(t.numpy()) for n, t in
                 zip(cache_names("past_key_values", cfg.n_layers), flat)},
              "use_cache_branch": input_json(np.array([use_cache]))}
    return {"ids": ids[0].tolist(), "prefix_ids": prefix[0].tolist(),
            "branch": "then_branch" if use_cache else "else_branch", "inputs": inputs,
            "logits": _tensor_json(logits), "attention": [_tensor_json(a) for a in attns]}


def merged_sites(proto):
    """The Softmax nodes of both If branches, each in graph order, branches in the order the
    If node stores them (onnx.helper sorts attributes: else_branch, then then_branch)."""
    if_node = topological_nodes(proto.graph, {"If"})[0]
    return [{"kind": "causal-self", "node": n.name, "branch": attr.name}
            for attr in if_node.attribute
            for n in topological_nodes(attr.g, {"Softmax"})]


def build_merged(folder, name="merged"):
    """Exports CachedGPT2 with and without a cache, merges the two graphs and writes one
    reference run per branch."""
    model = merged_model(seed=14)
    cfg = model.config
    proto = merge_decoders(export_decoder(model, with_past=False),
                           export_decoder(model, with_past=True))
    rng = np.random.RandomState(0)
    ids = [random_ids(rng, cfg.vocab_size, n) for n in (6, 5, 4)]
    runs = [merged_run(model, ids[0], ids[0][:, :0], use_cache=False),
            merged_run(model, ids[2], ids[1], use_cache=True)]
    inputs = [i.name for i in proto.graph.input]
    config = {"model": name, **model_info(model), "opset": OPSET,
              "torch": torch.__version__, "inputs": inputs,
              "outputs": [o.name for o in proto.graph.output],
              "notes": "optimum-style merged decoder: export.models.GPT2 weights exported twice "
                       "(TorchScript, opset 14), without and with past_key_values, and merged "
                       "by export.forms.merge_decoders into one If node on use_cache_branch "
                       "(then_branch: with past, else_branch: without), weights shared as "
                       "top-level initializers. The attention Softmax nodes live inside the "
                       "If branches, with the same names in both. reference.json: sites lists "
                       "both branches' Softmax nodes with a `branch` field; each run names "
                       "its branch and its attention follows that branch's sites. Run 0: "
                       "use_cache_branch false, zero-length past; run 1: use_cache_branch "
                       "true, past of prefix_ids computed by PyTorch, attention [1,H,T,P+T]."}
    reference = reference_header(config, merged_sites(proto), cfg.n_layers)
    reference["runs"] = runs
    write_form(folder, proto, config, reference)
    return config


# ---------------------------------------------------------------------------------------


FORMS = [("encdec", build_encdec), ("gqa", build_gqa), ("fp16", build_fp16),
         ("merged", build_merged)]


def generate(out, log=sys.stderr):
    """Writes every form into out/<name>; returns the folders written."""
    torch.set_num_threads(1)  # steadier on small machines, and one summation order
    written = []
    for name, build in FORMS:
        folder = os.path.join(out, name)
        config = build(folder, name)
        with open(os.path.join(folder, "reference.json")) as f:
            sites = [s["kind"] for s in json.load(f)["sites"]]
        size = os.path.getsize(os.path.join(folder, "model.onnx"))
        print(f"forms: {folder}: {config['architecture']}, inputs {','.join(config['inputs'])}, "
              f"{size // 1024} KiB, sites {' '.join(sites)}", file=log)
        written.append(folder)
    return written


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="testdata/models", help="folder to write the models into")
    args = ap.parse_args(argv)
    generate(args.out)


if __name__ == "__main__":
    main()
