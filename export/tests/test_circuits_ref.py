"""Checks export/circuits_ref.py against independent computations: full vocab x vocab OV
circuits, full d_model x d_model composition products, the PyTorch modules themselves (fold_ln,
head packing, scale, masks), explicit loops for the positional scores and checksums, and the
ONNX fingerprint that recovers trained models' parameters."""
import copy
import json
import math
import os
import tempfile

import numpy as np
import pytest
import torch

from export import circuit_forms as cf
from export import circuits_ref as cr
from export import forms as fm
from export.models import (AttnOnly, AttnOnlyConfig, BertConfig, BertEncoder, GPT2,
                           GPT2Config)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def perturbed(model, seed):
    """Weights drawn so that heads are sharp, LayerNorm scales far from 1 and biases
    non-zero: folding mistakes then change the numbers."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g, dtype=p.dtype)
            if p.dim() == 1 and name.endswith("weight"):
                p.copy_(1 + 0.5 * r)
            elif p.dim() == 1 or name.rsplit(".", 1)[-1].startswith("b_"):
                p.copy_(0.3 * r)
            else:
                p.copy_(0.4 * r)
    return model.eval()


def make(kind, seed=0):
    torch.manual_seed(seed)
    if kind == "attn_only":
        m = AttnOnly(AttnOnlyConfig(n_layers=2, n_heads=2, d_model=16, d_head=4,
                                    vocab_size=24, n_ctx=12, layernorm=True))
    elif kind == "attn_only_1l":
        m = AttnOnly(AttnOnlyConfig(n_layers=1, n_heads=3, d_model=16, d_head=4,
                                    vocab_size=24, n_ctx=12, layernorm=True))
    elif kind == "gpt2":
        m = GPT2(GPT2Config(n_layers=2, n_heads=2, d_model=16, vocab_size=24, n_positions=12))
    elif kind == "bert":
        m = BertEncoder(BertConfig(n_layers=2, n_heads=2, d_model=16, vocab_size=24,
                                   n_positions=12))
    elif kind == "gqa":
        m = fm.GQADecoder(fm.GQAConfig(vocab_size=24, d_model=16, n_layers=2, n_heads=4,
                                       n_kv_heads=2, d_head=4, d_mlp=32, n_positions=12))
    elif kind == "encdec":
        m = fm.EncDec(fm.EncDecConfig(vocab_size=24, d_model=16, n_heads=2,
                                      n_encoder_layers=2, n_decoder_layers=2, d_ff=32,
                                      n_positions=12))
    elif kind == "tlstyle":
        m = cf.TLStyle(cf.TLStyleConfig(n_layers=2, n_heads=2, d_model=16, d_head=4,
                                        vocab_size=24, n_ctx=12))
    elif kind == "mha":
        m = cf.MHAModel(cf.MHAConfig(n_layers=2, n_heads=2, d_model=16, vocab_size=24,
                                     n_ctx=12))
    else:
        raise ValueError(kind)
    return perturbed(m, seed + 1).double()


KINDS = ["attn_only", "attn_only_1l", "gpt2", "bert", "gqa", "encdec", "tlstyle", "mha"]


# ---------------------------------------------------------------------------------------
# The modules themselves: folded weights reproduce attention, outputs and logits


def attention_module(model, layer):
    name = layer["module"]
    m = model.get_submodule(name)
    return m


def capture(model, canon, ids, dec_ids=None):
    """Runs model once; returns per canonical layer {x_q, x_kv (the streams before ln_q /
    ln_kv, or the module's query/key inputs where there is no LN), probs [H, T, S],
    out [T, d]} and the final LN's input and the logits."""
    seen, handles = {}, []

    def save(key, index=0, output=False):
        def hook(mod, args, out=None):
            val = out if output else args
            if isinstance(val, tuple):
                val = val[index]
            seen[key] = val.detach()[0]
        return hook

    for l, layer in enumerate(canon["layers"]):
        m = attention_module(model, layer)
        if layer["ln_q"] is None:
            handles.append(m.register_forward_pre_hook(save(("xq", l), 0)))
        else:
            handles.append(model.get_submodule(layer["ln_q"]["module"])
                           .register_forward_pre_hook(save(("xq", l), 0)))
        if layer["ln_kv"] is None:
            handles.append(m.register_forward_pre_hook(save(("xkv", l), 1 if layer["kind"] ==
                                                            "cross" else 0)))
        else:
            handles.append(model.get_submodule(layer["ln_kv"]["module"])
                           .register_forward_pre_hook(save(("xkv", l), 0)))
        if hasattr(m, "o_proj"):  # GQABlock: its output includes the MLP
            handles.append(m.o_proj.register_forward_hook(save(("out", l), output=True)))
        else:
            handles.append(m.register_forward_hook(save(("out", l), 0, output=True)))
    if canon["ln_final"] is not None:
        handles.append(model.get_submodule(canon["ln_final"]["module"])
                       .register_forward_pre_hook(save("final", 0)))
    try:
        ids = torch.tensor([ids])
        if dec_ids is not None:
            with torch.enable_grad(), fm.recorded_attention(model) as rec:
                logits = model(ids, torch.tensor([dec_ids])).detach()
            probs = [rec[layer["module"]] for layer in canon["layers"]]
        else:
            with torch.no_grad():
                logits, probs = model(ids, return_attn=True)
    finally:
        for h in handles:
            h.remove()
    for l in range(len(canon["layers"])):
        seen[("probs", l)] = probs[l][0].detach()
    seen["logits"] = logits[0]
    return {k: v.double().numpy() for k, v in seen.items()}


def replay_layer(layer, f, xq, xkv):
    """Attention probabilities [H, T, S] and output [T, d] from canonical folded weights:
    q = normalised(x) @ W_Q + b_Q (folded), etc."""
    xq, xkv = cr.normalise(xq, layer["ln_q"]), cr.normalise(xkv, layer["ln_kv"])
    probs, out = [], 0.0
    for h in range(layer["n_heads"]):
        k_ = cr.kv_head(layer, h)
        q = xq @ f["W_Q"][h] + (0 if f["b_Q"] is None else f["b_Q"][h])
        k = xkv @ f["W_K"][k_] + (0 if f["b_K"] is None else f["b_K"][k_])
        v = xkv @ f["W_V"][k_] + (0 if f["b_V"] is None else f["b_V"][k_])
        S = layer["scale"] * q @ k.T
        if layer["causal"]:
            S = np.where(np.tril(np.ones(S.shape, bool)), S, -np.inf)
        A = cr.softmax(S)
        probs.append(A)
        out = out + A @ v @ f["W_O"][h]
    if layer["b_O"] is not None:
        out = out + layer["b_O"]
    return np.stack(probs), out


def run_ids(kind):
    rng = np.random.RandomState(3)
    ids = rng.randint(0, 24, size=9).tolist()
    return (ids, rng.randint(0, 24, size=7).tolist()) if kind == "encdec" else (ids, None)


@pytest.mark.parametrize("kind", KINDS)
def test_folded_weights_reproduce_the_module(kind):
    model = make(kind)
    canon = cr.canonical(model, kind)
    seen = capture(model, canon, *run_ids(kind))
    for l, layer in enumerate(canon["layers"]):
        f = cr.folded_layer(layer)
        probs, out = replay_layer(layer, f, seen[("xq", l)], seen[("xkv", l)])
        np.testing.assert_allclose(probs, seen[("probs", l)], atol=1e-10,
                                   err_msg=f"{kind} layer {l} probabilities")
        np.testing.assert_allclose(out, seen[("out", l)], atol=1e-9,
                                   err_msg=f"{kind} layer {l} output")
        # The check can fail: without the folded LayerNorm scale the pattern moves.
        if layer["ln_q"] is not None:
            unfolded = dict(f, W_Q=layer["W_Q"], W_K=layer["W_K"])
            wrong, _ = replay_layer(layer, unfolded, seen[("xq", l)], seen[("xkv", l)])
            assert np.abs(wrong - seen[("probs", l)]).max() > 1e-3
    if canon["W_U"] is not None:
        W_U = cr.folded_unembed(canon)
        x = cr.normalise(seen["final"], canon["ln_final"])
        shift = 0.0
        if canon["ln_final"] is not None and canon["ln_final"]["beta"] is not None:
            shift = canon["ln_final"]["beta"] @ canon["W_U"]
        if canon["b_U"] is not None:
            shift = shift + canon["b_U"]
        np.testing.assert_allclose(x @ W_U + shift, seen["logits"], atol=1e-9)


def test_gqa_heads_share_kv():
    canon = cr.canonical(make("gqa"), "gqa")
    layer = canon["layers"][0]
    assert layer["W_K"].shape == (2, 16, 4) and layer["W_Q"].shape == (4, 16, 4)
    assert [cr.kv_head(layer, h) for h in range(4)] == [0, 0, 1, 1]


# ---------------------------------------------------------------------------------------
# Scores against direct computations


@pytest.fixture(scope="module")
def refs():
    out = {}
    for kind in KINDS:
        canon = cr.canonical(make(kind), kind)
        out[kind] = (canon, cr.reference(canon, baseline=False))
    return out


def head_weights(canon, l, h):
    layer = canon["layers"][l]
    return cr.head_factors(layer, cr.folded_layer(layer), h)


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "bert"])
def test_ov_copying_from_full_vocab_circuit(refs, kind):
    canon, ref = refs[kind]
    W_E, W_U = canon["W_E"], cr.folded_unembed(canon)
    for e in ref["heads"]:
        if canon["layers"][e["layer"]]["stream"] == "encoder":
            # An encoder-decoder's encoder writes a stream the logits read only through
            # cross-attention: no OV circuit through W_U.
            assert e["ov_copying"] is None and "encoder" in e["ov_copying_reason"], e["name"]
            continue
        _, _, WV, WO = head_weights(canon, e["layer"], e["head"])
        full = W_E @ WV @ WO @ W_U  # vocab x vocab, materialised
        lam = np.linalg.eigvals(full)
        want = lam.real.sum() / np.abs(lam).sum()
        assert e["ov_copying"] == pytest.approx(want, rel=1e-7, abs=1e-10), e["name"]
        # top OV pairs: brute force over the full matrix
        order = np.argsort(-full.reshape(-1), kind="stable")[:cr.TOP_K]
        assert [(s, o) for s, o, _ in e["top_ov"]] == [divmod(int(i), full.shape[1])
                                                     for i in order]
        np.testing.assert_allclose([v for _, _, v in e["top_ov"]],
                                   full.reshape(-1)[order], rtol=1e-9)


def test_ov_copying_detects_copying():
    """A head whose OV circuit is the identity on tokens copies (score 1); its negative
    anti-copies (-1)."""
    rng = np.random.default_rng(0)
    V, d, D = 10, 8, 8
    W_E = rng.standard_normal((V, d))
    W_U = np.linalg.pinv(W_E)  # W_E W_U = projection: eigenvalues 1 and 0
    I = np.eye(d)
    assert cr.ov_copying(W_E, I, I, W_U) == pytest.approx(1.0)
    assert cr.ov_copying(W_E, I, -I, W_U) == pytest.approx(-1.0)


def test_bert_has_no_unembedding(refs):
    canon, ref = refs["bert"]
    assert canon["W_U"] is None
    assert all(e["ov_copying"] is None and "nonlinear" in e["ov_copying_reason"]
               for e in ref["heads"])
    # post-LN: layer 1 reads layer 0's ln_2, layer 0 the embedding LN
    assert [l["ln_q"]["module"] for l in ref["layers"]] == ["ln_embed", "layer.0.ln_2"]


@pytest.mark.parametrize("kind", KINDS)
def test_composition_from_full_matrices(refs, kind):
    canon, ref = refs[kind]

    def score(L, R):
        return np.linalg.norm(L @ R) / (np.linalg.norm(L) * np.linalg.norm(R))

    for e in ref["composition"]:
        _, _, Va, Oa = head_weights(canon, e["from_layer"], e["from_head"])
        Qb, Kb, Vb, Ob = head_weights(canon, e["to_layer"], e["to_head"])
        L = Va @ Oa  # d_model x d_model
        full = {"q_comp": score(L, Qb @ Kb.T), "k_comp": score(L, Kb @ Qb.T),
                "v_comp": score(L, Vb @ Ob)}
        for c, want in full.items():
            if e[c] is not None:
                assert e[c] == pytest.approx(want, rel=1e-9), (kind, e, c)
    n_layers = len(canon["layers"])
    if kind not in ("encdec",):
        H = canon["layers"][0]["n_heads"]
        assert len(ref["composition"]) == H * H * n_layers * (n_layers - 1) // 2
        assert all(None not in (e["q_comp"], e["k_comp"], e["v_comp"])
                   for e in ref["composition"])


def test_encdec_composition_pairs(refs):
    canon, ref = refs["encdec"]
    kinds = [(l["stream"], l["kind"]) for l in canon["layers"]]
    assert kinds == [("encoder", "self"), ("encoder", "self"), ("decoder", "causal-self"),
                     ("decoder", "cross"), ("decoder", "causal-self"), ("decoder", "cross")]
    comps = {}
    for e in ref["composition"]:
        comps.setdefault((e["from_layer"], e["to_layer"]), set()).add(
            tuple(c for c in ("q_comp", "k_comp", "v_comp") if e[c] is not None))
    assert comps == {
        (0, 1): {("q_comp", "k_comp", "v_comp")},    # encoder -> encoder
        (0, 3): {("k_comp", "v_comp")}, (1, 3): {("k_comp", "v_comp")},  # -> cross K/V
        (0, 5): {("k_comp", "v_comp")}, (1, 5): {("k_comp", "v_comp")},
        (2, 3): {("q_comp",)}, (2, 5): {("q_comp",)}, (4, 5): {("q_comp",)},  # -> cross Q
        (3, 5): {("q_comp",)},
        (2, 4): {("q_comp", "k_comp", "v_comp")}, (3, 4): {("q_comp", "k_comp", "v_comp")},
    }
    # cross-attention K/V read the encoder's final norm, Q the decoder layer's norm1
    cross = canon["layers"][3]
    assert cross["ln_kv"]["module"] == "encoder.norm"
    assert cross["ln_q"]["module"] == "decoder.layers.0.norm1"
    assert all(e["qk_prev_token"] is None for e in ref["heads"] if e["layer"] in (3, 5))


def explicit_positional(canon, l, h, n):
    """qk_prev_token, qk_self with plain Python loops."""
    layer = canon["layers"][l]
    WQ, WK, _, _ = head_weights(canon, l, h)
    P = canon["W_pos"]

    def norm(x, ln):
        if ln is None:
            return list(x)
        mu = sum(x) / len(x)
        var = sum((v - mu) ** 2 for v in x) / len(x)
        return [(v - mu) / math.sqrt(var + ln["eps"]) for v in x]

    xs_q = [norm(P[i], layer["ln_q"]) for i in range(n)]
    xs_k = [norm(P[i], layer["ln_kv"]) for i in range(n)]
    d, D = WQ.shape
    q = [[sum(xs_q[i][a] * WQ[a][c] for a in range(d)) for c in range(D)] for i in range(n)]
    k = [[sum(xs_k[i][a] * WK[a][c] for a in range(d)) for c in range(D)] for i in range(n)]
    A = []
    for i in range(n):
        js = range(i + 1) if layer["causal"] else range(n)
        s = {j: layer["scale"] * sum(q[i][c] * k[j][c] for c in range(D)) for j in js}
        m = max(s.values())
        z = sum(math.exp(v - m) for v in s.values())
        A.append({j: math.exp(v - m) / z for j, v in s.items()})
    prev = sum(A[i].get(i - 1, 0.0) for i in range(1, n)) / (n - 1)
    self_ = sum(A[i][i] for i in range(n)) / n
    return prev, self_


@pytest.mark.parametrize("kind", ["attn_only", "bert", "gqa", "encdec", "tlstyle"])
def test_positional_scores_explicit_loop(refs, kind):
    canon, ref = refs[kind]
    for e in ref["heads"]:
        if e["qk_reason"] is not None:
            continue
        n = e["qk_positions"]
        assert n == min(canon["W_pos"].shape[0], cr.MAX_POS)
        prev, self_ = explicit_positional(canon, e["layer"], e["head"], n)
        assert e["qk_prev_token"] == pytest.approx(prev, rel=1e-9, abs=1e-14)
        assert e["qk_self"] == pytest.approx(self_, rel=1e-9, abs=1e-14)


def test_positional_scores_see_a_previous_token_head():
    """Positions built so that q_i . k_j peaks at j = i - 1: qk_prev_token near 1."""
    n, d = 10, 2 * 10
    canon = cr.canonical(make("attn_only_1l"), "x")
    layer = canon["layers"][0]
    W_pos = np.zeros((n, d))
    for i in range(n):
        W_pos[i, i] = 1.0
    WQ = np.zeros((d, n))
    WK = np.zeros((d, n))
    for i in range(n):
        WQ[i, i] = 1.0
        if i + 1 < n:
            WK[i, i + 1] = 1.0  # key j lights up feature j + 1 ... matched by query j + 1
    plain = dict(layer, ln_q=None, ln_kv=None, scale=30.0)
    A = cr.positional_pattern(W_pos, plain, WQ, WK)
    prev, self_ = cr.positional_scores(A)
    assert prev > 0.9 and self_ < 0.11  # position 0 can only attend to itself


def test_skip_trigrams_brute_force(refs):
    canon, ref = refs["attn_only_1l"]
    assert ref["skip_trigrams"] is not None and refs["attn_only"][1]["skip_trigrams"] is None
    W_E, W_U = canon["W_E"], cr.folded_unembed(canon)
    for h in range(3):
        WQ, WK, WV, WO = head_weights(canon, 0, h)
        qk = np.empty((24, 24))
        for d_ in range(24):
            for s in range(24):
                qk[d_, s] = W_E[d_] @ WQ @ WK.T @ W_E[s]
        ov = W_E @ WV @ WO @ W_U
        got = ref["skip_trigrams"][f"L0H{h}"]
        order = np.argsort(-qk.reshape(-1), kind="stable")[:cr.TOP_K]
        assert [(d_, s) for d_, s, _, _ in got] == [divmod(int(i), 24) for i in order]
        for d_, s, v, o in got:
            assert v == pytest.approx(qk[d_, s], rel=1e-9)
            assert o == int(np.argmax(ov[s]))


# ---------------------------------------------------------------------------------------
# Checksums, baseline, JSON


def test_checksum_explicit_loop():
    w = np.arange(12, dtype=np.float64).reshape(3, 4) - 5.5
    s = sum(w[i, j] * ((31 * i + 7 * j) % 13) for i in range(3) for j in range(4))
    c = cr.checksum(w)
    assert c["pos"] == pytest.approx(s) and c["sum"] == pytest.approx(w.sum())
    assert c["frob"] == pytest.approx(math.sqrt((w ** 2).sum()))
    assert cr.checksum(w.T)["pos"] != pytest.approx(s)  # entry-position sensitive


def test_weights_section(refs):
    canon, ref = refs["gpt2"]
    layer = canon["layers"][1]
    g = layer["ln_q"]["gamma"]
    e = ref["weights"]["layers"][1]["heads"][1]

    def close(got, w):
        want = cr.checksum(w)
        for k in ("sum", "frob", "pos"):
            assert got[k] == pytest.approx(want[k], rel=1e-12, abs=1e-12), k

    close(e["W_Q"]["unfolded"], layer["W_Q"][1])
    close(e["W_Q"]["folded"], g[:, None] * layer["W_Q"][1])
    close(e["b_K"]["folded"], layer["b_K"][1] + layer["ln_kv"]["beta"] @ layer["W_K"][1])
    close(e["W_O"]["folded"], layer["W_O"][1])
    close(e["W_O"]["unfolded"], layer["W_O"][1])
    assert e["W_Q"]["folded"]["pos"] != pytest.approx(e["W_Q"]["unfolded"]["pos"])
    # GPT-2's fused c_attn: head 1's query columns are c_attn columns d_head .. 2 d_head
    model = make("gpt2")
    W = model.transformer.h[1].attn.c_attn.weight.detach().numpy().T
    np.testing.assert_array_equal(layer["W_Q"][1], W[:, 8:16])
    np.testing.assert_array_equal(layer["W_K"][1], W[:, 16 + 8:16 + 16])
    np.testing.assert_array_equal(layer["W_V"][0], W[:, 32:40])


def test_baseline_matches_an_independent_draw():
    b = cr.baseline_composition(16, 4, 4, draws=50)
    rng = np.random.default_rng(0)
    q = []
    for _ in range(50):
        V, O = rng.standard_normal((16, 4)), rng.standard_normal((4, 16))
        X, Y = rng.standard_normal((16, 4)), rng.standard_normal((16, 4))
        L, R = V @ O, X @ Y.T
        q.append(np.linalg.norm(L @ R) / (np.linalg.norm(L) * np.linalg.norm(R)))
    assert b["q"]["mean"] == pytest.approx(np.mean(q), rel=1e-9)
    assert b["q"]["std"] == pytest.approx(np.std(q), rel=1e-9)
    assert 0 < b["k"]["std"] < b["k"]["mean"] < 1


def test_json_has_no_nan(tmp_path):
    canon = cr.canonical(make("attn_only"), "x")
    ref = cr.reference(canon, baseline=False)
    ref["heads"][0]["qk_self"] = float("nan")
    path = tmp_path / "c.json"
    cr.write_circuits(str(path), ref)
    text = path.read_text()
    assert "NaN" not in text
    assert json.loads(text)["heads"][0]["qk_self"] is None


# ---------------------------------------------------------------------------------------
# Recovering parameters from an ONNX file


def test_fingerprint_recovers_parameters():
    from export.onnx_export import export_onnx
    cfg = AttnOnlyConfig(n_layers=2, n_heads=2, d_model=16, d_head=4, vocab_size=24, n_ctx=12,
                         layernorm=True)
    torch.manual_seed(1)
    original = perturbed(AttnOnly(cfg), 5)

    def to_onnx(m):
        with tempfile.TemporaryDirectory() as tmp:
            return export_onnx(m, os.path.join(tmp, "model.onnx"), 17, ["input_ids"])

    proto = to_onnx(original)
    torch.manual_seed(2)
    fresh = AttnOnly(cfg).eval()
    mapping = cf.fingerprint_map(fresh, to_onnx)
    assert any(t for _, t in mapping.values())  # nn.Linear weights appear transposed
    cr.load_from_onnx(fresh, proto, mapping)
    for (n, a), (_, b) in zip(original.named_parameters(), fresh.named_parameters()):
        assert torch.equal(a, b), n
    # and a wrong map is caught
    with pytest.raises(ValueError):
        cr.check_params_match(perturbed(AttnOnly(cfg), 9), proto, mapping)


# ---------------------------------------------------------------------------------------
# com.microsoft.Attention packing, against onnxruntime (skips without ../shared)


def test_ms_attention_packing_against_onnxruntime():
    import onnx
    from onnx import TensorProto, helper
    path = os.path.join(REPO, "..", "shared", cf.MSATTN)
    if not os.path.exists(path):
        pytest.skip(f"{path} is not present (../shared fixtures)")
    ort = pytest.importorskip("onnxruntime")
    proto = onnx.load(path)
    canon = cf.ms_attention_canonical(proto, "msattn")
    layer = canon["layers"][1]
    att = [n for n in proto.graph.node if n.op_type == "Attention"][1]
    for name in (att.input[0], att.output[0]):
        proto.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    T = 6
    feed = {"input_ids": np.array([[5, 17, 3, 900, 41, 8]], np.int32),
            "position_ids": np.arange(T, dtype=np.int32)[None],
            "attention_mask": np.ones((1, T), np.int32)}
    for i in range(5):
        feed[f"past_{i}"] = np.zeros((2, 1, 4, 0, 8), np.float32)
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))
    x = outs[att.input[0]][0].astype(np.float64)  # the LayerNorm output (affine applied)
    z = []
    for h in range(layer["n_heads"]):
        q = x @ layer["W_Q"][h] + layer["b_Q"][h]
        k = x @ layer["W_K"][h] + layer["b_K"][h]
        v = x @ layer["W_V"][h] + layer["b_V"][h]
        S = layer["scale"] * q @ k.T
        S = np.where(np.tril(np.ones((T, T), bool)), S, -np.inf)
        z.append(cr.softmax(S) @ v)
    np.testing.assert_allclose(np.concatenate(z, axis=1), outs[att.output[0]][0], atol=1e-5)
