"""Small transformers whose attention modules hand back their softmax probabilities.

Every model's forward takes `return_attn=False`; with True it returns
`(logits, attns)` where attns[l] is layer l's post-softmax attention, [B, H, T, T], in the
order the residual stream meets the layers. The probabilities are the very tensors the
forward multiplies into V, not a recomputation.

- AttnOnly:    the attention-only transformer of "A Mathematical Framework for Transformer
               Circuits" (Elhage et al., 2021), optionally with MLPs and LayerNorm.
- GPT2:        GPT-2 with Hugging Face's module names and its eager attention.
- BertEncoder: a bidirectional, post-LN BERT encoder with an MLM head.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


def split_heads(x, n_heads):
    """[B, T, H*D] -> [B, H, T, D]"""
    return x.view(x.size(0), x.size(1), n_heads, -1).transpose(1, 2)


def merge_heads(x):
    """[B, H, T, D] -> [B, T, H*D]"""
    return x.transpose(1, 2).flatten(2)


def causal_mask(n):
    """[n, n] bool, True where query i may look at key j (j <= i)."""
    return torch.tril(torch.ones(n, n, dtype=torch.bool))


def check_length(input_ids, n_positions):
    if input_ids.size(1) > n_positions:  # a constant check when traced for export
        raise ValueError(f"{input_ids.size(1)} tokens do not fit the model's "
                         f"{n_positions} positions")


def padding_mask(attention_mask, dtype):
    """[B, T] of 1 (keep) / 0 (pad) -> additive [B, 1, 1, T]: 0 or the dtype's minimum."""
    keep = attention_mask[:, None, None, :].to(dtype)
    return (1.0 - keep) * torch.finfo(dtype).min


# ---------------------------------------------------------------------------------------
# Attention-only transformer (circuits papers)


@dataclass
class AttnOnlyConfig:
    n_layers: int = 2
    n_heads: int = 4
    d_model: int = 64
    d_head: int = 16
    vocab_size: int = 64
    n_ctx: int = 32
    mlp: bool = False        # add an MLP after each attention layer
    layernorm: bool = False  # pre-LN before attention, MLP and unembedding
    d_mlp: int = 0           # 0 means 4 * d_model


class CausalAttention(nn.Module):
    """Multi-head causal self-attention without biases: W_Q, W_K, W_V, W_O of the paper."""

    def __init__(self, cfg):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.scale = 1.0 / math.sqrt(cfg.d_head)
        inner = cfg.n_heads * cfg.d_head
        self.W_Q = nn.Linear(cfg.d_model, inner, bias=False)
        self.W_K = nn.Linear(cfg.d_model, inner, bias=False)
        self.W_V = nn.Linear(cfg.d_model, inner, bias=False)
        self.W_O = nn.Linear(inner, cfg.d_model, bias=False)
        self.register_buffer("mask", causal_mask(cfg.n_ctx), persistent=False)
        self.register_buffer("bias", torch.zeros(cfg.n_ctx, cfg.n_ctx).masked_fill(
            ~self.mask, float("-inf")), persistent=False)
        # fused: training computes the scores with one baddbmm (the same numbers up to float
        # rounding); False trains in the plain form, bit for bit as before it existed.
        self.fused = True

    def forward(self, x):
        T = x.size(1)
        q = split_heads(self.W_Q(x), self.n_heads)
        k = split_heads(self.W_K(x), self.n_heads)
        v = split_heads(self.W_V(x), self.n_heads)
        if self.training and self.fused:  # scale, Q·Kᵀ, mask in one kernel (1.8× at T = 128)
            B, H, _, d = q.shape
            scores = torch.baddbmm(self.bias[:T, :T].expand(B * H, T, T), q.reshape(B * H, T, d),
                                   k.reshape(B * H, T, d).transpose(1, 2), alpha=self.scale)
            scores = scores.view(B, H, T, T)
        else:  # the form the ONNX export traces (and attnscope's graph rewriter finds)
            scores = (q @ k.transpose(-2, -1)) * self.scale
            scores = scores.masked_fill(~self.mask[:T, :T], float("-inf"))
        probs = scores.softmax(dim=-1)
        return self.W_O(merge_heads(probs @ v)), probs


class MLP(nn.Module):
    def __init__(self, d_model, d_mlp, approximate="none"):
        super().__init__()
        self.c_fc = nn.Linear(d_model, d_mlp)
        self.c_proj = nn.Linear(d_mlp, d_model)
        self.approximate = approximate

    def forward(self, x):
        return self.c_proj(gelu(self.c_fc(x), self.approximate))


def gelu(x, approximate):
    if approximate == "tanh":  # written out as in Hugging Face's NewGELUActivation
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))
    return F.gelu(x)


class AttnOnlyBlock(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        norm = (lambda: nn.LayerNorm(cfg.d_model)) if cfg.layernorm else nn.Identity
        self.ln1 = norm()
        self.attn = CausalAttention(cfg)
        self.ln2 = norm() if cfg.mlp else None
        self.mlp = MLP(cfg.d_model, cfg.d_mlp or 4 * cfg.d_model) if cfg.mlp else None

    def forward(self, x):
        a, probs = self.attn(self.ln1(x))
        x = x + a
        if self.mlp is not None:
            x = x + self.mlp(self.ln2(x))
        return x, probs


class AttnOnly(nn.Module):
    """Token + learned positional embedding, a residual stream that n_layers attention
    layers read from and add to, and an unembedding to logits."""

    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_embed = nn.Embedding(cfg.n_ctx, cfg.d_model)
        self.blocks = nn.ModuleList(AttnOnlyBlock(cfg) for _ in range(cfg.n_layers))
        self.ln_final = nn.LayerNorm(cfg.d_model) if cfg.layernorm else nn.Identity()
        self.unembed = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.apply(init_weights)

    def forward(self, input_ids, return_attn=False):
        check_length(input_ids, self.config.n_ctx)
        pos = torch.arange(input_ids.size(1), device=input_ids.device)
        x = self.embed(input_ids) + self.pos_embed(pos)
        attns = []
        for block in self.blocks:
            x, probs = block(x)
            attns.append(probs)
        logits = self.unembed(self.ln_final(x))
        return (logits, attns) if return_attn else logits


# ---------------------------------------------------------------------------------------
# GPT-2 (Hugging Face module names, eager attention)


@dataclass
class GPT2Config:
    n_layers: int = 12
    n_heads: int = 12
    d_model: int = 768
    vocab_size: int = 50257
    n_positions: int = 1024
    layer_norm_eps: float = 1e-5


class GPT2Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.d_model = cfg.d_model
        self.scale = 1.0 / math.sqrt(cfg.d_model // cfg.n_heads)
        self.c_attn = nn.Linear(cfg.d_model, 3 * cfg.d_model)  # fused q, k, v
        self.c_proj = nn.Linear(cfg.d_model, cfg.d_model)
        n = cfg.n_positions
        self.register_buffer("bias", causal_mask(n).view(1, 1, n, n), persistent=False)

    def forward(self, x, attention_mask=None):
        T = x.size(1)
        q, k, v = self.c_attn(x).split(self.d_model, dim=2)
        q, k, v = (split_heads(t, self.n_heads) for t in (q, k, v))
        scores = (q @ k.transpose(-2, -1)) * self.scale
        min_value = torch.full([], torch.finfo(scores.dtype).min, dtype=scores.dtype)
        scores = torch.where(self.bias[:, :, :T, :T], scores, min_value)
        if attention_mask is not None:
            scores = scores + attention_mask
        probs = scores.softmax(dim=-1)
        return self.c_proj(merge_heads(probs @ v)), probs


class GPT2Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.attn = GPT2Attention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.mlp = MLP(cfg.d_model, 4 * cfg.d_model, approximate="tanh")

    def forward(self, x, attention_mask=None):
        a, probs = self.attn(self.ln_1(x), attention_mask)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, probs


class GPT2(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.vocab_size, cfg.d_model),
            wpe=nn.Embedding(cfg.n_positions, cfg.d_model),
            h=nn.ModuleList(GPT2Block(cfg) for _ in range(cfg.n_layers)),
            ln_f=nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps),
        ))
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.apply(init_weights)
        self.lm_head.weight = self.transformer.wte.weight  # tied, as in GPT-2

    def forward(self, input_ids, attention_mask=None, position_ids=None, return_attn=False):
        check_length(input_ids, self.config.n_positions)
        if position_ids is None:
            position_ids = torch.arange(input_ids.size(1), device=input_ids.device)[None, :]
        x = self.transformer.wte(input_ids) + self.transformer.wpe(position_ids)
        if attention_mask is not None:
            attention_mask = padding_mask(attention_mask, x.dtype)
        attns = []
        for block in self.transformer.h:
            x, probs = block(x, attention_mask)
            attns.append(probs)
        logits = self.lm_head(self.transformer.ln_f(x))
        return (logits, attns) if return_attn else logits


# ---------------------------------------------------------------------------------------
# BERT-style encoder


@dataclass
class BertConfig:
    n_layers: int = 2
    n_heads: int = 2
    d_model: int = 64
    vocab_size: int = 128
    n_positions: int = 64
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12


class BertAttention(nn.Module):
    """Bidirectional multi-head self-attention; only padding is masked."""

    def __init__(self, cfg):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.scale = 1.0 / math.sqrt(cfg.d_model // cfg.n_heads)
        self.query = nn.Linear(cfg.d_model, cfg.d_model)
        self.key = nn.Linear(cfg.d_model, cfg.d_model)
        self.value = nn.Linear(cfg.d_model, cfg.d_model)
        self.dense = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x, attention_mask=None):
        q = split_heads(self.query(x), self.n_heads)
        k = split_heads(self.key(x), self.n_heads)
        v = split_heads(self.value(x), self.n_heads)
        scores = (q @ k.transpose(-2, -1)) * self.scale
        if attention_mask is not None:
            scores = scores + attention_mask
        probs = scores.softmax(dim=-1)
        return self.dense(merge_heads(probs @ v)), probs


class BertLayer(nn.Module):
    """Post-LN: x = LN(x + attn(x)); x = LN(x + mlp(x))."""

    def __init__(self, cfg):
        super().__init__()
        self.attention = BertAttention(cfg)
        self.ln_1 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.mlp = MLP(cfg.d_model, 4 * cfg.d_model)
        self.ln_2 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)

    def forward(self, x, attention_mask=None):
        a, probs = self.attention(x, attention_mask)
        x = self.ln_1(x + a)
        x = self.ln_2(x + self.mlp(x))
        return x, probs


class BertEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.position_embeddings = nn.Embedding(cfg.n_positions, cfg.d_model)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.d_model)
        self.ln_embed = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.layer = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.n_layers))
        # MLM head: transform, then a decoder tied to the word embeddings plus a bias.
        self.mlm_dense = nn.Linear(cfg.d_model, cfg.d_model)
        self.mlm_ln = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.mlm_bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        self.apply(init_weights)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, return_attn=False):
        check_length(input_ids, self.config.n_positions)
        pos = torch.arange(input_ids.size(1), device=input_ids.device)[None, :]
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = (self.word_embeddings(input_ids) + self.position_embeddings(pos)
             + self.token_type_embeddings(token_type_ids))
        x = self.ln_embed(x)
        if attention_mask is not None:
            attention_mask = padding_mask(attention_mask, x.dtype)
        attns = []
        for layer in self.layer:
            x, probs = layer(x, attention_mask)
            attns.append(probs)
        h = self.mlm_ln(F.gelu(self.mlm_dense(x)))
        logits = h @ self.word_embeddings.weight.t() + self.mlm_bias
        return (logits, attns) if return_attn else logits


def init_weights(module, std=0.02):
    """GPT-2's initialisation: N(0, 0.02) weights, zero biases, unit LayerNorm."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


ARCHITECTURES = {"AttnOnly": AttnOnly, "GPT2": GPT2, "BertEncoder": BertEncoder}
