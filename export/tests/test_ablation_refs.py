"""Head ablation references (export/ablation_refs.py): the hooks against the plain model,
against the patched attention (probabilities × 0), against a hand-written float64 forward,
and the committed testdata/ablation/*.json against a fresh run."""
import json
import math
import os

import numpy as np
import pytest
import torch

from export import ablation_refs as ar
from export.models import AttnOnly, AttnOnlyConfig
from export.onnx_export import export
from export.tests.test_models import make

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COMMITTED = os.path.join(REPO, "testdata", "ablation")


def inputs_for(model, ids):
    return {"input_ids": torch.as_tensor(ids, dtype=torch.long)[None, :]}


def heads(model, spec):
    return ar.parse_ablate(spec, model.config.n_layers, ar.head_sizes(model)[0])


def ids_of(model, T=9, seed=5):
    return np.random.RandomState(seed).randint(0, model.config.vocab_size, size=T).tolist()


def maxdiff(a, b):
    return float((torch.as_tensor(a).double() - torch.as_tensor(b).double()).abs().max())


# ---------------------------------------------------------------------------------------
# Selections


def test_parse_ablate():
    p = lambda s: ar.parse_ablate(s, 2, 4)  # noqa: E731
    assert p("") == {} and p("  ") == {}
    assert p("L1H2") == {1: [2]}
    assert p("l1h2, L0H3 ,L1H0") == {0: [3], 1: [0, 2]}
    assert p("L0") == {0: [0, 1, 2, 3]}
    assert p("L0,L0H1") == {0: [0, 1, 2, 3]}
    assert p("all") == p("L0,L1") == {0: [0, 1, 2, 3], 1: [0, 1, 2, 3]}
    for bad in ("L2", "L0H4", "H1", "L0H", "L-1", "L0H1;L1H1", "L0,,L1"):
        with pytest.raises(ValueError):
            p(bad)


# ---------------------------------------------------------------------------------------
# The hooks


@pytest.mark.parametrize("kind", ["attnonly", "attnonly-mlp-ln", "gpt2"])
def test_nothing_ablated_is_the_plain_model(kind):
    m = make(kind)
    inp = inputs_for(m, ids_of(m))
    with torch.no_grad():
        plain = m(**inp)
    for mode in ar.MODES:
        assert maxdiff(ar.run_hooked(m, inp, {}, mode), plain) == 0.0
        assert maxdiff(ar.ablate(m, inp, {}, mode), plain) == 0.0
        assert maxdiff(ar.ablate_patched(m, inp, {}, mode), plain) == 0.0
    # The patches and hooks are gone afterwards.
    for attn, proj in ar.attention_layers(m):
        assert "forward" not in attn.__dict__ and not proj._forward_pre_hooks
    with torch.no_grad():
        assert maxdiff(m(**inp), plain) == 0.0


@pytest.mark.parametrize("kind", ["attnonly", "attnonly-mlp-ln", "gpt2"])
@pytest.mark.parametrize("spec", ["L0H1", "L1H0", "L0", "all", "L0H1,L1H0"])
def test_zeroed_z_is_zeroed_probabilities(kind, spec):
    """z set to 0 at W_O's input = the probabilities multiplied by 0 before ×V; and it matters."""
    m = make(kind)
    inp = inputs_for(m, ids_of(m))
    h = heads(m, spec)
    hooked = ar.ablate(m, inp, h, "zero")
    assert maxdiff(hooked, ar.ablate_patched(m, inp, h, "zero")) <= 1e-6
    assert maxdiff(hooked, ar.ablate(m, inp, {}, "zero")) > 1e-3
    mean = ar.ablate(m, inp, h, "mean")
    assert maxdiff(mean, ar.ablate_patched(m, inp, h, "mean")) <= 1e-6
    assert maxdiff(mean, hooked) > 1e-3


def test_layer_and_all_are_their_heads():
    m = make("attnonly")
    inp = inputs_for(m, ids_of(m))
    for mode in ar.MODES:
        a = ar.ablate(m, inp, heads(m, "L0"), mode)
        b = ar.ablate(m, inp, heads(m, "L0H3,L0H0,L0H2,L0H1"), mode)
        assert maxdiff(a, b) == 0.0
        a = ar.ablate(m, inp, heads(m, "all"), mode)
        b = ar.ablate(m, inp, heads(m, "L1,L0"), mode)
        assert maxdiff(a, b) == 0.0


def test_mean_over_one_position_is_the_clean_run():
    """With T = 1 each head's mean over positions is its z: mean ablation changes nothing,
    zero ablation does."""
    m = make("attnonly")
    inp = inputs_for(m, [7])
    with torch.no_grad():
        plain = m(**inp)
    assert maxdiff(ar.ablate(m, inp, heads(m, "all"), "mean"), plain) <= 1e-6
    assert maxdiff(ar.ablate(m, inp, heads(m, "all"), "zero"), plain) > 1e-3


def test_zero_ablation_keeps_the_output_bias():
    """GPT-2's c_proj has a bias: with every head of a layer zeroed its output is the bias."""
    m = make("gpt2")
    inp = inputs_for(m, ids_of(m))
    assert float(m.transformer.h[0].attn.c_proj.bias.abs().max()) > 1e-3
    seen = {}
    handle = m.transformer.h[0].attn.c_proj.register_forward_hook(
        lambda mod, args, out: seen.setdefault("out", out.detach().clone()))
    try:
        ar.ablate(m, inp, heads(m, "L0"), "zero")
    finally:
        handle.remove()
    bias = m.transformer.h[0].attn.c_proj.bias.detach()
    assert maxdiff(seen["out"], bias.expand_as(seen["out"])) == 0.0


def test_zero_all_is_the_direct_path():
    m = make("attnonly")
    assert ar.has_direct_path(m) and not ar.has_direct_path(make("attnonly-mlp-ln"))
    ids = ids_of(m)
    inp = inputs_for(m, ids)
    direct = ar.direct_path_logits(m, ids)
    assert maxdiff(ar.ablate(m, inp, heads(m, "all"), "zero")[0], direct) <= 1e-5
    assert maxdiff(ar.ablate(m, inp, {}, "zero")[0], direct) > 1e-3


def manual_attn_only(model, ids, hs, mode, means_from="clean"):
    """AttnOnly without LayerNorm/MLP written out in float64 from its weights, with heads
    ablated; means_from="ablated" takes each layer's means from the ablated run itself (the
    wrong semantics, to show the test tells them apart)."""
    W = lambda lin: lin.weight.detach().double()  # noqa: E731
    cfg = model.config
    H, D, T = cfg.n_heads, cfg.d_head, len(ids)
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))

    def forward(ablated, means):
        x = model.embed.weight.detach().double()[ids] + model.pos_embed.weight.detach().double()[:T]
        zs = []
        for layer, block in enumerate(model.blocks):
            a = block.attn
            q, k, v = ((x @ W(lin).T).view(T, H, D).transpose(0, 1) for lin in (a.W_Q, a.W_K, a.W_V))
            s = (q @ k.transpose(1, 2)) / math.sqrt(D)
            p = s.masked_fill(~causal, float("-inf")).softmax(-1)
            z = p @ v  # [H, T, D]
            zs.append(z)
            if ablated:
                z = z.clone()
                for h in hs.get(layer, []):
                    if mode == "zero":
                        z[h] = 0.0
                    else:
                        src = means[layer] if means is not None else zs[layer].mean(dim=1)
                        z[h] = src[h]
            x = x + z.transpose(0, 1).reshape(T, H * D) @ W(a.W_O).T
        return x @ W(model.unembed).T, zs

    _, clean_z = forward(False, None)
    means = [z.mean(dim=1) for z in clean_z] if means_from == "clean" else None
    logits, _ = forward(True, means)
    return logits


@pytest.mark.parametrize("spec", ["L0H1", "L1H2", "L0", "all", "L0H1,L1H2", "L0H0,L0H3,L1"])
def test_hooks_match_a_hand_written_forward(spec):
    m = make("attnonly")
    with torch.no_grad():  # heads that write more, so that layer 0 moves layer 1's means
        for block in m.blocks:
            block.attn.W_V.weight.mul_(5.0)
            block.attn.W_O.weight.mul_(5.0)
    ids = ids_of(m, T=11)
    inp = inputs_for(m, ids)
    h = heads(m, spec)
    for mode in ar.MODES:
        assert maxdiff(ar.ablate(m, inp, h, mode)[0], manual_attn_only(m, ids, h, mode)) <= 1e-5
    if spec in ("L0H1,L1H2", "all"):  # layer 1's means must come from the clean run
        wrong = manual_attn_only(m, ids, h, "mean", means_from="ablated")
        assert maxdiff(ar.ablate(m, inp, h, "mean")[0], wrong) > 1e-3


def test_next_token_losses():
    logits = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.2, 0.7], [1, 1, 1]]))
    losses = ar.next_token_losses(logits, [2, 1, 2])
    assert losses == pytest.approx([-math.log(0.25), -math.log(0.7)])


@pytest.mark.parametrize("layernorm,mlp", [(False, False), (True, False), (True, True)])
def test_weights_read_back_from_onnx(tmp_path, layernorm, mlp):
    """load_from_onnx maps the exporter's transposed onnx::MatMul_* initializers back."""
    torch.manual_seed(0)
    m = AttnOnly(AttnOnlyConfig(n_layers=2, n_heads=2, d_model=16, d_head=8, vocab_size=20,
                                n_ctx=8, layernorm=layernorm, mlp=mlp, d_mlp=24)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p), alpha=0.1)  # no two tensors alike
    export(m, str(tmp_path), 17, ["input_ids"], name="t", seq_lens=(3,))
    back = ar.load_from_onnx(str(tmp_path))
    assert (back.config.layernorm, back.config.mlp) == (layernorm, mlp)
    want, got = m.state_dict(), back.state_dict()
    assert set(want) == set(got)
    for k in want:
        assert torch.equal(want[k], got[k]), k
    diff, names = ar.reference_diff(back, str(tmp_path))
    assert diff == 0.0 and names == ["input_ids"]


# ---------------------------------------------------------------------------------------
# The committed files


@pytest.mark.parametrize("spec", ar.MODELS, ids=[m[0] for m in ar.MODELS])
def test_committed_references(spec):
    stem = spec[0]
    path = os.path.join(COMMITTED, stem + ".json")
    with open(path) as f:
        ref = json.load(f)
    assert os.path.getsize(path) < 1_600_000
    V, L, H = ref["vocab_size"], ref["n_layers"], ref["n_heads"]
    assert os.path.exists(os.path.join(REPO, ref["model_path"]))
    by_key = {}
    for c in ref["cases"]:
        T = len(c["ids"])
        assert c["mode"] in ar.MODES and len(c["logits"]) == T * V and len(c["losses"]) == T - 1
        ar.parse_ablate(c["ablate"], L, H)  # attnscope's syntax
        logits = np.array(c["logits"]).reshape(T, V)
        assert ar.next_token_losses(logits, c["ids"]) == pytest.approx(c["losses"], abs=1e-5)
        assert c["loss"] == pytest.approx(np.mean(c["losses"]), abs=1e-12)
        by_key[(c["prompt"], c["ablate"], c["mode"])] = logits
    for (prompt, spec_, mode), logits in by_key.items():
        clean = by_key[(prompt, "", mode)]
        if spec_:
            assert np.abs(logits - clean).max() > 1e-3, (prompt, spec_, mode)
        else:
            assert np.array_equal(logits, by_key[(prompt, "", "zero")])
    if "direct_path" in ref:
        d = ref["direct_path"]
        zero_all = by_key[("random", "all", "zero")]
        assert np.abs(np.array(d["logits"]).reshape(zero_all.shape) - zero_all).max() <= 1e-5

    # A fresh run agrees (bit for bit with the same PyTorch; within the file's tolerance
    # with another one).
    with open(os.devnull, "w") as quiet:
        fresh = ar.references(*spec, log=quiet)
    assert fresh["model_path"] == ref["model_path"] and len(fresh["cases"]) == len(ref["cases"])
    tol = 0.0 if fresh["torch"] == ref["torch"] else ref["logits_tolerance"]
    for a, b in zip(fresh["cases"], ref["cases"]):
        assert (a["prompt"], a["ids"], a["ablate"], a["mode"]) == (b["prompt"], b["ids"], b["ablate"], b["mode"])
        assert np.abs(np.array(a["logits"]) - np.array(b["logits"])).max() <= tol
    if tol == 0.0:
        assert json.dumps(fresh, separators=(",", ":")) == json.dumps(ref, separators=(",", ":"))
