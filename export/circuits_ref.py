"""Numpy reference for circuits from weights (issue 13; /work/scratch/circuits-spec.md).

    python -m export.circuits_ref --models testdata/models      (circuits.json for fixtures)

The Go circuits code (onnxgraph.TraceWeights + circuits) is tested against the numbers this
module computes from a model's PyTorch parameters, in float64. Two steps:

  canon = canonical(model)     PyTorch module -> per-head weights in TransformerLens's shapes
  ref   = reference(canon)     canonical weights -> circuits.json's dict

Conventions (TransformerLens, row vectors): q = x W_Q[h] + b_Q[h]; the layer writes
sum_h z[h] W_O[h] + b_O. W_QK = W_Q W_K^T and W_OV = W_V W_O per head, after folding the
LayerNorm scale that feeds the projections (fold_ln, centring ignored): W <- diag(gamma) W,
b <- b + beta W; the LN before the unembedding: W_U <- diag(gamma_f) W_U. Biases never enter
W_QK / W_OV.

Canonical dict (numpy float64 arrays; None where absent)
-------------------------------------------------------
{"model", "architecture", "source", "d_model", "vocab_size",
 "W_E": [vocab, d_model], "W_pos": [n_pos, d_model] | None, "W_pos_reason": str | None,
 "W_U": [d_model, vocab] | None, "W_U_reason": str | None, "W_U_tied": bool,
 "b_U": [vocab] | None,
 "ln_final": LN | None,                        LN = {"kind": "layernorm"|"rmsnorm",
                                                      "gamma": [d], "beta": [d] | None,
                                                      "eps": float, "module": str}
 "layers": [ {                                 one per attention site, in the order the
                                               Go side numbers them (L0, L1, ...)
    "module": str, "kind": "self"|"causal-self"|"cross", "causal": bool,
    "stream": "main"|"encoder"|"decoder",     the residual stream the layer writes
    "kv_stream": stream its keys/values read (differs from "stream" for cross-attention),
    "n_heads": H, "n_kv_heads": KV, "d_head": D, "scale": float (score = scale * q.k),
    "W_Q": [H, d, D], "W_K": [KV, d, D], "W_V": [KV, d, D], "W_O": [H, D, d],
    "b_Q": [H, D] | None, "b_K": [KV, D] | None, "b_V": [KV, D] | None, "b_O": [d] | None,
    "ln_q": LN | None,   the LN whose output the Q projection reads
    "ln_kv": LN | None,  the LN whose output the K/V projections read
 } ]}
Head h reads K/V head h // (H / KV) (GQA).

circuits.json (reference(canon), floats as JSON numbers at full precision, null for NaN)
---------------------------------------------------------------------------------------
{
 "schema": "attnscope.circuits/1",
 "model": str, "architecture": str,
 "source": "export" | "recovered" | "dequantized" | "initializers",
 "source_detail": str,                how the parameters were obtained
 "conventions": str,
 "d_model": int, "vocab_size": int,
 "embedding": {"W_E": bool, "W_pos": bool, "W_pos_reason": str|null, "W_U": bool,
               "W_U_reason": str|null, "W_U_tied": bool, "ln_final": LNINFO|null},
 "layers": [{"layer": l, "module", "kind", "causal", "stream", "kv_stream", "n_heads",
             "n_kv_heads", "d_head", "scale", "ln_q": LNINFO|null, "ln_kv": LNINFO|null}],
            LNINFO = {"kind", "eps", "module"}
 "heads": [{"layer": l, "head": h, "name": "L{l}H{h}", "kv_head": int,
            "ov_copying": float|null, "ov_copying_reason": str|null,
            "qk_prev_token": float|null, "qk_self": float|null, "qk_reason": str|null,
            "qk_positions": n (positions used, min(n_pos, 64)) | null,
            "top_ov": [[source_id, output_id, value], ...20] | null}],
 "composition": [{"from_layer", "from_head", "to_layer", "to_head",
                  "q_comp": float|null, "k_comp": float|null, "v_comp": float|null}],
      one entry per (earlier head, later head) whose layers share a residual stream; a
      component is null where the later layer's Q (or K/V) does not read that stream
      (cross-attention: Q reads the decoder stream, K/V the encoder's). Encoder-decoder
      "layers" are attention sites: decoder layer i's self-attention precedes its
      cross-attention (to_layer = from_layer + 1 pairs with "same_block": true).
 "composition_pairs_rule": str,
 "baseline": {"method": str, "draws": 500, "seed": 0,
              "composition": [{"d_model", "d_head_from", "d_head_to",
                               "q": {"mean", "std"}, "k": {...}, "v": {...}}],
              "ov_copying": [{"vocab", "d_model", "d_head", "mean", "std"}] | [] },
 "skip_trigrams": {"L0H0": [[dest_id, source_id, qk_value, top_output_id], ...20], ...}
                  | null (models with more than one layer),
 "skip_trigram_definition": str,
 "weights": {                      checksums of row-major [rows, cols] matrices:
                                   C = {"sum": sum w, "frob": sqrt(sum w^2),
                                        "pos": sum_ij w_ij * ((31 i + 7 j) mod 13)}
    "W_E": C, "W_pos": C|null, "W_U": {"unfolded": C, "folded": C}|null,
    "layers": [{"layer": l, "heads": [{"head": h, "kv_head": k,
        "W_Q": {"unfolded": C, "folded": C}, "W_K": ..., "W_V": ...,  [d_model, d_head]
        "W_O": {"unfolded": C, "folded": C},                          [d_head, d_model]
        "b_Q": {"unfolded": C, "folded": C} | null, "b_K", "b_V"}],    [1, d_head]
        "b_O": C | null}]}                                           [1, d_model]
}
W_O is never folded (its "folded" equals "unfolded"); W_K/W_V of a GQA layer are listed
under every query head that reads them.
"""
import argparse
import json
import math
import os
import sys

import numpy as np

SCHEMA = "attnscope.circuits/1"
TOP_K = 20
MAX_POS = 64
BASELINE_DRAWS = 500
BASELINE_SEED = 0
CONVENTIONS = (
    "TransformerLens row-vector conventions: W_QK = W_Q W_K^T, W_OV = W_V W_O per head; "
    "the LayerNorm/RMSNorm scale feeding Q/K/V is folded into W_Q/W_K/W_V (W <- diag(gamma) W, "
    "b <- b + beta W) and the final norm's into W_U (fold_ln, centring ignored); biases are "
    "not part of W_QK/W_OV. ov_copying = sum Re(lambda) / sum |lambda| over the eigenvalues of "
    "W_E W_OV W_U (computed as those of W_O W_U W_E W_V). Positional QK: rows of W_pos[:n], "
    "n = min(n_pos, 64), normalised without affine when the layer reads through a norm, "
    "S = scale * x W_Q W_K^T x^T (folded, no biases), causal mask where the layer is causal, "
    "softmax over keys; qk_prev_token = mean_{i>=1} A[i,i-1], qk_self = mean_i A[i,i]. "
    "Composition = ||W_OV^A R||_F / (||W_OV^A||_F ||R||_F), R = W_QK^B (q), W_QK^B^T (k), "
    "W_OV^B (v).")
SKIP_TRIGRAM_DEFINITION = (
    "largest entries of the token QK circuit W_E W_QK W_E^T (folded W_QK, raw W_E, no score "
    "scale, no biases, no positions): rows = destination (query) token, columns = source (key) "
    "token; top_output = argmax over outputs of row `source` of the full OV circuit "
    "W_E W_OV W_U. Entries: [dest_id, source_id, qk_value, top_output_id].")


# ---------------------------------------------------------------------------------------
# From PyTorch modules to the canonical dict


def _np(t):
    return None if t is None else t.detach().to("cpu").double().numpy().copy()


def ln_dict(module, name, kind="layernorm"):
    """An nn.LayerNorm as the canonical LN dict."""
    return {"kind": kind, "gamma": _np(module.weight),
            "beta": None if getattr(module, "bias", None) is None else _np(module.bias),
            "eps": float(module.eps), "module": name}


def heads_in(w, n_heads):
    """A projection [d_model, H*D] (x @ w, columns head-major) -> [H, d_model, D]."""
    d, inner = w.shape
    return w.reshape(d, n_heads, inner // n_heads).transpose(1, 0, 2)


def heads_out(w, n_heads):
    """An output projection [H*D, d_model] (z_flat @ w) -> [H, D, d_model]."""
    inner, d = w.shape
    return w.reshape(n_heads, inner // n_heads, d)


def bias_heads(b, n_heads):
    return None if b is None else b.reshape(n_heads, -1)


def linear_layer(module_name, q, k, v, o, n_heads, n_kv_heads, scale, causal, ln_q, ln_kv,
                 kind=None, stream="main", kv_stream=None):
    """A layer from nn.Linear-like (weight [out, in], bias [out]) q/k/v/o modules."""
    def w(m):
        return _np(m.weight).T  # x @ W^T

    def b(m):
        return _np(getattr(m, "bias", None))

    return {"module": module_name, "kind": kind or ("causal-self" if causal else "self"),
            "causal": causal, "stream": stream, "kv_stream": kv_stream or stream,
            "n_heads": n_heads, "n_kv_heads": n_kv_heads,
            "d_head": w(q).shape[1] // n_heads, "scale": float(scale),
            "W_Q": heads_in(w(q), n_heads), "W_K": heads_in(w(k), n_kv_heads),
            "W_V": heads_in(w(v), n_kv_heads), "W_O": heads_out(w(o), n_heads),
            "b_Q": bias_heads(b(q), n_heads), "b_K": bias_heads(b(k), n_kv_heads),
            "b_V": bias_heads(b(v), n_kv_heads), "b_O": b(o),
            "ln_q": ln_q, "ln_kv": ln_kv}


def packed_layer(module_name, w_qkv, b_qkv, w_o, b_o, n_heads, scale, causal, ln_q, ln_kv,
                 kind=None, stream="main", kv_stream=None):
    """A layer from a packed projection: x @ w_qkv [d, 3d] (+ b_qkv [3d]) = q | k | v, each
    head-major; output z_flat @ w_o [d, d] + b_o."""
    d = w_qkv.shape[1] // 3
    W = [w_qkv[:, i * d:(i + 1) * d] for i in range(3)]
    B = [None if b_qkv is None else b_qkv[i * d:(i + 1) * d] for i in range(3)]
    return {"module": module_name, "kind": kind or ("causal-self" if causal else "self"),
            "causal": causal, "stream": stream, "kv_stream": kv_stream or stream,
            "n_heads": n_heads, "n_kv_heads": n_heads, "d_head": d // n_heads,
            "scale": float(scale),
            "W_Q": heads_in(W[0], n_heads), "W_K": heads_in(W[1], n_heads),
            "W_V": heads_in(W[2], n_heads), "W_O": heads_out(w_o, n_heads),
            "b_Q": bias_heads(B[0], n_heads), "b_K": bias_heads(B[1], n_heads),
            "b_V": bias_heads(B[2], n_heads), "b_O": b_o, "ln_q": ln_q, "ln_kv": ln_kv}


def _model_dict(model, name, architecture, source, W_E, W_pos, W_U, layers, ln_final=None,
                W_U_reason=None, W_pos_reason=None, W_U_tied=False, b_U=None):
    return {"model": name, "architecture": architecture, "source": source,
            "d_model": int(W_E.shape[1]), "vocab_size": int(W_E.shape[0]),
            "W_E": W_E, "W_pos": W_pos, "W_pos_reason": W_pos_reason,
            "W_U": W_U, "W_U_reason": W_U_reason, "W_U_tied": W_U_tied, "b_U": b_U,
            "ln_final": ln_final, "layers": layers}


def canon_attn_only(model, name, source="export"):
    """export.models.AttnOnly (pre-LN when cfg.layernorm)."""
    cfg = model.config
    layers = []
    for i, block in enumerate(model.blocks):
        ln = ln_dict(block.ln1, f"blocks.{i}.ln1") if cfg.layernorm else None
        a = block.attn
        layers.append(linear_layer(f"blocks.{i}.attn", a.W_Q, a.W_K, a.W_V, a.W_O,
                                   cfg.n_heads, cfg.n_heads, a.scale, True, ln, ln))
    return _model_dict(model, name, "AttnOnly", source, _np(model.embed.weight),
                       _np(model.pos_embed.weight), _np(model.unembed.weight).T, layers,
                       ln_final=ln_dict(model.ln_final, "ln_final") if cfg.layernorm else None)


def canon_gpt2(model, name, source="export"):
    """export.models.GPT2 and export.forms.CachedGPT2 (fused c_attn, tied lm_head)."""
    cfg = model.config
    t = model.transformer
    layers = []
    for i, block in enumerate(t.h):
        ln = ln_dict(block.ln_1, f"transformer.h.{i}.ln_1")
        a = block.attn
        layers.append(packed_layer(f"transformer.h.{i}.attn", _np(a.c_attn.weight).T,
                                   _np(a.c_attn.bias), _np(a.c_proj.weight).T,
                                   _np(a.c_proj.bias), cfg.n_heads, a.scale, True, ln, ln))
    tied = model.lm_head.weight is t.wte.weight
    return _model_dict(model, name, type(model).__name__, source, _np(t.wte.weight),
                       _np(t.wpe.weight), _np(model.lm_head.weight).T, layers,
                       ln_final=ln_dict(t.ln_f, "transformer.ln_f"), W_U_tied=tied)


def canon_bert(model, name, source="export"):
    """export.models.BertEncoder: post-LN, so layer 0 reads ln_embed's output and layer l
    reads layer l-1's ln_2 output; the MLM head is nonlinear, so W_U is unavailable."""
    cfg = model.config
    layers = []
    for i, layer in enumerate(model.layer):
        ln = (ln_dict(model.ln_embed, "ln_embed") if i == 0 else
              ln_dict(model.layer[i - 1].ln_2, f"layer.{i - 1}.ln_2"))
        a = layer.attention
        layers.append(linear_layer(f"layer.{i}.attention", a.query, a.key, a.value, a.dense,
                                   cfg.n_heads, cfg.n_heads, a.scale, False, ln, ln))
    return _model_dict(model, name, "BertEncoder", source, _np(model.word_embeddings.weight),
                       _np(model.position_embeddings.weight), None, layers,
                       W_U_reason="the MLM head is nonlinear (dense -> GELU -> LayerNorm "
                                  "before the tied decoder): no linear unembedding of the "
                                  "residual stream")


def mha_layer(module_name, mha, causal, ln_q, ln_kv, kind=None, stream="main",
              kv_stream=None):
    """An nn.MultiheadAttention (packed in_proj_weight [3d, d], batch-first or not): q is
    scaled by 1/sqrt(head_dim) inside F.multi_head_attention_forward."""
    H = mha.num_heads
    d = mha.embed_dim
    return packed_layer(module_name, _np(mha.in_proj_weight).T, _np(mha.in_proj_bias),
                        _np(mha.out_proj.weight).T, _np(mha.out_proj.bias), H,
                        1.0 / math.sqrt(d // H), causal, ln_q, ln_kv, kind=kind,
                        stream=stream, kv_stream=kv_stream)


def canon_encdec(model, name, source="export"):
    """export.forms.EncDec: post-LN nn.TransformerEncoder/Decoder, attention sites in graph
    order: encoder self-attention layers, then per decoder layer its causal self-attention and
    its cross-attention. Encoder layer 0 and decoder layer 0's self-attention read the raw
    embeddings; later ones read the previous layer's norm2 (encoder) / norm3 (decoder); the
    cross-attention's Q reads its own layer's norm1 output, its K/V the encoder's final norm."""
    layers = []
    enc = model.encoder.layers
    for i, layer in enumerate(enc):
        ln = None if i == 0 else ln_dict(enc[i - 1].norm2, f"encoder.layers.{i - 1}.norm2")
        layers.append(mha_layer(f"encoder.layers.{i}.self_attn", layer.self_attn, False, ln, ln,
                                stream="encoder"))
    memory_ln = ln_dict(model.encoder.norm, "encoder.norm")
    dec = model.decoder.layers
    for i, layer in enumerate(dec):
        ln = None if i == 0 else ln_dict(dec[i - 1].norm3, f"decoder.layers.{i - 1}.norm3")
        layers.append(mha_layer(f"decoder.layers.{i}.self_attn", layer.self_attn, True, ln, ln,
                                stream="decoder"))
        layers.append(mha_layer(f"decoder.layers.{i}.multihead_attn", layer.multihead_attn,
                                False, ln_dict(layer.norm1, f"decoder.layers.{i}.norm1"),
                                memory_ln, kind="cross", stream="decoder",
                                kv_stream="encoder"))
    return _model_dict(model, name, "EncDec", source, _np(model.embed.weight),
                       _np(model.pos_embed.weight), _np(model.embed.weight).T, layers,
                       ln_final=ln_dict(model.decoder.norm, "decoder.norm"), W_U_tied=True)


def canon_gqa(model, name, source="export"):
    """export.forms.GQADecoder: pre-LN, q/k/v/o_proj without biases, untied lm_head."""
    cfg = model.config
    layers = []
    for i, layer in enumerate(model.layers):
        ln = ln_dict(layer.ln_1, f"layers.{i}.ln_1")
        layers.append(linear_layer(f"layers.{i}", layer.q_proj, layer.k_proj, layer.v_proj,
                                   layer.o_proj, cfg.n_heads, cfg.n_kv_heads,
                                   1.0 / math.sqrt(cfg.d_head), True, ln, ln))
    return _model_dict(model, name, "GQADecoder", source, _np(model.embed.weight),
                       _np(model.pos_embed.weight), _np(model.lm_head.weight).T, layers,
                       ln_final=ln_dict(model.ln_f, "ln_f"))


def canonical(model, name, source="export"):
    """The canonical dict of any model class this project exports."""
    kind = type(model).__name__
    if kind == "AttnOnly":
        return canon_attn_only(model, name, source)
    if kind in ("GPT2", "CachedGPT2"):
        return canon_gpt2(model, name, source)
    if kind == "BertEncoder":
        return canon_bert(model, name, source)
    if kind == "EncDec":
        return canon_encdec(model, name, source)
    if kind == "GQADecoder":
        return canon_gqa(model, name, source)
    if hasattr(model, "canonical"):  # the forms of export/circuit_forms.py
        return model.canonical(name, source)
    raise ValueError(f"no canonical form for {kind}")


# ---------------------------------------------------------------------------------------
# The reference computation


def fold(W, b, ln):
    """fold_ln for one projection: W [d, D] (or [n, d, D]) and b [D] (or [n, D]) behind ln."""
    if ln is None:
        return W, b
    g = ln["gamma"]
    Wf = g[:, None] * W if W.ndim == 2 else g[None, :, None] * W
    if ln.get("beta") is None:
        return Wf, b
    shift = ln["beta"] @ W if W.ndim == 2 else np.einsum("d,ndk->nk", ln["beta"], W)
    return Wf, (shift if b is None else b + shift)


def folded_layer(layer):
    """(W_Q, W_K, W_V, W_O, b_Q, b_K, b_V) with the LN scales folded in."""
    WQ, bQ = fold(layer["W_Q"], layer["b_Q"], layer["ln_q"])
    WK, bK = fold(layer["W_K"], layer["b_K"], layer["ln_kv"])
    WV, bV = fold(layer["W_V"], layer["b_V"], layer["ln_kv"])
    return {"W_Q": WQ, "W_K": WK, "W_V": WV, "W_O": layer["W_O"],
            "b_Q": bQ, "b_K": bK, "b_V": bV}


def folded_unembed(canon):
    W_U = canon["W_U"]
    if W_U is None or canon["ln_final"] is None:
        return W_U
    return canon["ln_final"]["gamma"][:, None] * W_U


def kv_head(layer, h):
    return h // (layer["n_heads"] // layer["n_kv_heads"])


def head_factors(layer, f, h):
    """Folded (W_Q, W_K, W_V, W_O) of head h, each [d, D] except W_O [D, d]."""
    k = kv_head(layer, h)
    return f["W_Q"][h], f["W_K"][k], f["W_V"][k], f["W_O"][h]


def normalise(x, ln):
    """ln's normalisation without its affine part, row-wise."""
    if ln is None:
        return x
    if ln["kind"] == "rmsnorm":
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + ln["eps"])
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + ln["eps"])


def softmax(s):
    s = s - s.max(-1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(-1, keepdims=True)


def positional_pattern(W_pos, layer, WQ, WK, n=None):
    """The head's attention pattern A [n, n] from learned positions alone."""
    n = n or min(W_pos.shape[0], MAX_POS)
    xq = normalise(W_pos[:n], layer["ln_q"])
    xk = normalise(W_pos[:n], layer["ln_kv"])
    S = layer["scale"] * (xq @ WQ) @ (xk @ WK).T
    if layer["causal"]:
        S = np.where(np.tril(np.ones((n, n), bool)), S, -np.inf)
    return softmax(S)


def positional_scores(A):
    n = A.shape[0]
    prev = float(np.mean([A[i, i - 1] for i in range(1, n)])) if n > 1 else float("nan")
    return prev, float(np.mean(np.diag(A)))


def ov_copying(W_E, WV, WO, W_U):
    """sum Re(lambda) / sum |lambda| over the non-zero eigenvalues of W_E W_V W_O W_U, from
    the d_head x d_head matrix W_O (W_U W_E) W_V."""
    lam = np.linalg.eigvals(WO @ (W_U @ W_E) @ WV)
    return float(lam.real.sum() / np.abs(lam).sum())


def comp_score(V, O, X, Y):
    """||V O X Y^T||_F / (||V O||_F ||X Y^T||_F), factored (all d_head x d_head)."""
    VtV, YtY, OX = V.T @ V, Y.T @ Y, O @ X
    num = np.trace(VtV @ OX @ YtY @ OX.T)
    left = np.trace(VtV @ (O @ O.T))
    right = np.trace((X.T @ X) @ YtY)
    return float(math.sqrt(max(num, 0.0)) / (math.sqrt(left) * math.sqrt(right)))


def top_entries(M, k=TOP_K):
    """[(row, col, value)] of the k largest entries of M, value descending (ties: row-major
    order)."""
    flat = M.reshape(-1)
    idx = np.argsort(-flat, kind="stable")[:k]
    return [(int(i // M.shape[1]), int(i % M.shape[1]), float(flat[i])) for i in idx]


def readers(layer):
    """Which streams the layer's Q and K/V read: {"q": stream, "kv": stream}."""
    return {"q": layer["stream"], "kv": layer["kv_stream"]}


def valid_components(la, lb, a, b):
    """The composition components through which layer a (earlier) reaches layer b."""
    if a >= b:
        return {}
    w = la["stream"]
    r = readers(lb)
    return {"q": r["q"] == w, "k": r["kv"] == w, "v": r["kv"] == w}


def checksum(w):
    """{"sum", "frob", "pos"} of a matrix (a vector counts as one row)."""
    w = np.asarray(w, np.float64)
    if w.ndim == 1:
        w = w[None, :]
    i = np.arange(w.shape[0])[:, None]
    j = np.arange(w.shape[1])[None, :]
    weight = (31 * i + 7 * j) % 13
    return {"sum": float(w.sum()), "frob": float(np.sqrt((w * w).sum())),
            "pos": float((w * weight).sum())}


def _pair(unfolded, folded):
    if unfolded is None and folded is None:
        return None
    return {"unfolded": checksum(unfolded), "folded": checksum(folded)}


def weights_section(canon, folded):
    W_U = canon["W_U"]
    out = {"W_E": checksum(canon["W_E"]),
           "W_pos": None if canon["W_pos"] is None else checksum(canon["W_pos"]),
           "W_U": None if W_U is None else _pair(W_U, folded_unembed(canon)), "layers": []}
    for l, (layer, f) in enumerate(zip(canon["layers"], folded)):
        heads = []
        for h in range(layer["n_heads"]):
            k = kv_head(layer, h)
            e = {"head": h, "kv_head": k,
                 "W_Q": _pair(layer["W_Q"][h], f["W_Q"][h]),
                 "W_K": _pair(layer["W_K"][k], f["W_K"][k]),
                 "W_V": _pair(layer["W_V"][k], f["W_V"][k]),
                 "W_O": _pair(layer["W_O"][h], layer["W_O"][h])}
            for name, idx in (("b_Q", h), ("b_K", k), ("b_V", k)):
                ub = layer[name]
                fb = f[name]
                e[name] = (None if fb is None else
                           _pair(np.zeros_like(fb[idx]) if ub is None else ub[idx], fb[idx]))
            heads.append(e)
        out["layers"].append({"layer": l, "heads": heads,
                              "b_O": None if layer["b_O"] is None else checksum(layer["b_O"])})
    return out


def baseline_composition(d_model, dh_a, dh_b, draws=BASELINE_DRAWS, seed=BASELINE_SEED):
    """Monte-Carlo mean/std of q/k/v composition for i.i.d. N(0,1) factors: per draw, from
    np.random.default_rng(seed), V [d, dh_a], O [dh_a, d], X [d, dh_b], Y [d, dh_b] in that
    order; q = score(VO, X Y^T), k = score(VO, Y X^T), v = score(VO, X Y^T) with X standing
    for W_V and Y^T for W_O (same law as q)."""
    rng = np.random.default_rng(seed)
    s = {"q": [], "k": [], "v": []}
    for _ in range(draws):
        V = rng.standard_normal((d_model, dh_a))
        O = rng.standard_normal((dh_a, d_model))
        X = rng.standard_normal((d_model, dh_b))
        Y = rng.standard_normal((d_model, dh_b))
        s["q"].append(comp_score(V, O, X, Y))
        s["k"].append(comp_score(V, O, Y, X))
        s["v"].append(comp_score(V, O, X, Y))
    return {c: {"mean": float(np.mean(v)), "std": float(np.std(v))} for c, v in s.items()}


def baseline_ov(vocab, d_model, d_head, draws=BASELINE_DRAWS, seed=BASELINE_SEED):
    """Monte-Carlo mean/std of ov_copying for N(0,1) W_E [V,d], W_V [d,D], W_O [D,d],
    W_U [d,V], drawn in that order per draw from np.random.default_rng(seed)."""
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(draws):
        W_E = rng.standard_normal((vocab, d_model))
        WV = rng.standard_normal((d_model, d_head))
        WO = rng.standard_normal((d_head, d_model))
        W_U = rng.standard_normal((d_model, vocab))
        vals.append(ov_copying(W_E, WV, WO, W_U))
    return {"mean": float(np.mean(vals)), "std": float(np.std(vals))}


def ln_info(ln):
    return None if ln is None else {"kind": ln["kind"], "eps": ln["eps"],
                                    "module": ln["module"]}


def reference(canon, source_detail="", baseline=True):
    """circuits.json's dict for a canonical model (see the module docstring)."""
    layers = canon["layers"]
    folded = [folded_layer(l) for l in layers]
    W_E, W_pos = canon["W_E"], canon["W_pos"]
    W_U = folded_unembed(canon)
    ov_reason = None
    if W_E is None:
        ov_reason = "no token embedding"
    elif W_U is None:
        ov_reason = "no linear unembedding: " + (canon["W_U_reason"] or "not traced")

    heads, skip = [], {}
    full_ov = {}
    has_cross = any(layer["kind"] == "cross" for layer in layers)
    for l, (layer, f) in enumerate(zip(layers, folded)):
        layer_ov_reason = ov_reason
        if layer_ov_reason is None and has_cross and layer["stream"] == "encoder":
            # The encoder's stream reaches the logits only through cross-attention.
            layer_ov_reason = ("an encoder layer, whose output reaches the logits only "
                               "through cross-attention")
        for h in range(layer["n_heads"]):
            WQ, WK, WV, WO = head_factors(layer, f, h)
            e = {"layer": l, "head": h, "name": f"L{l}H{h}", "kv_head": kv_head(layer, h),
                 "ov_copying": None, "ov_copying_reason": layer_ov_reason,
                 "qk_prev_token": None, "qk_self": None, "qk_reason": None,
                 "qk_positions": None, "top_ov": None}
            if layer_ov_reason is None:
                e["ov_copying"] = ov_copying(W_E, WV, WO, W_U)
                full = (W_E @ WV) @ (WO @ W_U)
                full_ov[(l, h)] = full
                e["top_ov"] = [list(t) for t in top_entries(full)]
            if W_pos is None:
                e["qk_reason"] = canon["W_pos_reason"] or "no learned position embedding"
            elif layer["kind"] == "cross":
                e["qk_reason"] = ("cross-attention: queries and keys are positions of "
                                  "different sequences")
            else:
                A = positional_pattern(W_pos, layer, WQ, WK)
                e["qk_prev_token"], e["qk_self"] = positional_scores(A)
                e["qk_positions"] = int(A.shape[0])
            heads.append(e)
        if len(layers) == 1 and ov_reason is None:
            for h in range(layer["n_heads"]):
                WQ, WK, _, _ = head_factors(layer, f, h)
                qk = (W_E @ WQ) @ (W_E @ WK).T
                rows = top_entries(qk)
                skip[f"L{l}H{h}"] = [[d, s, v, int(np.argmax(full_ov[(l, h)][s]))]
                                     for d, s, v in rows]

    comps, shapes = [], set()
    for a, (la, fa) in enumerate(zip(layers, folded)):
        for b, (lb, fb) in enumerate(zip(layers, folded)):
            valid = valid_components(la, lb, a, b)
            if not any(valid.values()):
                continue
            shapes.add((canon["d_model"], la["d_head"], lb["d_head"]))
            for ha in range(la["n_heads"]):
                _, _, Va, Oa = head_factors(la, fa, ha)
                for hb in range(lb["n_heads"]):
                    Qb, Kb, Vb, Ob = head_factors(lb, fb, hb)
                    e = {"from_layer": a, "from_head": ha, "to_layer": b, "to_head": hb,
                         "q_comp": comp_score(Va, Oa, Qb, Kb) if valid["q"] else None,
                         "k_comp": comp_score(Va, Oa, Kb, Qb) if valid["k"] else None,
                         "v_comp": comp_score(Va, Oa, Vb, Ob.T) if valid["v"] else None}
                    if la["module"].rsplit(".", 1)[0] == lb["module"].rsplit(".", 1)[0]:
                        e["same_block"] = True
                    comps.append(e)

    base = {"method": "Monte-Carlo over i.i.d. standard-normal factors of the same shapes "
                      "(numpy default_rng(seed); see export/circuits_ref.py "
                      "baseline_composition / baseline_ov for the draw order)",
            "draws": BASELINE_DRAWS, "seed": BASELINE_SEED, "composition": [],
            "ov_copying": []}
    if baseline:
        for d, da, db in sorted(shapes):
            base["composition"].append({"d_model": d, "d_head_from": da, "d_head_to": db,
                                        **baseline_composition(d, da, db)})
        if ov_reason is None:
            for D in sorted({l["d_head"] for l in layers}):
                base["ov_copying"].append({"vocab": canon["vocab_size"],
                                           "d_model": canon["d_model"], "d_head": D,
                                           **baseline_ov(canon["vocab_size"],
                                                         canon["d_model"], D)})

    return {
        "schema": SCHEMA, "model": canon["model"], "architecture": canon["architecture"],
        "source": canon["source"], "source_detail": source_detail,
        "conventions": CONVENTIONS,
        "d_model": canon["d_model"], "vocab_size": canon["vocab_size"],
        "embedding": {"W_E": W_E is not None, "W_pos": W_pos is not None,
                      "W_pos_reason": canon["W_pos_reason"], "W_U": canon["W_U"] is not None,
                      "W_U_reason": canon["W_U_reason"], "W_U_tied": canon["W_U_tied"],
                      "ln_final": ln_info(canon["ln_final"])},
        "layers": [{"layer": l, "module": x["module"], "kind": x["kind"],
                    "causal": x["causal"], "stream": x["stream"], "kv_stream": x["kv_stream"],
                    "n_heads": x["n_heads"], "n_kv_heads": x["n_kv_heads"],
                    "d_head": x["d_head"], "scale": x["scale"], "ln_q": ln_info(x["ln_q"]),
                    "ln_kv": ln_info(x["ln_kv"])} for l, x in enumerate(layers)],
        "heads": heads,
        "composition": comps,
        "composition_pairs_rule": (
            "every (earlier, later) pair of attention layers where the later layer's Q or "
            "K/V reads the residual stream the earlier writes; null components do not read "
            "it. Encoder layers feed later encoder layers (q, k, v) and decoder "
            "cross-attention (k, v); decoder layers feed later decoder layers (self: q, k, "
            "v; cross: q)."),
        "baseline": base,
        "skip_trigrams": skip if len(layers) == 1 and ov_reason is None else None,
        "skip_trigram_definition": SKIP_TRIGRAM_DEFINITION,
        "weights": weights_section(canon, folded),
    }


# ---------------------------------------------------------------------------------------
# JSON


def _clean(x):
    """NaN/inf -> None, numpy scalars -> Python, recursively."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def write_circuits(path, ref):
    """Writes ref as JSON (allow_nan=False: NaN is stored as null) atomically."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(_clean(ref), f, indent=1, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------
# Parameters <-> ONNX initializers


def onnx_arrays(proto):
    """{initializer name: float64 array} of a model's graph (float and float16 only)."""
    from onnx import TensorProto, numpy_helper
    out = {}
    for t in proto.graph.initializer:
        if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE):
            out[t.name] = numpy_helper.to_array(t).astype(np.float64)
    return out


def param_map(model, proto, min_size=2):
    """{initializer name: (parameter name, transposed)} for the initializers of proto (an
    export of model) that equal one of model's parameters exactly, possibly transposed.
    Every parameter must be distinct for the map to be unambiguous (see scramble)."""
    params = {n: p.detach().double().numpy() for n, p in model.named_parameters()}
    by_bytes = {}
    for n, p in params.items():
        by_bytes.setdefault((p.shape, p.tobytes()), []).append((n, False))
        if p.ndim == 2:
            by_bytes.setdefault((p.T.shape, np.ascontiguousarray(p.T).tobytes()),
                                []).append((n, True))
    out = {}
    for name, a in onnx_arrays(proto).items():
        if a.size < min_size:
            continue
        hits = by_bytes.get((a.shape, np.ascontiguousarray(a).tobytes()))
        if hits:
            if len(hits) > 1:
                raise ValueError(f"initializer {name} equals several parameters: {hits}")
            out[name] = hits[0]
    return out


def scramble(model, seed=12345):
    """Redraws every parameter of model from N(0, 1) (a generator of its own), so that
    parameters are pairwise distinct and an export fingerprints them."""
    import torch
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def load_from_onnx(model, proto, mapping, atol=0.0):
    """Sets model's parameters from proto's initializers through mapping ({initializer:
    (parameter, transposed)}); a parameter mapped twice (tied weights, their transposed
    copy) must agree within atol. Returns the set of parameter names set."""
    import torch
    arrays = onnx_arrays(proto)
    params = dict(model.named_parameters())
    seen = {}
    for init, (pname, transposed) in mapping.items():
        if init not in arrays:
            raise ValueError(f"initializer {init} is not in the model")
        a = arrays[init].T if transposed else arrays[init]
        if pname in seen:
            d = np.abs(seen[pname] - a).max()
            if d > atol:
                raise ValueError(f"{pname}: its copies in the ONNX file differ by {d}")
            continue
        seen[pname] = a
        with torch.no_grad():
            params[pname].copy_(torch.from_numpy(np.ascontiguousarray(a)).to(params[pname].dtype))
    return set(seen)


def check_params_match(model, proto, mapping, atol=0.0):
    """Max |param - initializer| over mapping; raises when above atol."""
    arrays = onnx_arrays(proto)
    params = {n: p.detach().double().numpy() for n, p in model.named_parameters()}
    worst = 0.0
    for init, (pname, transposed) in mapping.items():
        a = arrays[init].T if transposed else arrays[init]
        worst = max(worst, float(np.abs(a - params[pname]).max()))
    if worst > atol:
        raise ValueError(f"parameters differ from the ONNX initializers by {worst}")
    return worst


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="testdata/models")
    ap.add_argument("--only", nargs="*", help="model folder names (default: all known)")
    args = ap.parse_args(argv)
    from export import circuit_forms  # the model sources live beside the new fixture forms
    circuit_forms.write_all_circuits(args.models, only=args.only, log=sys.stderr)


if __name__ == "__main__":
    main()
