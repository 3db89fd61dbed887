"""Circuits references (circuits.json) for every committed model, and two weight forms that
the circuits tracer must read: a TransformerLens-style einsum model and torch's
nn.MultiheadAttention.

    python -m export.circuit_forms --out testdata/models     (from the repository root;
                                                               `make fixtures`, after the
                                                               other fixture scripts)

writes testdata/models/{tlstyle,mha}/ (model.onnx, config.json, reference.json, circuits.json)
and circuits.json beside every other committed model (testdata/models/*, models/demo,
models/attn1l), plus testdata/circuits/genai-tiny-gpt2-msattn.json when ../shared is there.

Where the parameters come from (circuits.json's "source"):
- "export": the PyTorch model the fixture script builds (seeded, deterministic). Before the
  reference is written, the model is exported again the way its script exports it and every
  initializer of the committed model.onnx must come out identical, so the numbers are those
  of the parameters model.onnx was exported from.
- "recovered": models/demo and models/attn1l were trained and their checkpoints are gone. A
  fresh AttnOnly of the same configuration with scrambled (pairwise distinct) weights is
  exported the same way; each of its initializers is matched to the parameter it equals
  (possibly transposed) and that name map loads the committed file's initializers into
  PyTorch. The PyTorch forward must then reproduce reference.json's logits.
- "dequantized": gpt2tiny-int8 — gpt2tiny's parameters with every quantized MatMul weight
  replaced by int8 * scale from the committed file (W_E stays float; the unembedding is the
  dequantized lm_head MatMul weight, so W_U is no longer exactly W_E^T).
- "initializers": the com.microsoft.Attention model in ../shared, read with numpy only.
"""
import argparse
import copy
import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass

import numpy as np
import onnx
import torch
import torch.nn as nn

from export import circuits_ref as cr

# ---------------------------------------------------------------------------------------
# tlstyle: a TransformerLens-style attention-only model, per-head weights through einsum


@dataclass
class TLStyleConfig:
    n_layers: int = 2
    n_heads: int = 4
    d_model: int = 32
    d_head: int = 8
    vocab_size: int = 64
    n_ctx: int = 32
    layer_norm_eps: float = 1e-5


class TLAttention(nn.Module):
    """TransformerLens's Attention: W_Q/W_K/W_V [H, d_model, d_head], W_O [H, d_head,
    d_model], biases b_Q/b_K/b_V [H, d_head], b_O [d_model], all used through einsum."""

    def __init__(self, cfg):
        super().__init__()
        H, d, D = cfg.n_heads, cfg.d_model, cfg.d_head
        self.W_Q = nn.Parameter(torch.empty(H, d, D))
        self.W_K = nn.Parameter(torch.empty(H, d, D))
        self.W_V = nn.Parameter(torch.empty(H, d, D))
        self.W_O = nn.Parameter(torch.empty(H, D, d))
        self.b_Q = nn.Parameter(torch.zeros(H, D))
        self.b_K = nn.Parameter(torch.zeros(H, D))
        self.b_V = nn.Parameter(torch.zeros(H, D))
        self.b_O = nn.Parameter(torch.zeros(d))
        self.scale = 1.0 / math.sqrt(D)
        self.register_buffer("mask", torch.tril(torch.ones(cfg.n_ctx, cfg.n_ctx,
                                                           dtype=torch.bool)),
                             persistent=False)

    def forward(self, x):
        """x [B, P, d] -> (output [B, P, d], probabilities [B, H, P, P])."""
        T = x.size(1)
        q = torch.einsum("bpd,hdk->bphk", x, self.W_Q) + self.b_Q
        k = torch.einsum("bpd,hdk->bphk", x, self.W_K) + self.b_K
        v = torch.einsum("bpd,hdk->bphk", x, self.W_V) + self.b_V
        scores = torch.einsum("bqhk,bphk->bhqp", q, k) * self.scale
        scores = scores.masked_fill(~self.mask[:T, :T], float("-inf"))
        probs = scores.softmax(dim=-1)
        z = torch.einsum("bhqp,bphk->bqhk", probs, v)
        return torch.einsum("bphk,hkd->bpd", z, self.W_O) + self.b_O, probs


class TLBlock(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.attn = TLAttention(cfg)

    def forward(self, x):
        a, probs = self.attn(self.ln1(x))
        return x + a, probs


class TLStyle(nn.Module):
    """A 2-layer attention-only transformer written as TransformerLens writes its
    HookedTransformer: W_E [vocab, d], W_pos [n_ctx, d], pre-LN blocks of per-head einsum
    attention, a final LayerNorm and an untied W_U [d, vocab] + b_U."""

    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        self.W_E = nn.Parameter(torch.empty(cfg.vocab_size, cfg.d_model))
        self.W_pos = nn.Parameter(torch.empty(cfg.n_ctx, cfg.d_model))
        self.blocks = nn.ModuleList(TLBlock(cfg) for _ in range(cfg.n_layers))
        self.ln_final = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.W_U = nn.Parameter(torch.empty(cfg.d_model, cfg.vocab_size))
        self.b_U = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, input_ids, return_attn=False):
        T = input_ids.size(1)
        x = self.W_E[input_ids] + self.W_pos[:T]
        attns = []
        for block in self.blocks:
            x, probs = block(x)
            attns.append(probs)
        logits = self.ln_final(x) @ self.W_U + self.b_U
        return (logits, attns) if return_attn else logits

    def canonical(self, name, source="export"):
        layers = []
        for i, block in enumerate(self.blocks):
            a = block.attn
            ln = cr.ln_dict(block.ln1, f"blocks.{i}.ln1")
            n = self.config.n_heads
            layers.append({"module": f"blocks.{i}.attn", "kind": "causal-self", "causal": True,
                           "stream": "main", "kv_stream": "main", "n_heads": n,
                           "n_kv_heads": n, "d_head": self.config.d_head,
                           "scale": float(a.scale),
                           **{k: cr._np(getattr(a, k)) for k in
                              ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O")},
                           "ln_q": ln, "ln_kv": ln})
        return cr._model_dict(self, name, "TLStyle", source, cr._np(self.W_E),
                              cr._np(self.W_pos), cr._np(self.W_U), layers,
                              ln_final=cr.ln_dict(self.ln_final, "ln_final"),
                              b_U=cr._np(self.b_U))


def perturb_norms_and_biases(model, std=0.05):
    """LayerNorm scales 1 + N(0, 2 std), biases and LayerNorm shifts N(0, std): trained-looking,
    and no two initializers equal (the exporter would merge them)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and name.endswith("weight"):
                p.copy_(1 + 2 * std * torch.randn_like(p))
            elif p.dim() <= 2 and ("b_" in name.rsplit(".", 1)[-1] or name.endswith("bias")):
                p.copy_(std * torch.randn_like(p))


def tlstyle_model(seed):
    torch.manual_seed(seed)
    model = TLStyle(TLStyleConfig())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("W_Q", "W_K")):
                nn.init.normal_(p, std=0.3)
            elif name.endswith(("W_V", "W_O", "W_U")):
                nn.init.normal_(p, std=0.1)
            elif name in ("W_E", "W_pos"):
                nn.init.normal_(p, std=0.5)
    perturb_norms_and_biases(model)
    return model.eval()


# ---------------------------------------------------------------------------------------
# mha: torch.nn.MultiheadAttention (packed in_proj_weight), batch_first, causal attn_mask


@dataclass
class MHAConfig:
    n_layers: int = 2
    n_heads: int = 4
    d_model: int = 32
    vocab_size: int = 64
    n_ctx: int = 32
    layer_norm_eps: float = 1e-5


class MHABlock(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.attn = nn.MultiheadAttention(cfg.d_model, cfg.n_heads, batch_first=True)

    def forward(self, x, mask):
        h = self.ln1(x)
        a, probs = self.attn(h, h, h, attn_mask=mask, need_weights=True,
                             average_attn_weights=False)
        return x + a, probs


class MHAModel(nn.Module):
    """Pre-LN attention-only decoder around nn.MultiheadAttention (fused in_proj_weight
    [3d, d] + in_proj_bias, out_proj), a causal bool attn_mask, learned positions, a final
    LayerNorm and an unembedding tied to the token embedding."""

    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_embed = nn.Embedding(cfg.n_ctx, cfg.d_model)
        self.blocks = nn.ModuleList(MHABlock(cfg) for _ in range(cfg.n_layers))
        self.ln_final = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        n = cfg.n_ctx  # True above the diagonal: keys a query may not see
        self.register_buffer("future", ~torch.tril(torch.ones(n, n, dtype=torch.bool)),
                             persistent=False)

    def forward(self, input_ids, return_attn=False):
        T = input_ids.size(1)
        pos = torch.arange(T, device=input_ids.device)
        x = self.embed(input_ids) + self.pos_embed(pos)
        attns = []
        for block in self.blocks:
            x, probs = block(x, self.future[:T, :T])
            attns.append(probs)
        logits = self.ln_final(x) @ self.embed.weight.t()
        return (logits, attns) if return_attn else logits

    def canonical(self, name, source="export"):
        layers = []
        for i, block in enumerate(self.blocks):
            ln = cr.ln_dict(block.ln1, f"blocks.{i}.ln1")
            layers.append(cr.mha_layer(f"blocks.{i}.attn", block.attn, True, ln, ln))
        return cr._model_dict(self, name, "MHAModel", source, cr._np(self.embed.weight),
                              cr._np(self.pos_embed.weight), cr._np(self.embed.weight).T,
                              layers, ln_final=cr.ln_dict(self.ln_final, "ln_final"),
                              W_U_tied=True)


def mha_model(seed):
    torch.manual_seed(seed)
    model = MHAModel(MHAConfig())
    d = model.config.d_model
    with torch.no_grad():
        for block in model.blocks:
            nn.init.normal_(block.attn.in_proj_weight[:2 * d], std=0.3)
            nn.init.normal_(block.attn.in_proj_weight[2 * d:], std=0.1)
            nn.init.normal_(block.attn.out_proj.weight, std=0.1)
        nn.init.normal_(model.embed.weight, std=0.5)
        nn.init.normal_(model.pos_embed.weight, std=0.5)
    perturb_norms_and_biases(model)
    return model.eval()


def describe_ops(proto):
    """{op type: count} of the main graph, sorted by op type."""
    ops = {}
    for n in proto.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return dict(sorted(ops.items()))


def einsum_weights(proto):
    """[(Einsum equation, initializer it reads)] for the Einsum nodes reading an initializer."""
    inits = {t.name for t in proto.graph.initializer}
    out = []
    for n in proto.graph.node:
        if n.op_type == "Einsum":
            eq = next(onnx.helper.get_attribute_value(a) for a in n.attribute
                      if a.name == "equation")
            eq = eq.decode() if isinstance(eq, bytes) else eq
            for i in n.input:
                if i in inits:
                    out.append((eq, i))
    return out


def mha_weight_path(proto):
    """A sentence on how the exported graph uses each in_proj_weight: the nodes between the
    initializer and the first activation product."""
    from onnx import numpy_helper
    producer = {o: n for n in proto.graph.node for o in n.output}
    consumers = {}
    for n in proto.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    lines = []
    for t in proto.graph.initializer:
        if len(t.dims) != 2:
            continue
        users = consumers.get(t.name, [])
        lines.append(f"{t.name} {list(t.dims)} -> " + ", ".join(
            f"{u.op_type}({u.name})" for u in users))
    return lines


def build_tlstyle(folder, name="tlstyle"):
    from export.onnx_export import export, _write_json
    model = tlstyle_model(seed=21)
    info = export(model, folder, 17, ["input_ids"], name=name)
    proto = onnx.load(os.path.join(folder, "model.onnx"))
    used = einsum_weights(proto)
    names = {t.name for t in proto.graph.initializer}
    want = {f"model.blocks.{i}.attn.{w}" for i in range(model.config.n_layers)
            for w in ("W_Q", "W_K", "W_V", "W_O")}
    found = {i for _, i in used}
    if not want <= found:
        raise AssertionError(f"{name}: Einsum nodes read {sorted(found)}; expected the "
                             f"per-head weights {sorted(want - found)} too "
                             f"(initializers: {sorted(names)})")
    eqs = sorted({eq for eq, _ in used})
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    config["notes"] = (
        "TransformerLens-style attention-only model (export/circuit_forms.py TLStyle, seed 21): "
        "per-head parameters W_Q/W_K/W_V [H, d_model, d_head], W_O [H, d_head, d_model], "
        "b_Q/b_K/b_V [H, d_head], b_O, all used through torch.einsum; pre-LN (LayerNorm before "
        "each attention and before W_U), learned W_pos, untied W_U [d_model, vocab] + b_U. "
        "TorchScript export, opset 17: the per-head weights stay initializers named "
        "model.blocks.N.attn.W_Q etc., each read directly by an Einsum node (equations "
        + ", ".join(eqs) + "); the scores and probabilities x V are Einsums too. "
        f"Graph ops: {describe_ops(proto)}.")
    config["einsum_weights"] = [{"equation": eq, "initializer": i} for eq, i in used]
    _write_json(os.path.join(folder, "config.json"), config, indent=2)
    return model, info


def build_mha(folder, name="mha"):
    from export.onnx_export import export, _write_json
    model = mha_model(seed=22)
    info = export(model, folder, 17, ["input_ids"], name=name)
    proto = onnx.load(os.path.join(folder, "model.onnx"))
    check_mha_graph(proto, model.config.n_layers, model.config.d_model)
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    config["notes"] = (
        "Pre-LN attention-only decoder around torch.nn.MultiheadAttention (export/"
        "circuit_forms.py MHAModel, seed 22): batch_first, packed in_proj_weight [3d, d] and "
        "in_proj_bias, out_proj, a causal bool attn_mask (so the fused fast path is not taken), "
        "need_weights=True with average_attn_weights=False (reference.json's attention is the "
        "per-head weights MultiheadAttention returns); learned positions, final LayerNorm, "
        "unembedding tied to the token embedding. TorchScript export, opset 17. "
        + MHA_GRAPH_NOTE + f" Graph ops: {describe_ops(proto)}.")
    config["weight_consumers"] = mha_weight_path(proto)
    _write_json(os.path.join(folder, "config.json"), config, indent=2)
    return model, info


MHA_GRAPH_NOTE = (
    "What torch 1.13's exporter makes of it (checked by check_mha_graph): the packed "
    "in_proj_weight is constant-folded into one transposed initializer [d, 3d] "
    "(onnx::MatMul_N; no Slice/Split/Gather on the weight itself) read by one MatMul on the "
    "LayerNorm output (transposed to [T, B, d] first); in_proj_bias [3d] is Added, and the "
    "activation [T, B, 3d] is then cut into q | k | v by three Slice nodes on the last axis "
    "whose bounds are computed at run time (Shape -> Gather -> Add 2 -> Div 3 -> Mul 1/2/3: "
    "torch's chunk(3)); each is Reshaped to [T, B*H, d_head] and Transposed to [B*H, T, "
    "d_head] (heads folded into the batch axis). q alone is divided by sqrt(d_head) (a Div "
    "node) before the scores MatMul; the scores are multiplied by a constant 1.0, the causal "
    "mask (bool -> Where(-inf, 0)) is Added, then Softmax [B*H, T, T] and MatMul with v; "
    "the heads are merged by Transpose + Reshape to [T*B, d] and out_proj is a Gemm "
    "(transB=1) reading out_proj.weight [d, d] and out_proj.bias directly.")


def check_mha_graph(proto, n_layers, d):
    """Asserts the facts MHA_GRAPH_NOTE states about the exported graph."""
    consumers = {}
    for n in proto.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    dims = {t.name: list(t.dims) for t in proto.graph.initializer}
    packed = [t for t, s in dims.items() if s == [d, 3 * d]]
    assert len(packed) == n_layers, f"packed [d, 3d] initializers: {packed}"
    for t in packed:
        (mm,) = consumers[t]
        assert mm.op_type == "MatMul", mm.op_type
        (add,) = consumers[mm.output[0]]
        assert add.op_type == "Add", add.op_type
        slices = [c for c in consumers[add.output[0]] if c.op_type == "Slice"]
        assert len(slices) == 3, [c.op_type for c in consumers[add.output[0]]]
    for i in range(n_layers):
        users = consumers[f"model.blocks.{i}.attn.out_proj.weight"]
        assert [u.op_type for u in users] == ["Gemm"], users


# ---------------------------------------------------------------------------------------
# Checking a rebuilt model against its committed ONNX file


def same_initializers(proto, committed):
    """Raises unless every float initializer of committed has the same name and bytes in
    proto (a fresh export of the rebuilt model); returns how many were compared."""
    ours = {t.name: t for t in proto.graph.initializer}
    n = 0
    for t in committed.graph.initializer:
        o = ours.get(t.name)
        if o is None or o.SerializeToString() != t.SerializeToString():
            raise ValueError(f"initializer {t.name} of the committed model differs from a "
                             f"re-export of the rebuilt model")
        n += 1
    if len(ours) != n:
        raise ValueError(f"re-export has {len(ours)} initializers, committed {n}")
    return n


def _fixture_sources():
    """{name: (build model, export to proto, detail)} for export.fixtures' models."""
    from export import fixtures as fx
    from export.onnx_export import export_onnx

    def onnx_of(opset, inputs):
        def run(model):
            with tempfile.TemporaryDirectory() as tmp:
                return export_onnx(model, os.path.join(tmp, "model.onnx"), opset, inputs)
        return run

    out = {}
    factories = {"attn1l": "export.fixtures.attn_only(1, seed=1)",
                 "attn2l": "export.fixtures.attn_only(2, seed=2)",
                 "gpt2tiny": "export.fixtures.gpt2_tiny(seed=3)",
                 "gpt2tiny-op14": "export.fixtures.gpt2_tiny(seed=3)",
                 "bert": "export.fixtures.bert_tiny(seed=4)"}
    for name, make, opset, inputs in fx.fixtures():
        out[name] = (make, onnx_of(opset, inputs), factories[name])
    return out


def _forms_sources():
    from export import forms as fm
    from export.onnx_export import export_onnx

    def encdec_onnx(model):
        inputs = ["input_ids", "decoder_input_ids"]
        axes = {"input_ids": {0: "batch", 1: "sequence"},
                "decoder_input_ids": {0: "batch", 1: "decoder_sequence"},
                "logits": {0: "batch", 1: "decoder_sequence"}}
        example = (torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long))
        return fm.torch_export(model, example, inputs, ["logits"], axes)

    def fp16_onnx(model):
        with tempfile.TemporaryDirectory() as tmp:
            return fm.to_float16(export_onnx(model, os.path.join(tmp, "model.onnx"), 17,
                                             ["input_ids"]))

    def merged_onnx(model):
        return fm.merge_decoders(fm.export_decoder(model, with_past=False),
                                 fm.export_decoder(model, with_past=True))

    def step_onnx(model):
        from export import fixtures_fp16_step as fs
        return fm.to_float16(fs.export_step(model))

    def step_model():
        from export import fixtures_fp16_step as fs
        return fs.step_model(seed=15)

    return {
        "encdec": (lambda: fm.encdec_model(seed=11), encdec_onnx,
                   "export.forms.encdec_model(seed=11)"),
        "gqa": (lambda: fm.gqa_model(seed=12), lambda m: fm.gqa_graph(m)[0],
                "export.forms.gqa_model(seed=12)"),
        "fp16": (lambda: fm.gpt2_tiny(seed=13).half().float().eval(), fp16_onnx,
                 "export.fixtures.gpt2_tiny(seed=13) rounded to float16 "
                 "(export.forms.build_fp16); the ONNX weights are those float16 values"),
        "merged": (lambda: fm.merged_model(seed=14), merged_onnx,
                   "export.forms.merged_model(seed=14)"),
        "fp16step": (step_model, step_onnx,
                     "export.fixtures_fp16_step.step_model(seed=15), weights rounded to "
                     "float16"),
    }


def exported_reference(folder, name, make, to_onnx, detail):
    """circuits.json's dict for a fixture whose script rebuilds it deterministically."""
    torch.manual_seed(0)
    model = make().eval()
    committed = onnx.load(os.path.join(folder, "model.onnx"))
    n = same_initializers(to_onnx(model), committed)
    canon = cr.canonical(model, name, "export")
    return cr.reference(canon, f"PyTorch parameters of {detail}: the model model.onnx was "
                               f"exported from, rebuilt by its seeded script; re-exporting it "
                               f"reproduces all {n} initializers of the committed model.onnx "
                               f"byte for byte")


# ---------------------------------------------------------------------------------------
# Recovering trained models' parameters from their ONNX files (models/demo, models/attn1l)


def fingerprint_map(model, to_onnx, require_all=True):
    """{initializer name: (parameter name, transposed)} for the way to_onnx exports model's
    architecture: a scrambled copy (every parameter distinct) is exported and each
    initializer matched to the parameter it equals."""
    probe = cr.scramble(copy.deepcopy(model))
    mapping = cr.param_map(probe, to_onnx(probe))
    missing = {n for n, _ in model.named_parameters()} - {p for p, _ in mapping.values()}
    if require_all and missing:
        raise ValueError(f"parameters with no initializer in the export: {sorted(missing)}")
    return mapping


def reference_logits_diff(model, folder):
    """Max |PyTorch logits - reference.json logits| over its runs (input_ids only)."""
    with open(os.path.join(folder, "reference.json")) as f:
        ref = json.load(f)
    worst = 0.0
    for run in ref["runs"]:
        with torch.no_grad():
            logits = model(torch.tensor([run["ids"]]))
        worst = max(worst, float(np.abs(logits.double().numpy().ravel()
                                        - np.asarray(run["logits"]["data"])).max()))
    return worst, len(ref["runs"])


def recovered_attn_only(folder, name):
    """An AttnOnly holding the committed model.onnx's weights (config from config.json)."""
    from export.models import AttnOnly, AttnOnlyConfig
    from export.onnx_export import export_onnx
    with open(os.path.join(folder, "config.json")) as f:
        c = json.load(f)
    cfg = AttnOnlyConfig(n_layers=c["n_layers"], n_heads=c["n_heads"], d_model=c["d_model"],
                         d_head=c["d_head"], vocab_size=c["vocab_size"],
                         n_ctx=c["n_positions"], mlp=c.get("mlp", False),
                         layernorm=c.get("layernorm", False))
    model = AttnOnly(cfg).eval()

    def to_onnx(m):
        with tempfile.TemporaryDirectory() as tmp:
            return export_onnx(m, os.path.join(tmp, "model.onnx"), c["opset"], c["inputs"])

    mapping = fingerprint_map(model, to_onnx)
    committed = onnx.load(os.path.join(folder, "model.onnx"))
    names = {t.name for t in committed.graph.initializer}
    if set(mapping) - names:
        raise ValueError(f"{folder}: the committed file lacks {sorted(set(mapping) - names)}")
    cr.load_from_onnx(model, committed, mapping)
    diff, runs = reference_logits_diff(model, folder)
    if diff > 1e-4:
        raise ValueError(f"{folder}: recovered parameters give logits {diff} away from "
                         f"reference.json")
    detail = (f"recovered from the committed model.onnx (the training checkpoint is gone): a "
              f"fresh AttnOnly of config.json's configuration with scrambled weights was "
              f"exported the same way (TorchScript, opset {c['opset']}); each of its "
              f"{len(mapping)} initializers was matched to the PyTorch parameter it equals "
              f"(transposed for nn.Linear weights) and that name map loaded the committed "
              f"initializers into PyTorch; PyTorch then reproduces reference.json's logits "
              f"({runs} runs) within {diff:.2g}")
    return model, detail


# ---------------------------------------------------------------------------------------
# gpt2tiny-int8: dequantized weights


def dequantized_gpt2(root):
    """(canonical dict, detail) of gpt2tiny-int8: gpt2tiny's PyTorch parameters with every
    weight that export/quantize.py quantized replaced by int8 * scale from the committed
    file; the unembedding is the dequantized lm_head weight (W_E, the Gather, stays float)."""
    from onnx import numpy_helper
    from export import fixtures as fx
    float_dir, int8_dir = os.path.join(root, "gpt2tiny"), os.path.join(root, "gpt2tiny-int8")
    make, to_onnx, _ = _fixture_sources()["gpt2tiny"]
    model = make().eval()
    float_proto = onnx.load(os.path.join(float_dir, "model.onnx"))
    same_initializers(to_onnx(model), float_proto)
    mapping = fingerprint_map(model, to_onnx)
    weight_of = {n.name: n.input[1] for n in float_proto.graph.node if n.op_type == "MatMul"}
    q = onnx.load(os.path.join(int8_dir, "model.onnx"))
    arrays = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    # Float initializers the quantizer kept must still be gpt2tiny's.
    cr.check_params_match(model, q, {k: v for k, v in mapping.items() if k in arrays})
    model = model.double()  # int8 * float32 scale is kept exactly in float64
    params = dict(model.named_parameters())
    W_U, n, worst = None, 0, 0.0
    for node in q.graph.node:
        if node.op_type != "MatMulInteger":
            continue
        p = node.name[:-len("/mmi")]
        w = arrays[p + "/w"].astype(np.float64) * float(arrays[p + "/w_scale"])
        assert int(arrays[p + "/w_zero"]) == 0
        pname, transposed = mapping[weight_of[p[:-len("/quant")]]]
        value = w.T if transposed else w
        worst = max(worst, float(np.abs(value - params[pname].detach().numpy()).max()))
        n += 1
        if pname == "transformer.wte.weight":  # the tied lm_head's own MatMul weight
            W_U = w
            continue
        with torch.no_grad():
            params[pname].copy_(torch.from_numpy(np.ascontiguousarray(value)))
    canon = cr.canonical(model, "gpt2tiny-int8", "dequantized")
    if W_U is None:
        raise ValueError("gpt2tiny-int8: no quantized lm_head MatMul")
    canon["W_U"], canon["W_U_tied"] = W_U, False
    detail = (f"gpt2tiny's PyTorch parameters (export.fixtures.gpt2_tiny(seed=3), checked "
              f"against the float model.onnx and against every float initializer the int8 "
              f"file kept) with the {n} weights export/quantize.py quantized replaced by "
              f"int8 * w_scale (zero point 0) from the committed file, in float64: c_attn, "
              f"c_proj, MLP and lm_head. W_E (the Gather) stays float; W_U is the dequantized "
              f"lm_head MatMul weight, so it is no longer exactly W_E^T (W_U_tied false). "
              f"Largest |dequantized - float| weight difference: {worst:.3g}")
    return canon, detail


# ---------------------------------------------------------------------------------------
# genai-tiny-gpt2-msattn: com.microsoft.Attention, from initializers with numpy


def ms_attention_canonical(proto, name):
    """Canonical dict of a GPT-2 fused by onnxruntime.transformers: EmbedLayerNormalization
    (W_E, W_pos, the first ln_1), com.microsoft.Attention per layer (weight [hidden,
    3*hidden] = q | k | v, bias [3*hidden], num_heads; scale 1/sqrt(head size) unless the
    `scale` attribute is set; unidirectional = causal), a MatMul after it (W_O = c_proj),
    SkipLayerNormalization before each later attention (its gamma/beta/epsilon: ln_1) and
    before the lm_head MatMul (ln_f)."""
    from onnx import numpy_helper
    arrays = {t.name: numpy_helper.to_array(t).astype(np.float64)
              for t in proto.graph.initializer}
    producer = {o: n for n in proto.graph.node for o in n.output if o}
    consumers = {}
    for n in proto.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def attr(node, key, default=None):
        for a in node.attribute:
            if a.name == key:
                return onnx.helper.get_attribute_value(a)
        return default

    def ln_of(tensor):
        n = producer[tensor]
        if n.op_type == "EmbedLayerNormalization":
            g, b = n.input[5], n.input[6]
        elif n.op_type in ("SkipLayerNormalization", "LayerNormalization"):
            g, b = (n.input[2], n.input[3]) if n.op_type == "SkipLayerNormalization" else \
                (n.input[1], n.input[2])
        else:
            raise ValueError(f"{tensor} comes from {n.op_type}, not a LayerNorm")
        return {"kind": "layernorm", "gamma": arrays[g], "beta": arrays.get(b),
                "eps": float(attr(n, "epsilon", 1e-12)), "module": f"{n.name} ({n.op_type})"}

    layers, embed = [], None
    for n in proto.graph.node:
        if n.op_type == "EmbedLayerNormalization":
            embed = n
        if n.op_type != "Attention" or n.domain != "com.microsoft":
            continue
        H = int(attr(n, "num_heads"))
        w, b = arrays[n.input[1]], arrays[n.input[2]]
        (o,) = [c for c in consumers[n.output[0]] if c.op_type == "MatMul"]
        D = w.shape[1] // 3 // H
        ln = ln_of(n.input[0])
        scale = attr(n, "scale", 0.0) or 1.0 / math.sqrt(D)
        layers.append(cr.packed_layer(n.name, w, b, arrays[o.input[1]], None, H, scale,
                                      bool(attr(n, "unidirectional", 0)), ln, ln))
    (head,) = [n for n in proto.graph.node if "logits" in n.output]
    canon = cr._model_dict(None, name, "GPT2 (com.microsoft.Attention)", "initializers",
                           arrays[embed.input[2]], arrays[embed.input[3]],
                           arrays[head.input[1]], layers, ln_final=ln_of(head.input[0]))
    canon["b_U"] = None
    return canon


MSATTN = "fixtures/genai-tiny-gpt2-msattn/past.onnx"


def write_msattn(repo, log=sys.stderr):
    """testdata/circuits/genai-tiny-gpt2-msattn.json from ../shared's file, if present."""
    src = os.path.join(repo, "..", "shared", MSATTN)
    if not os.path.exists(src):
        print(f"circuits: {src} is not present, genai-tiny-gpt2-msattn skipped", file=log)
        return None
    canon = ms_attention_canonical(onnx.load(src), "genai-tiny-gpt2-msattn")
    ref = cr.reference(canon, (
        f"numpy from the initializers of ../shared/{MSATTN} (onnxruntime.transformers 1.17 "
        "fusion of hf-internal-testing/tiny-random-gpt2): com.microsoft.Attention's packed "
        "weight [hidden, 3*hidden] = q | k | v columns, each head-major (num_heads=4, head "
        "size 8), bias [3*hidden] likewise, scale 1/sqrt(8), unidirectional=1 (causal); W_O is "
        "the MatMul reading the Attention output (c_proj; its bias went into the next "
        "SkipLayerNormalization and is not part of W_OV); the LN feeding layer 0 is "
        "EmbedLayerNormalization's gamma/beta, later layers' the SkipLayerNormalization "
        "before them; W_E / W_pos are EmbedLayerNormalization's word / position embeddings; "
        "W_U is the lm_head MatMul weight, behind the last SkipLayerNormalization (ln_f). "
        "All LayerNorms share one deduplicated gamma/beta pair in this file."))
    out = os.path.join(repo, "testdata", "circuits", "genai-tiny-gpt2-msattn.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    cr.write_circuits(out, ref)
    print(f"circuits: {out}: {len(ref['heads'])} heads", file=log)
    return out


# ---------------------------------------------------------------------------------------
# Writing every model's circuits.json


def _write(path, ref, log):
    cr.write_circuits(path, ref)
    print(f"circuits: {path}: {len(ref['heads'])} heads, {len(ref['composition'])} pairs, "
          f"source {ref['source']}", file=log)
    return path


NEW_FORMS = [("tlstyle", build_tlstyle), ("mha", build_mha)]
TRAINED = ["demo", "attn1l"]  # models/<name>, recovered from ONNX


def generate(out, log=sys.stderr, repo=None):
    """Builds the new forms into out/<name> with their circuits.json (at export time), then
    writes circuits.json for every other committed model; returns the paths written."""
    torch.set_num_threads(1)
    written = []
    for name, build in NEW_FORMS:
        folder = os.path.join(out, name)
        model, info = build(folder, name)
        assert info["softmax_nodes"] == info["n_layers"], info
        size = os.path.getsize(os.path.join(folder, "model.onnx"))
        print(f"circuit_forms: {folder}: {size // 1024} KiB, attention "
              f"{sorted(set(info['attention_chains']))}", file=log)
        ref = cr.reference(cr.canonical(model, name, "export"),
                           f"PyTorch parameters of export.circuit_forms.{build.__name__}'s "
                           f"model, written at export time")
        written.append(_write(os.path.join(folder, "circuits.json"), ref, log))
    written += write_all_circuits(out, log=log, repo=repo)
    return written


def write_all_circuits(root, only=None, log=sys.stderr, repo=None):
    """Writes circuits.json for the committed models under root (testdata/models: those the
    fixture scripts rebuild, and gpt2tiny-int8), models/demo and models/attn1l under repo
    (default: root's grandparent) and testdata/circuits/genai-tiny-gpt2-msattn.json;
    returns the paths written."""
    torch.set_num_threads(1)
    repo = repo or os.path.dirname(os.path.dirname(os.path.abspath(root)))
    sources = {**_fixture_sources(), **_forms_sources()}
    written = []
    if not only or "gpt2tiny-int8" in only:
        canon, detail = dequantized_gpt2(root)
        written.append(_write(os.path.join(root, "gpt2tiny-int8", "circuits.json"),
                              cr.reference(canon, detail), log))
    for name in TRAINED:
        if only and name not in only:
            continue
        folder = os.path.join(repo, "models", name)
        model, detail = recovered_attn_only(folder, name)
        written.append(_write(os.path.join(folder, "circuits.json"),
                              cr.reference(cr.canonical(model, name, "recovered"), detail),
                              log))
    if not only or "genai-tiny-gpt2-msattn" in only:
        p = write_msattn(repo, log)
        if p:
            written.append(p)
    for name, (make, to_onnx, detail) in sources.items():
        if only and name not in only:
            continue
        folder = os.path.join(root, name)
        if not os.path.exists(os.path.join(folder, "model.onnx")):
            print(f"circuits: {folder}: no model.onnx, skipped", file=log)
            continue
        ref = exported_reference(folder, name, make, to_onnx, detail)
        written.append(_write(os.path.join(folder, "circuits.json"), ref, log))
    return written


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="testdata/models", help="the committed test models")
    ap.add_argument("--only", nargs="*", help="only these model names; circuits.json "
                    "only (the new forms are not rebuilt)")
    args = ap.parse_args(argv)
    if args.only:
        write_all_circuits(args.out, only=args.only)
    else:
        generate(args.out)


if __name__ == "__main__":
    main()
