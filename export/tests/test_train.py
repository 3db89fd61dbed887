"""Training, resume and export of export/train.py on tiny runs (seconds each)."""
import csv
import io
import json
import os
import subprocess

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

from export import corpus, train
from export.models import AttnOnly, AttnOnlyConfig

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INSPECT = os.path.join(REPO, "bin", "inspect")

PROMPT = "The king doth love, the king doth love"
WORDS = ("the king queen lord lady good night day sword crown land sea ship fair "
         "doth hath thou art shall will not love hate sweet").split()


def write_corpus(folder, n_lines=600, seed=0):
    """A small seeded text whose lines often repeat an earlier phrase (something to learn)."""
    rng = np.random.RandomState(seed)
    lines = []
    for _ in range(n_lines):
        line = " ".join(rng.choice(WORDS, size=rng.randint(4, 10)))
        lines.append(line + ", " + line if rng.rand() < 0.3 else line.capitalize() + ".")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "a.txt"), "w") as f:
        f.write("\n".join(lines[: n_lines // 2]) + "\n")
    with open(os.path.join(folder, "b.txt"), "w") as f:
        f.write("\n".join(lines[n_lines // 2:]) + "\n")
    return folder


def tiny_args(tmp_path, *extra, steps=40):
    data = write_corpus(str(tmp_path / "data"))
    return train.parse_args([
        "--data", data, "--out", str(tmp_path / "run"), "--vocab-size", "300",
        "--layers", "2", "--heads", "2", "--d-model", "32", "--d-head", "16", "--n-ctx", "32",
        "--batch", "8", "--steps", str(steps), "--warmup", "5", "--lr", "3e-3",
        "--eval-every", "10", "--eval-windows", "16", "--ckpt-every", "20", "--quiet",
        *extra])


def read_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_tiny_training_lowers_loss_and_writes_outputs(tmp_path):
    args = tiny_args(tmp_path)
    _, tok, summary = train.train(args)
    rows = read_rows(tmp_path / "run" / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [0, 10, 20, 30, 40]
    first, last = float(rows[0]["val_loss"]), float(rows[-1]["val_loss"])
    assert last < first - 1.0, (first, last)
    assert summary["tokens_seen"] == 40 * 8 * 32
    assert len(summary["induction"]) == 2 and len(summary["induction"][0]) == 2
    for f in ["checkpoint.pt", "tokenizer.json", "summary.json"]:
        assert (tmp_path / "run" / f).exists(), f
    try:
        import matplotlib  # noqa: F401
        assert (tmp_path / "run" / "training.png").stat().st_size > 1000
    except ImportError:
        pass


def test_resume_reaches_the_same_state(tmp_path):
    straight = tiny_args(tmp_path / "a", steps=30)
    m1, _, _ = train.train(straight)
    part = tiny_args(tmp_path / "b", "--until", "20", steps=30)
    train.train(part)
    resumed = tiny_args(tmp_path / "b", "--resume", steps=30)
    m2, _, _ = train.train(resumed)
    s1, s2 = m1.state_dict(), m2.state_dict()
    for k in s1:
        assert torch.equal(s1[k], s2[k]), k
    strip = lambda rows: [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]
    assert strip(read_rows(tmp_path / "a" / "run" / "metrics.csv")) == \
        strip(read_rows(tmp_path / "b" / "run" / "metrics.csv"))


@pytest.mark.parametrize("layers,flags", [(0, []), (1, ["--mlp"]), (2, ["--layernorm", "--mlp"])])
def test_model_family_trains_and_exports(tmp_path, layers, flags):
    args = tiny_args(tmp_path, "--layers", str(layers), *flags,
                     "--export", str(tmp_path / "out"), steps=4)
    model, tok, summary = train.train(args)
    cfg = train.export_model(model, tok, summary, args, str(tmp_path / "out"), prompt=PROMPT,
                             command="test")
    assert cfg["n_layers"] == layers and cfg["mlp"] == ("--mlp" in flags)
    assert (tmp_path / "out" / "model.onnx").exists()


def test_repeat_span_repeats_and_sample_batch_is_seeded():
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        seq = torch.arange(100)
        out = corpus.repeat_span(seq.clone(), g)
        changed = (out != torch.arange(100)).nonzero().flatten()
        start, L = int(changed[0]), len(changed)
        assert torch.equal(out[start: start + L], out[start - L: start])
    ids = np.arange(1000, dtype=np.int32)
    a = corpus.sample_batch(ids, 4, 16, torch.Generator().manual_seed(3), 0.5)
    b = corpus.sample_batch(ids, 4, 16, torch.Generator().manual_seed(3), 0.5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.equal(a[0][:, 1:], a[1][:, :-1])


def test_tile_random_fills_the_window_with_one_repeated_segment():
    g = torch.Generator().manual_seed(3)
    periods = set()
    for _ in range(20):
        seq = torch.arange(128)
        corpus.tile_random(seq, g, 512)
        period = next(p for p in range(8, 49) if torch.equal(seq[p:], seq[:-p]))
        periods.add(period)
        assert int(seq.max()) < 512
    assert len(periods) > 5  # the period changes, so no positional shortcut predicts it


def test_lr_schedule_warms_up_and_decays():
    args = train.parse_args(["--steps", "100", "--warmup", "10", "--lr", "1e-3"])
    lrs = [train.lr_at(s, args) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[-1] == pytest.approx(1e-4, rel=0.05)


def test_scores_find_planted_heads():
    """A model whose layer-0 head attends to the previous token and whose layer-1 head does
    induction on the probe gets the scores the definitions promise."""
    n, T = train.PROBE_N, 2 * train.PROBE_N
    prev = torch.zeros(1, 1, T, T)
    ind = torch.zeros(1, 1, T, T)
    for i in range(T):
        prev[0, 0, i, max(i - 1, 0)] = 1
        ind[0, 0, i, i - n + 1 if i >= n else i] = 1
    from export import scores
    assert train.per_head([prev], scores.prev_token)[0, 0] == pytest.approx(1.0)
    assert train.per_head([ind], scores.induction, n)[0, 0] == pytest.approx(1.0)


def inspect_dump(model_path, text):
    if not os.path.exists(INSPECT):
        pytest.skip("bin/inspect not built: run `make build` (make test builds it first)")
    out = subprocess.run([INSPECT, "dump", model_path, "--text", text], cwd=REPO,
                         capture_output=True, text=True)
    if out.returncode != 0 and "onnxruntime" in out.stderr and \
            not os.environ.get("ONNXRUNTIME_SHARED_LIBRARY_PATH"):
        pytest.skip(f"inspect dump: {out.stderr.strip()}")
    assert out.returncode == 0, out.stderr
    return list(csv.DictReader(io.StringIO(out.stdout)))


@pytest.mark.parametrize("kind", ["bpe", "word"])
def test_export_matches_go_inspector(tmp_path, kind):
    """The exported model's attention, run by `inspect dump` on text that the Go tokenizer
    encodes from tokenizer.json, equals PyTorch's on the ids Python's tokenizers gives."""
    args = tiny_args(tmp_path, "--tokenizer", kind, "--n-ctx", "64", steps=10)
    model, tok, summary = train.train(args)
    folder = str(tmp_path / "out")
    cfg = train.export_model(model, tok, summary, args, folder, prompt=PROMPT, command="test")
    assert cfg["tokenizer"]["kind"] == kind
    text = "The king doth love the sea, the king doth love the sea.\nGood night, sweet lady"
    ids = Tokenizer.from_file(os.path.join(folder, "tokenizer.json")).encode(
        text, add_special_tokens=False).ids
    assert ids == tok.encode(text, add_special_tokens=False).ids
    with torch.no_grad():
        _, attn = model(torch.tensor([ids]), return_attn=True)
    rows = inspect_dump(os.path.join(folder, "model.onnx"), text)
    T = len(ids)
    assert len(rows) == 2 * 2 * T * T, "Go tokenized the text differently"
    got = np.zeros((2, 2, T, T), dtype=np.float32)
    for r in rows:
        got[int(r["layer"]), int(r["head"]), int(r["query"]), int(r["key"])] = float(r["weight"])
    want = torch.stack([a[0] for a in attn]).numpy()
    assert np.abs(got - want).max() <= 1e-5
    ref = json.load(open(os.path.join(folder, "reference.json")))
    assert ref["runs"][-1]["ids"] == tok.encode(PROMPT, add_special_tokens=False).ids
    golden = json.load(open(os.path.join(folder, "tokenizer_golden.json")))
    assert golden["cases"][0]["text"] == PROMPT


def test_corpus_reads_files_and_folders(tmp_path):
    folder = write_corpus(str(tmp_path / "d"))
    assert len(corpus.list_files([folder])) == 2
    assert len(corpus.list_files([os.path.join(folder, "a.txt")])) == 1
    with pytest.raises(FileNotFoundError):
        corpus.list_files([str(tmp_path / "missing")])


def test_zero_layer_model_is_a_bigram_model():
    m = AttnOnly(AttnOnlyConfig(n_layers=0, vocab_size=10, n_ctx=8))
    logits, attn = m(torch.tensor([[1, 2, 3]]), return_attn=True)
    assert attn == [] and logits.shape == (1, 3, 10)


def test_export_checkpoint_and_compare(tmp_path):
    args = tiny_args(tmp_path, "--n-ctx", "128", steps=10)
    args.command = "python -m export.train (test)"
    train.train(args)
    out = tmp_path / "exported"
    cfg = train.export_checkpoint(str(tmp_path / "run"), str(out))
    assert cfg["training"]["steps"] == 10 and cfg["training"]["command"] == args.command
    assert cfg["default_prompt"] == train.DEFAULT_PROMPT
    for f in ["model.onnx", "tokenizer.json", "reference.json", "CARD.md", "tokenizer_golden.json"]:
        assert (out / f).exists(), f
    table = train.compare([str(tmp_path / "run")])
    assert "| run | 2 |" in table and "| L1H1 |" in table


def test_repeat_span_of_random_ids():
    g = torch.Generator().manual_seed(2)
    seq = torch.full((64,), 1000)  # ids outside the random range
    out = corpus.repeat_span(seq, g, vocab_size=10)
    changed = (out != 1000).nonzero().flatten()
    L = len(changed) // 2
    assert L >= 8 and bool((out[changed] < 10).all())
    assert torch.equal(out[changed[:L]], out[changed[L:]])
