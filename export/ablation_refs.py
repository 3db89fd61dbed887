"""PyTorch references for head ablation: testdata/ablation/<file>.json, one per model.

    python -m export.ablation_refs --out testdata/ablation      (from the repository root)

The Go tests run the same prompts through onnxruntime with attnscope's ablation masks and
compare logits with these (tolerance: the file's "logits_tolerance"). Semantics, as TransformerLens users mean them:

- zero: the head's attention probabilities are multiplied by 0 before they meet V, so its
  per-head output z = P·V ([T, d_head], before heads are merged and before the output
  projection) is 0; the output projection's bias stays.
- mean: the head's z is replaced, at every position, by the mean over positions of that head's
  z in a clean (un-ablated) run on the same prompt. With several heads (across layers), every
  one uses its clean-run mean, computed once from one clean run.

Implemented with forward pre-hooks on the module that applies W_O (AttnOnly `attn.W_O`, GPT2
`attn.c_proj`, BertEncoder `attention.dense`): its input is z with heads merged,
[B, T, n_heads*d_head], head h in columns h*d_head:(h+1)*d_head. Every case is computed a
second way, by patching the attention module's forward to multiply the probabilities by a
per-head mask (zero) or to overwrite the per-head z [B, H, T, D] (mean), and the two must
agree (zero: within 1e-6, in fact exactly; mean: within CROSS_TOL, the means being summed in
another order); with nothing ablated both equal the plain model exactly.

Models, each rebuilt and checked against its committed reference.json logits (within 1e-5)
before anything is written:
- testdata/models/{attn1l,attn2l,gpt2tiny}: the seeded factories of export/fixtures.py;
- models/{demo,attn1l}: AttnOnly from config.json, weights read back from model.onnx's
  initializers (the exporter stores nn.Linear weights transposed, as MatMul operands named
  onnx::MatMul_*; the consuming node's name, "/model/blocks.0/attn/W_Q/MatMul", says whose).

Each file holds:
  {"model", "model_path", "generator", "torch", "n_layers", "n_heads", "vocab_size",
   "logits_decimals", "logits_tolerance", "reference_max_abs_diff",
   "cases": [{"prompt", "ids", "ablate", "mode", "logits", "loss", "losses"}, ...],
   "direct_path": {"ids", "ablate", "logits", "max_abs_diff_vs_zero_ablation"}}
logits are flat [T*V] (position-major), rounded to `logits_decimals` decimal places (so off by
at most 5e-7); loss is the mean next-token cross-entropy over positions 0..T-2 in nats and
losses the T-1 per-position values, both computed in float64 from the unrounded float32
logits. "ablate" uses attnscope's syntax ("" is the clean run, "L0H1,L1H2", "L0", "all").
"direct_path" is present only for attention-only models without LayerNorm or MLPs: the logits
(W_E[ids] + W_pos[0..T-1] + Σ_layers b_O) · W_U + b_U from the weights alone (float64), which
must equal the zero-ablation of "all" within 1e-5.
Deterministic: one thread, seeded prompts; running it twice writes identical files.
"""
import argparse
import contextlib
import json
import os
import re
import sys
import types

import numpy as np
import torch

from export import fixtures as fx
from export.models import (AttnOnly, AttnOnlyConfig, BertEncoder, CausalAttention, GPT2,
                           GPT2Attention, merge_heads, split_heads)
from export.onnx_export import implied_inputs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GENERATOR = "python -m export.ablation_refs"
DECIMALS = 6
REFERENCE_TOL = 1e-5   # rebuilt model vs committed reference.json logits
DIRECT_TOL = 1e-5      # direct path vs zero-ablating every head
# Hook on W_O's input vs patched attention forward. Zero ablation runs the same float32 ops
# both ways (they agree exactly); mean ablation averages z in two memory layouts, and the
# last-bit differences of the means reach the trained models' logits amplified (~1e-5).
CROSS_TOL = {"zero": 1e-6, "mean": 5e-5}
# The tolerance written into each file for comparing onnxruntime's logits with these: 1e-5
# for the fixtures; the trained models (LayerNorm, larger weights) are only float32-stable to
# about 1e-5 themselves (PyTorch float32 vs float64: up to 9.7e-6 on demo, onnxruntime
# with masks vs these: up to 1.4e-5), so they get 1e-4, reference.json's logits default.
LOGITS_TOL = {"fixture": 1e-5, "onnx": 1e-4}

# (file stem, source, folder, prompt length, repeated-prompt half length or 0, selections)
MODELS = [
    ("attn1l", "fixture", "testdata/models/attn1l", 16, 0,
     ["", "L0H1", "L0H3", "L0", "all", "L0H0,L0H2"]),
    ("attn2l", "fixture", "testdata/models/attn2l", 16, 0,
     ["", "L0H1", "L1H2", "L0", "L1", "all", "L0H1,L1H2"]),
    ("gpt2tiny", "fixture", "testdata/models/gpt2tiny", 16, 0,
     ["", "L0H1", "L1H2", "L0", "L1", "all", "L0H1,L1H2"]),
    # demo: L0H3 is its strongest previous-token head, L1H5/L1H6 induction heads.
    ("demo", "onnx", "models/demo", 12, 6,
     ["", "L0H1", "L1H5", "L0", "all", "L0H3,L1H5,L1H6"]),
    # The trained one-layer model; "models-" keeps it apart from the attn1l fixture.
    ("models-attn1l", "onnx", "models/attn1l", 12, 6,
     ["", "L0H1", "L0H7", "L0", "all", "L0H1,L0H7"]),
]
MODES = ("zero", "mean")
PROMPT_SEED = 20240601


# ---------------------------------------------------------------------------------------
# Selections


def parse_ablate(spec, n_layers, n_heads):
    """attnscope's head selection -> {layer: sorted heads}; "" -> {} (the clean run).
    Items are comma-separated L{l}H{h}, L{l} (the whole layer) or all, case-insensitive."""
    out = {}
    if spec.strip() == "":
        return out
    for item in spec.split(","):
        item = item.strip()
        if item.lower() == "all":
            for layer in range(n_layers):
                out.setdefault(layer, set()).update(range(n_heads))
            continue
        m = re.fullmatch(r"[Ll](\d+)(?:[Hh](\d+))?", item)
        if not m:
            raise ValueError(f"cannot ablate {item!r}: write a head as L1H5, a layer as L0, or all")
        layer = int(m.group(1))
        if layer >= n_layers:
            raise ValueError(f"cannot ablate {item!r}: the model has {n_layers} layers")
        if m.group(2) is None:
            out.setdefault(layer, set()).update(range(n_heads))
            continue
        head = int(m.group(2))
        if head >= n_heads:
            raise ValueError(f"cannot ablate {item!r}: layer {layer} has {n_heads} heads")
        out.setdefault(layer, set()).add(head)
    return {layer: sorted(heads) for layer, heads in sorted(out.items())}


# ---------------------------------------------------------------------------------------
# The models' attention layers


def attention_layers(model):
    """[(attention module, the submodule applying W_O)] per layer, in residual-stream order."""
    if isinstance(model, AttnOnly):
        return [(b.attn, b.attn.W_O) for b in model.blocks]
    if isinstance(model, GPT2):
        return [(b.attn, b.attn.c_proj) for b in model.transformer.h]
    if isinstance(model, BertEncoder):
        return [(layer.attention, layer.attention.dense) for layer in model.layer]
    raise TypeError(f"no attention layers known for {type(model).__name__}")


def head_sizes(model):
    attn, proj = attention_layers(model)[0]
    return attn.n_heads, proj.in_features // attn.n_heads


def model_inputs(model, ids, input_names):
    """The keyword inputs reference.json's runs used: ids [T] plus what they imply."""
    implied = implied_inputs(torch.as_tensor(ids, dtype=torch.long)[None, :])
    return {n: implied[n] for n in input_names}


# ---------------------------------------------------------------------------------------
# Ablation, way 1: forward pre-hooks on the output projection (z with heads merged)


def run_hooked(model, inputs, heads=None, mode="zero", means=None, capture=None):
    """Logits [B, T, V] with `heads` ({layer: [head]}) ablated. mode "mean" needs means
    ({layer: [B, n_heads*d_head]}, the clean run's z averaged over positions); capture, a
    dict, receives every layer's z [B, T, n_heads*d_head] as the projection sees it."""
    heads = heads or {}
    n_heads, d_head = head_sizes(model)
    handles = []

    def make_hook(layer):
        def hook(module, args):
            z = args[0]
            if capture is not None:
                capture[layer] = z.detach().clone()
            if not heads.get(layer):
                return None  # untouched: the very tensor the plain model uses
            z = z.clone()
            for h in heads[layer]:
                cols = slice(h * d_head, (h + 1) * d_head)
                if mode == "zero":
                    z[..., cols] = 0.0
                elif mode == "mean":
                    z[..., cols] = means[layer][:, None, cols]
                else:
                    raise ValueError(f"unknown ablation mode {mode!r}")
            return (z,) + tuple(args[1:])
        return hook

    for layer, (_, proj) in enumerate(attention_layers(model)):
        handles.append(proj.register_forward_pre_hook(make_hook(layer)))
    try:
        with torch.no_grad():
            return model(**inputs)
    finally:
        for handle in handles:
            handle.remove()


def clean_means(model, inputs):
    """{layer: [B, n_heads*d_head]}: each layer's z averaged over positions in a clean run."""
    z = {}
    run_hooked(model, inputs, capture=z)
    return {layer: t.mean(dim=1) for layer, t in z.items()}


def ablate(model, inputs, heads, mode):
    """Logits with heads ablated; mean ablation takes its means from a clean run of inputs."""
    means = clean_means(model, inputs) if mode == "mean" and heads else None
    return run_hooked(model, inputs, heads, mode, means)


# ---------------------------------------------------------------------------------------
# Ablation, way 2: the attention module's forward patched (probabilities × mask, per-head z)


def _edit_z(self, probs, v):
    """probs [B, H, T, T] × a per-head mask before ×V; then, in mean mode, the ablated heads'
    z [B, H, T, D] overwritten by the clean means [B, H, D]; in capture mode, z recorded."""
    ctl = self._ablation
    if ctl["mode"] == "zero":
        probs = probs * ctl["mask"].view(1, -1, 1, 1)
    z = probs @ v
    if ctl.get("capture") is not None:
        ctl["capture"][ctl["layer"]] = z.detach().clone()
    if ctl["mode"] == "mean" and ctl["heads"]:
        z = z.clone()
        for h in ctl["heads"]:
            z[:, h] = ctl["means"][:, h][:, None, :]
    return z


def _causal_forward(self, x):  # CausalAttention.forward with _edit_z
    T = x.size(1)
    q = split_heads(self.W_Q(x), self.n_heads)
    k = split_heads(self.W_K(x), self.n_heads)
    v = split_heads(self.W_V(x), self.n_heads)
    scores = (q @ k.transpose(-2, -1)) * self.scale
    scores = scores.masked_fill(~self.mask[:T, :T], float("-inf"))
    probs = scores.softmax(dim=-1)
    return self.W_O(merge_heads(_edit_z(self, probs, v))), probs


def _gpt2_forward(self, x, attention_mask=None):  # GPT2Attention.forward with _edit_z
    T = x.size(1)
    q, k, v = self.c_attn(x).split(self.d_model, dim=2)
    q, k, v = (split_heads(t, self.n_heads) for t in (q, k, v))
    scores = (q @ k.transpose(-2, -1)) * self.scale
    min_value = torch.full([], torch.finfo(scores.dtype).min, dtype=scores.dtype)
    scores = torch.where(self.bias[:, :, :T, :T], scores, min_value)
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = scores.softmax(dim=-1)
    return self.c_proj(merge_heads(_edit_z(self, probs, v))), probs


PATCHED_FORWARD = {CausalAttention: _causal_forward, GPT2Attention: _gpt2_forward}


@contextlib.contextmanager
def patched_attention(model, heads, mode, means=None, capture=None):
    """Every attention module's forward replaced (on the instance) by the patched one."""
    layers = attention_layers(model)
    try:
        for layer, (attn, _) in enumerate(layers):
            forward = PATCHED_FORWARD.get(type(attn))
            if forward is None:
                raise TypeError(f"no patched forward for {type(attn).__name__}")
            mask = torch.ones(attn.n_heads)
            for h in heads.get(layer, []):
                mask[h] = 0.0
            attn._ablation = {"mode": mode, "mask": mask, "heads": heads.get(layer, []),
                              "means": None if means is None else means[layer],
                              "capture": capture, "layer": layer}
            attn.forward = types.MethodType(forward, attn)
        yield
    finally:
        for attn, _ in layers:
            attn.__dict__.pop("forward", None)
            attn.__dict__.pop("_ablation", None)


def ablate_patched(model, inputs, heads, mode):
    """The same ablation as ablate(), through the patched attention forwards."""
    means = None
    if mode == "mean" and heads:
        z = {}
        with patched_attention(model, {}, "none", capture=z), torch.no_grad():
            model(**inputs)
        means = {layer: t.mean(dim=2) for layer, t in z.items()}  # [B, H, D]
    with patched_attention(model, heads, mode, means), torch.no_grad():
        return model(**inputs)


# ---------------------------------------------------------------------------------------
# Direct path, losses


def has_direct_path(model):
    cfg = model.config
    return isinstance(model, AttnOnly) and not cfg.layernorm and not cfg.mlp


def direct_path_logits(model, ids):
    """(W_E[ids] + W_pos[0..T-1] + Σ_layers b_O) · W_U + b_U, float64, from the weights."""
    def arr(t):
        return t.detach().double().numpy()
    ids = np.asarray(ids)
    x = arr(model.embed.weight)[ids] + arr(model.pos_embed.weight)[: len(ids)]
    for _, proj in attention_layers(model):
        if proj.bias is not None:
            x = x + arr(proj.bias)
    logits = x @ arr(model.unembed.weight).T
    if model.unembed.bias is not None:
        logits = logits + arr(model.unembed.bias)
    return logits


def next_token_losses(logits, ids):
    """Cross-entropy of ids[i+1] under logits[i] for i in 0..T-2, float64, nats."""
    x = np.asarray(logits, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    lse = (m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True)))[:, 0]
    T = len(ids)
    return lse[: T - 1] - x[np.arange(T - 1), np.asarray(ids[1:])]


def rounded(a):
    return np.round(np.asarray(a, dtype=np.float64).reshape(-1), DECIMALS).tolist()


# ---------------------------------------------------------------------------------------
# Rebuilding the models


def rebuild_fixture(name):
    """The fixture model exactly as export/fixtures.py generate() builds it."""
    torch.set_num_threads(1)
    for fname, make, _opset, _inputs in fx.fixtures():
        if fname == name:
            return make().eval()
    raise KeyError(name)


def load_from_onnx(folder):
    """AttnOnly rebuilt from folder/config.json with weights from folder/model.onnx."""
    import onnx
    from onnx import numpy_helper

    with open(os.path.join(folder, "config.json")) as f:
        c = json.load(f)
    if c["architecture"] != "AttnOnly":
        raise ValueError(f"{folder}: architecture {c['architecture']}, only AttnOnly is read back")
    proto = onnx.load(os.path.join(folder, "model.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    # Trained models' config.json says whether there are LayerNorms and MLPs; the fixtures'
    # does not, and then the initializers tell.
    has_ln = any(n.startswith("model.ln_final.") for n in inits)
    has_mlp = any(".mlp." in n for n in inits) or any(
        "/mlp/" in n.name for n in proto.graph.node)
    for key, seen in (("layernorm", has_ln), ("mlp", has_mlp)):
        if key in c and bool(c[key]) != seen:
            raise ValueError(f"{folder}: config.json says {key}={c[key]}, model.onnx {seen}")
    cfg = AttnOnlyConfig(n_layers=c["n_layers"], n_heads=c["n_heads"], d_model=c["d_model"],
                         d_head=c["d_head"], vocab_size=c["vocab_size"], n_ctx=c["n_positions"],
                         mlp=has_mlp, layernorm=has_ln, d_mlp=c.get("d_mlp") or (
                             len(inits["model.blocks.0.mlp.c_fc.bias"])
                             if "model.blocks.0.mlp.c_fc.bias" in inits else 0))
    model = AttnOnly(cfg)
    state, used = {}, set()
    for name, a in inits.items():
        if name.startswith("model."):  # export's _Positional wrapper names it `model`
            state[name[len("model."):]] = a
            used.add(name)
    for node in proto.graph.node:
        if node.op_type != "MatMul" or len(node.input) != 2 or node.input[1] not in inits:
            continue
        if node.input[1] in used:
            continue
        # "/model/blocks.0/attn/W_Q/MatMul" -> blocks.0.attn.W_Q.weight, stored as weight.T
        parts = node.name.split("/")
        if len(parts) < 4 or parts[:2] != ["", "model"] or not parts[-1].startswith("MatMul"):
            raise ValueError(f"{folder}: cannot tell whose weight MatMul {node.name!r} holds")
        key = ".".join(parts[2:-1]) + ".weight"
        if key in state:
            raise ValueError(f"{folder}: {key} found twice")
        state[key] = inits[node.input[1]].T
        used.add(node.input[1])
    unused = sorted(set(inits) - used)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if unused or missing or unexpected:
        raise ValueError(f"{folder}: initializers not mapped {unused}, parameters missing "
                         f"{missing}, unexpected {unexpected}")
    for key, a in state.items():
        if tuple(a.shape) != tuple(expected[key].shape):
            raise ValueError(f"{folder}: {key} has shape {a.shape}, the model "
                             f"{tuple(expected[key].shape)}")
    model.load_state_dict({k: torch.from_numpy(np.array(a, copy=True)) for k, a in state.items()},
                          strict=True)
    return model.eval()


def reference_diff(model, folder):
    """(max abs diff of the model's logits vs folder/reference.json's runs, input names)."""
    with open(os.path.join(folder, "reference.json")) as f:
        ref = json.load(f)
    names = ref.get("inputs", ["input_ids"])
    worst = 0.0
    for run in ref["runs"]:
        with torch.no_grad():
            logits = model(**model_inputs(model, run["ids"], names))
        want = np.asarray(run["logits"]["data"], dtype=np.float32).reshape(run["logits"]["shape"])
        worst = max(worst, float(np.abs(logits.numpy() - want).max()))
    return worst, names


def load(source, folder):
    name = os.path.basename(os.path.normpath(folder))
    return rebuild_fixture(name) if source == "fixture" else load_from_onnx(folder)


# ---------------------------------------------------------------------------------------
# The references


def prompts(vocab_size, T, repeat_half, seed=PROMPT_SEED):
    """[(label, ids)]: a seeded random prompt of T tokens; with repeat_half, also a random
    sequence of repeat_half tokens written twice (induction heads)."""
    rng = np.random.RandomState(seed)
    out = [("random", rng.randint(0, vocab_size, size=T).tolist())]
    if repeat_half:
        half = rng.randint(0, vocab_size, size=repeat_half).tolist()
        out.append(("repeat", half + half))
    return out


def check_no_ablation_is_plain(model, inputs):
    """Hooked and patched runs with nothing ablated give the plain model's logits exactly."""
    with torch.no_grad():
        plain = model(**inputs)
    for mode in MODES:
        for got in (run_hooked(model, inputs, {}, mode), ablate(model, inputs, {}, mode),
                    ablate_patched(model, inputs, {}, mode)):
            diff = float((got - plain).abs().max())
            if diff != 0.0:
                raise AssertionError(f"nothing ablated ({mode}) differs from the plain model by {diff}")


def references(stem, source, folder, T, repeat_half, selections, log=sys.stderr):
    """The JSON object for one model; raises if the rebuilt model misses its reference."""
    torch.set_num_threads(1)
    where = os.path.join(REPO, folder)
    model = load(source, where)
    ref_diff, input_names = reference_diff(model, where)
    if not ref_diff <= REFERENCE_TOL:
        raise AssertionError(f"{folder}: rebuilt model is {ref_diff:.3g} from reference.json")
    cfg = model.config
    n_heads, _ = head_sizes(model)
    out = {
        "model": os.path.basename(os.path.normpath(folder)),
        "model_path": f"{folder}/model.onnx",
        "generator": GENERATOR,
        "torch": torch.__version__,
        "n_layers": cfg.n_layers, "n_heads": n_heads, "vocab_size": cfg.vocab_size,
        "logits_decimals": DECIMALS,
        "logits_tolerance": LOGITS_TOL[source],
        "reference_max_abs_diff": ref_diff,
        "cases": [],
    }
    cross = {mode: 0.0 for mode in MODES}
    zero_all = None
    for label, ids in prompts(cfg.vocab_size, T, repeat_half):
        inputs = model_inputs(model, ids, input_names)
        check_no_ablation_is_plain(model, inputs)
        for spec in selections:
            heads = parse_ablate(spec, cfg.n_layers, n_heads)
            for mode in MODES:
                logits = ablate(model, inputs, heads, mode)
                other = ablate_patched(model, inputs, heads, mode)
                cross[mode] = max(cross[mode], float((logits - other).abs().max()))
                logits = logits[0].numpy()
                losses = next_token_losses(logits, ids)
                out["cases"].append({"prompt": label, "ids": list(ids), "ablate": spec,
                                     "mode": mode, "logits": rounded(logits),
                                     "loss": float(losses.mean()),
                                     "losses": losses.tolist()})
                if label == "random" and spec == "all" and mode == "zero":
                    zero_all = (ids, logits)
    for mode in MODES:
        if not cross[mode] <= CROSS_TOL[mode]:
            raise AssertionError(f"{folder}: hooked and patched {mode} ablation differ by "
                                 f"{cross[mode]:.3g}")
    # Ablation must matter: every non-empty selection moves the logits.
    by_key = {(c["prompt"], c["ablate"], c["mode"]): np.asarray(c["logits"]) for c in out["cases"]}
    for (label, spec, mode), lg in by_key.items():
        if spec and np.abs(lg - by_key[(label, "", mode)]).max() < 1e-3:
            raise AssertionError(f"{folder}: ablating {spec} ({mode}) leaves the logits as they are")
    direct_diff = None
    if has_direct_path(model):
        ids, logits = zero_all
        direct = direct_path_logits(model, ids)
        direct_diff = float(np.abs(direct - logits).max())
        if not direct_diff <= DIRECT_TOL:
            raise AssertionError(f"{folder}: direct path is {direct_diff:.3g} from zero-ablating all")
        out["direct_path"] = {"ids": list(ids), "ablate": "all", "logits": rounded(direct),
                              "max_abs_diff_vs_zero_ablation": direct_diff}
    print(f"ablation_refs: {stem}: rebuilt vs reference.json max |diff| {ref_diff:.3g}, "
          f"hooked vs patched zero {cross['zero']:.3g} mean {cross['mean']:.3g}, direct path vs zero-all "
          f"{'n/a' if direct_diff is None else f'{direct_diff:.3g}'}, "
          f"{len(out['cases'])} cases", file=log)
    return out


def generate(out_dir, models=MODELS, log=sys.stderr):
    """Writes out_dir/<stem>.json for each model; returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for stem, source, folder, T, repeat_half, selections in models:
        obj = references(stem, source, folder, T, repeat_half, selections, log=log)
        path = os.path.join(out_dir, stem + ".json")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(obj, f, separators=(",", ":"))
            f.write("\n")
        os.replace(tmp, path)
        print(f"ablation_refs: wrote {path} ({os.path.getsize(path)} bytes)", file=log)
        written.append(path)
    return written


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="testdata/ablation", help="folder to write the JSON into")
    ap.add_argument("--only", action="append", help="file stem to write (repeatable)")
    args = ap.parse_args(argv)
    models = [m for m in MODELS if not args.only or m[0] in args.only]
    generate(args.out, models)


if __name__ == "__main__":
    main()
