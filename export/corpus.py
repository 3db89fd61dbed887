"""Training text: local files -> a tokenizer.json -> token ids -> train/held-out batches.

- read_texts(paths): every file named, and every *.txt under every folder named, in sorted
  order, read as UTF-8 (undecodable bytes replaced).
- build_tokenizer(texts, kind, vocab_size): a Hugging Face `tokenizers` tokenizer trained on
  the texts: "bpe" (byte-level BPE as in GPT-2, no unknown tokens) or "word" (whitespace/
  punctuation words, the rest `<unk>`). Saved as tokenizer.json, it is what the Go
  tokenizer package loads, through the same Rust code.
- encode(tok, texts): each text encoded whole, joined into one int array.
- Batches: random windows of n_ctx + 1 tokens, from a torch.Generator the trainer checkpoints;
  optionally a share of them get a span of their own text repeated (see repeat_span).
"""
import os

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIAL = ["<|endoftext|>"]


def list_files(paths):
    files = []
    for p in paths:
        if os.path.isdir(p):
            for root, _, names in sorted(os.walk(p)):
                files += [os.path.join(root, n) for n in sorted(names) if n.endswith(".txt")]
        elif os.path.isfile(p):
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    if not files:
        raise ValueError(f"no text files in {', '.join(paths)}")
    return files


def read_texts(paths):
    out = []
    for f in list_files(paths):
        with open(f, encoding="utf-8", errors="replace") as fh:
            out.append(fh.read())
    return out


def build_tokenizer(texts, kind="bpe", vocab_size=2048):
    if kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=SPECIAL, show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    elif kind == "word":
        tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
        trainer = trainers.WordLevelTrainer(
            vocab_size=vocab_size, special_tokens=SPECIAL + ["<unk>"], show_progress=False)
    else:
        raise ValueError(f"tokenizer kind {kind!r}: use bpe or word")
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def encode(tok, texts):
    """One int32 array: each text's ids, texts separated by <|endoftext|>."""
    eot = tok.token_to_id(SPECIAL[0])
    parts = []
    for enc in tok.encode_batch(texts, add_special_tokens=False):
        parts += [np.asarray(enc.ids, dtype=np.int32), np.asarray([eot], dtype=np.int32)]
    return np.concatenate(parts)


def split(ids, held_out=0.1):
    """(train, held-out): the last `held_out` share of the tokens is held out."""
    cut = int(len(ids) * (1 - held_out))
    return ids[:cut], ids[cut:]


def repeat_span(seq, g, vocab_size=None):
    """In place: a span of the window, of random length (8 .. half the window) at a random
    place, is written again right after itself, so that copying it pays off (induction).
    With vocab_size, the span is first replaced by uniformly random ids (< vocab_size), so
    that only copying, not the text's statistics, predicts its second copy."""
    n = seq.size(0)
    L = int(torch.randint(8, n // 2 + 1, (1,), generator=g))
    s = int(torch.randint(0, n - 2 * L + 1, (1,), generator=g))
    if vocab_size:
        seq[s: s + L] = torch.randint(0, vocab_size, (L,), generator=g)
    seq[s + L: s + 2 * L] = seq[s: s + L].clone()
    return seq


def tile_random(seq, g, vocab_size):
    """In place: the whole window becomes one segment of 8–48 uniformly random ids repeated
    until the window is full. The period changes from window to window, so only looking up
    the token after the previous occurrence of the current one (an induction head), not a
    fixed positional offset, predicts it."""
    L = int(torch.randint(8, 49, (1,), generator=g))
    seg = torch.randint(0, vocab_size, (L,), generator=g)
    seq[:] = seg.repeat(seq.size(0) // L + 1)[: seq.size(0)]
    return seq


def sample_batch(ids, batch, n_ctx, g, repeat_frac=0.0, random_vocab=None, tiled=False):
    """(x, y) int64 [batch, n_ctx]: windows at random offsets; y is x shifted by one.
    A share `repeat_frac` of the rows (chosen per row with g) repeat a span of themselves
    (a span of random ids < random_vocab, when that is given), or with tiled are replaced
    by a tiled random segment (tile_random)."""
    starts = torch.randint(0, len(ids) - n_ctx - 1, (batch,), generator=g)
    rows = torch.stack([torch.from_numpy(ids[s: s + n_ctx + 1].astype(np.int64))
                        for s in starts.tolist()])
    if repeat_frac > 0:
        pick = torch.rand(batch, generator=g) < repeat_frac
        for r in pick.nonzero().flatten().tolist():
            if tiled:
                tile_random(rows[r], g, random_vocab)
            else:
                repeat_span(rows[r], g, random_vocab)
    return rows[:, :-1], rows[:, 1:]


def eval_windows(ids, n_ctx, max_windows, stride=None):
    """(x, y) of up to max_windows held-out windows, evenly spread, starting every `stride`
    tokens (default n_ctx: no overlap). Overlapping windows put each token at several
    positions, so per-position means compare positions over nearly the same tokens."""
    stride = stride or n_ctx
    n = (len(ids) - n_ctx - 1) // stride + 1
    idx = np.linspace(0, n - 1, min(n, max_windows)).astype(int)
    rows = torch.stack([torch.from_numpy(ids[i * stride: i * stride + n_ctx + 1].astype(np.int64))
                        for i in idx])
    return rows[:, :-1], rows[:, 1:]
