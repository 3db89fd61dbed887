import math

import pytest
import torch

from export.models import (AttnOnly, AttnOnlyConfig, BertConfig, BertEncoder, GPT2,
                           GPT2Config)
from export.fixtures import sharpen

V, T = 50, 11


def make(kind):
    torch.manual_seed(0)
    if kind == "attnonly":
        m = AttnOnly(AttnOnlyConfig(n_layers=2, n_heads=4, d_model=32, d_head=8,
                                    vocab_size=V, n_ctx=16))
        return sharpen(m, qk_std=0.3, embed_std=0.5).eval()
    if kind == "attnonly-mlp-ln":
        m = AttnOnly(AttnOnlyConfig(n_layers=2, n_heads=2, d_model=32, d_head=16,
                                    vocab_size=V, n_ctx=16, mlp=True, layernorm=True))
        return sharpen(m, qk_std=0.3).eval()
    if kind == "gpt2":
        m = GPT2(GPT2Config(n_layers=2, n_heads=4, d_model=32, vocab_size=V, n_positions=16))
        return sharpen(m, qk_std=0.3).eval()
    if kind == "bert":
        m = BertEncoder(BertConfig(n_layers=2, n_heads=2, d_model=32, vocab_size=V,
                                   n_positions=16))
        return sharpen(m, qk_std=0.3).eval()
    raise ValueError(kind)


def ids(batch=2, length=T, seed=1):
    return torch.randint(0, V, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", ["attnonly", "attnonly-mlp-ln", "gpt2", "bert"])
def test_attention_rows_are_distributions(kind):
    m = make(kind)
    with torch.no_grad():
        logits, attns = m(ids(), return_attn=True)
        plain = m(ids())
    assert logits.shape == (2, T, V)
    assert torch.equal(logits, plain)  # return_attn changes nothing but the return value
    assert len(attns) == m.config.n_layers
    for a in attns:
        assert a.shape == (2, m.config.n_heads, T, T)
        assert torch.all(a >= 0)
        torch.testing.assert_close(a.sum(-1), torch.ones(2, m.config.n_heads, T))
        top = a[..., 2:, :].max(-1).values  # rows 0 and 1 of a causal head are trivial
        assert 1.5 / T < top.mean() < 0.95, "heads should be neither uniform nor one-hot"


@pytest.mark.parametrize("kind", ["attnonly", "attnonly-mlp-ln", "gpt2"])
def test_decoders_are_causal(kind):
    m = make(kind)
    with torch.no_grad():
        _, attns = m(ids(), return_attn=True)
    future = torch.ones(T, T, dtype=torch.bool).triu(1)
    for a in attns:
        assert torch.all(a[..., future] == 0)
    # And the logits at position i do not depend on tokens after i.
    x = ids(1)
    y = x.clone()
    y[0, 6:] = (y[0, 6:] + 1) % V
    with torch.no_grad():
        torch.testing.assert_close(m(x)[:, :6], m(y)[:, :6])


def test_bert_is_bidirectional():
    with torch.no_grad():
        _, attns = make("bert")(ids(), return_attn=True)
    future = torch.ones(T, T, dtype=torch.bool).triu(1)
    for a in attns:
        assert a[..., future].min() > 0


def capture_attention_input(module):
    seen = {}
    handle = module.register_forward_pre_hook(lambda mod, args: seen.setdefault("x", args[0]))
    return seen, handle


def recompute(x, wq, bq, wk, bk, n_heads, mask):
    """softmax(Q K^T / sqrt(d_head) + mask) from the weights, written independently."""
    B, T_, _ = x.shape
    q = (x @ wq.T + bq).reshape(B, T_, n_heads, -1).permute(0, 2, 1, 3)
    k = (x @ wk.T + bk).reshape(B, T_, n_heads, -1).permute(0, 2, 1, 3)
    scores = torch.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(q.shape[-1])
    return torch.softmax(scores + mask, dim=-1)


def test_attention_equals_recomputation_from_weights():
    neg_inf = torch.full((T, T), float("-inf")).triu(1)
    for kind in ["attnonly", "gpt2", "bert"]:
        m = make(kind)
        if kind == "attnonly":
            att = m.blocks[1].attn
            d = att.W_Q.weight.shape[0]
            wq, bq, wk, bk = att.W_Q.weight, torch.zeros(d), att.W_K.weight, torch.zeros(d)
            mask = neg_inf
        elif kind == "gpt2":
            att = m.transformer.h[1].attn
            d = m.config.d_model
            w, b = att.c_attn.weight, att.c_attn.bias
            wq, bq, wk, bk = w[:d], b[:d], w[d:2 * d], b[d:2 * d]
            mask = neg_inf
        else:
            att = m.layer[1].attention
            wq, bq, wk, bk = att.query.weight, att.query.bias, att.key.weight, att.key.bias
            mask = torch.zeros(T, T)
        seen, handle = capture_attention_input(att)
        with torch.no_grad():
            _, attns = m(ids(), return_attn=True)
            expected = recompute(seen["x"], wq, bq, wk, bk, m.config.n_heads, mask)
        handle.remove()
        torch.testing.assert_close(attns[1], expected, atol=1e-6, rtol=1e-5, msg=kind)


@pytest.mark.parametrize("kind", ["gpt2", "bert"])
def test_attention_mask_hides_padded_keys(kind):
    m = make(kind)
    x = ids(1)
    keep = torch.ones(1, T, dtype=torch.long)
    keep[0, 3] = 0
    with torch.no_grad():
        _, attns = m(x, attention_mask=keep, return_attn=True)
        _, unmasked = m(x, attention_mask=torch.ones_like(keep), return_attn=True)
    for a, u in zip(attns, unmasked, strict=True):
        assert a[0, :, :, 3].max() < 1e-6  # no query looks at the padded position
        assert u[0, :, 4:, 3].max() > 1e-3  # ...which it would without the mask
        torch.testing.assert_close(a.sum(-1), torch.ones_like(a.sum(-1)))


def test_gpt2_default_positions_and_tied_head():
    m = make("gpt2")
    x = ids(1)
    with torch.no_grad():
        torch.testing.assert_close(m(x), m(x, position_ids=torch.arange(T)[None]))
        torch.testing.assert_close(m(x), m(x, attention_mask=torch.ones_like(x)))
    assert m.lm_head.weight is m.transformer.wte.weight
    names = dict(m.named_modules())
    for n in ["transformer.wte", "transformer.wpe", "transformer.h.1.ln_1",
              "transformer.h.1.attn.c_attn", "transformer.h.1.attn.c_proj",
              "transformer.h.1.ln_2", "transformer.h.1.mlp.c_fc", "transformer.h.1.mlp.c_proj",
              "transformer.ln_f", "lm_head"]:
        assert n in names
    assert m.transformer.h[0].attn.bias.shape == (1, 1, 16, 16)


@pytest.mark.parametrize("kind", ["attnonly", "gpt2", "bert"])
def test_too_long_prompt_is_a_clear_error(kind):
    with pytest.raises(ValueError, match="17 tokens do not fit the model's 16 positions"):
        make(kind)(ids(1, 17))


@pytest.mark.parametrize("kind", ["attnonly", "attnonly-mlp-ln"])
def test_training_attention_equals_the_exported_form(kind):
    """AttnOnly trains with a fused scale-Q·Kᵀ-mask (baddbmm) and exports the plain form:
    both must give the same logits, attention and gradients."""
    m = make(kind)
    x = ids(batch=3)
    outs = []
    for train in (False, True):
        m.train(train)
        m.zero_grad()
        logits, attns = m(x, return_attn=True)
        logits.square().mean().backward()
        outs.append((logits.detach(), [a.detach() for a in attns],
                     [p.grad.clone() for p in m.parameters()]))
    (l0, a0, g0), (l1, a1, g1) = outs
    torch.testing.assert_close(l1, l0, atol=1e-5, rtol=1e-5)
    for e, g in zip(a0, a1):
        torch.testing.assert_close(g, e, atol=1e-6, rtol=1e-5)
        assert torch.all(g.triu(1) == 0), "the fused mask let a query see a later key"
    for e, g in zip(g0, g1):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-4)


def test_plain_training_attention_is_the_exported_form(monkeypatch):
    """fused = False (export.train --attention plain) trains with the exported form and
    never calls the fused kernel (a replay of a run made before it stays bit-exact);
    fused = True calls it once per layer."""
    calls = []
    real = torch.baddbmm
    monkeypatch.setattr(torch, "baddbmm", lambda *a, **k: calls.append(1) or real(*a, **k))
    m = make("attnonly")
    x = ids(batch=3)
    with torch.no_grad():
        want = m.eval()(x)
        m.train()(x)
        assert len(calls) == len(m.blocks)
        calls.clear()
        for b in m.blocks:
            b.attn.fused = False
        got = m(x)
    assert not calls, "plain training called the fused kernel"
    assert torch.equal(got, want)
