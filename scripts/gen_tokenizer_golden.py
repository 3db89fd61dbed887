#!/usr/bin/env python3
"""Writes the tokenizer golden files under tokenizer/testdata/golden/.

Hugging Face's Python `tokenizers` package (pinned in export/requirements.txt) is an independent
caller of the same Rust tokenizers code that build/tokenizers/libtokenizers.a embeds; the Go tests
must reproduce its ids exactly, with and without special tokens, and its offsets.

Run from the repository root, after `make setup`:

    .venv/bin/python scripts/gen_tokenizer_golden.py          # write the golden files
    .venv/bin/python scripts/gen_tokenizer_golden.py --bench  # time Python on the Go benchmark's text

Tokenizers read (never copied into the repository):
  - ../shared/fixtures/gpt2-tokenizer/tokenizer.json            (GPT-2 BPE + CodeGen whitespace tokens)
  - ../shared/fixtures/gpt2-tokenizer/alt-pykeio-ort/tokenizer.json (plain GPT-2)
  - the test data that the Go module github.com/daulet/tokenizers ships, from the Go module cache.
"""

import json
import os
import random
import subprocess
import sys

import tokenizers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tokenizer", "testdata", "golden")
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "fixtures", "gpt2-tokenizer")


def module_dir():
    out = subprocess.run(
        ["go", "list", "-m", "-f", "{{.Dir}}", "github.com/daulet/tokenizers"],
        cwd=ROOT, check=True, capture_output=True, text=True)
    d = out.stdout.strip()
    if not d or not os.path.isdir(d):
        sys.exit("gen_tokenizer_golden: run `go mod download` first (github.com/daulet/tokenizers not in the module cache)")
    return d


# Name in the golden file -> (where, relative path). "shared" paths are relative to
# ../shared/fixtures/gpt2-tokenizer, "module" paths to the Go module's directory.
TOKENIZERS = {
    "gpt2": ("shared", "tokenizer.json"),
    "gpt2-plain": ("shared", "alt-pykeio-ort/tokenizer.json"),
    "bert-base-uncased": ("module", "test/data/bert-base-uncased.json"),
    "all-minilm-l6-v2": ("module", "test/data/all-minilm-l6-v2.json"),
    "llama3-8b-instruct": ("module", "test/data/Meta-Llama-3-8B-Instruct.json"),
    "cohere": ("module", "test/data/cohere-tokenizer.json"),
    "labse": ("module", "test/data/sentence-transformers-labse.json"),
}

# Hand-picked inputs that break naive tokenizers. No NUL bytes: the C binding takes C strings,
# so attnscope refuses text with NUL (tested separately in Go).
TRICKY = [
    "",
    " ",
    "  ",
    "   ",
    "          ",
    "\t",
    "\n",
    "\n\n",
    "\r\n",
    "a\r\nb\r\n",
    "Hello, world!",
    "Hello world",
    " Hello world",
    "Hello world ",
    "  Hello   world  ",
    "The quick brown fox jumps over the lazy dog.",
    "the the the the",
    "tab\tseparated\tvalues",
    "\tindented\n\t\tmore",
    "line one\nline two\n\nline four",
    "trailing newline\n",
    "I'm you're he's we've they'll I'd can't won't",
    "I'M YOU'RE HE'S",
    "don’t (curly apostrophe)",
    "12345 678901 3.14159 1,000,000 -42 +7 1e-9",
    "2024-06-01T12:34:56Z",
    "0x1F 0b1010 007",
    "café naïve résumé",
    "cafe\u0301 (combining acute)",
    "e\u0301\u0302\u0303 stacked marks",
    "Ǆ ǅ ǆ ﬁ ﬂ ß ẞ",
    "Ünïcödé ÄÖÜ äöü",
    "日本語のテキスト",
    "中文分词测试，标点。",
    "한국어 텍스트",
    "Привет, мир!",
    "Γειά σου Κόσμε",
    "مرحبا بالعالم",
    "שלום עולם",
    "हिन्दी पाठ",
    "ภาษาไทย",
    "emoji 😀😃😄",
    "👍🏽 skin tone",
    "👨‍👩‍👧‍👦 family ZWJ",
    "🇩🇪🇯🇵 flags",
    "❤️ variation selector",
    "zero\u200bwidth\u200bspace",
    "\ufeffBOM at start",
    "soft\u00adhyphen",
    "non\u00a0breaking\u00a0space",
    "ideographic\u3000space",
    "control \x01\x02\x1b[31m escape \x7f",
    "C1 \u0085 next line \u2028 line sep",
    "math ∑ ∫ √ ∞ ≠ ≤ ≥",
    "arrows → ← ↑ ↓ ⇒",
    "quotes «» „“ ‘’ \"\"",
    "code: def f(x):\n    return x ** 2\n",
    "<html><body class=\"x\">hi</body></html>",
    "https://example.com/path?q=1&r=2#frag",
    "user@example.com",
    "snake_case camelCase PascalCase kebab-case",
    "ALLCAPS lowercase MiXeD",
    "!!!???...,,,;;;",
    "$100 €50 £20 ¥1000",
    "<|endoftext|>",
    "Hello<|endoftext|>world",
    "Hello <|endoftext|> world",
    "<|endoftext|><|endoftext|>",
    "[CLS] hello [SEP] world [SEP]",
    "[MASK] is [UNK] and [PAD]",
    "<|begin_of_text|>Hi<|eot_id|>",
    "<BOS_TOKEN>cohere<EOS_TOKEN>",
    "a" * 100,
    "ab" * 64,
    "x y " * 30,
    "\u00e9" * 20,
    "😀" * 10,
    "\U0001F600\U0001F601 ",
    "\U000E0041 tag character",
    "\uFFFD replacement character",
    "𝕳𝖊𝖑𝖑𝖔 math alphanumerics",
    "Ⅻ ① ² ½",
]

# Pieces for the seeded random strings: ASCII, whitespace runs, accents, CJK, emoji, joiners.
POOL = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") + [
    " ", " ", " ", "  ", "\t", "\n", "\r\n", "'", "'s", "'ll", ".", ",", "!", "?", "-", "_", "/",
    "é", "e\u0301", "ü", "ß", "ñ", "ø", "日", "本", "語", "中", "한", "Ж", "λ", "ع", "ש", "क",
    "😀", "👍🏽", "\u200d", "🇯🇵", "\u00a0", "\u3000", "<|endoftext|>", "[SEP]", "€", "∑", "\x01",
]


def random_strings(n=40, seed=20240601):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.randint(1, 40)
        out.append("".join(rng.choice(POOL) for _ in range(k)))
    return out


def long_text(mod):
    with open(os.path.join(mod, "test", "data", "long_text.txt"), encoding="utf-8") as f:
        lorem = f.read()[:5000]
    return lorem + "\n\n" + "\n".join(TRICKY[10:60]) + "\n"


def byte_offsets(text, offsets):
    """Python gives character offsets; the Rust library (and Go) give byte offsets."""
    prefix = [0]
    for ch in text:
        prefix.append(prefix[-1] + len(ch.encode("utf-8")))
    return [[prefix[a], prefix[b]] for a, b in offsets]


def main():
    mod = module_dir()
    texts = [{"kind": "tricky", "text": t} for t in TRICKY]
    texts += [{"kind": "random", "text": t} for t in random_strings()]
    texts.append({"kind": "long", "text": long_text(mod)})
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "inputs.json"), "w", encoding="utf-8") as f:
        json.dump({"generator": "scripts/gen_tokenizer_golden.py", "inputs": texts}, f, ensure_ascii=True, indent=0)
        f.write("\n")

    for name, (where, rel) in TOKENIZERS.items():
        base = SHARED if where == "shared" else mod
        path = os.path.join(base, rel)
        if not os.path.exists(path):
            sys.exit(f"gen_tokenizer_golden: {path} is missing")
        tok = tokenizers.Tokenizer.from_file(path)
        # attnscope never applies a file's padding or truncation (see tokenizer/padding.go).
        tok.no_padding()
        tok.no_truncation()
        cases = []
        for t in texts:
            try:
                plain = tok.encode(t["text"], add_special_tokens=False)
                special = tok.encode(t["text"], add_special_tokens=True)
            except Exception as e:  # e.g. labse's test vocabulary has no [UNK] token
                # The C binding reports an encoding error as an empty encoding.
                cases.append({"ids": [], "offsets": [], "ids_special": [], "error": str(e)})
                continue
            cases.append({
                "ids": plain.ids,
                "offsets": byte_offsets(t["text"], plain.offsets),
                "ids_special": special.ids,
            })
        doc = {
            "tokenizer": name,
            "where": where,
            "path": rel,
            "python_tokenizers": tokenizers.__version__,
            "vocab_size": tok.get_vocab_size(with_added_tokens=True),
            "cases": cases,
        }
        with open(os.path.join(OUT, name + ".json"), "w", encoding="utf-8") as f:
            # One case per line: small diffs when a generator input changes.
            f.write("{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in doc.items() if k != "cases"))
            f.write(',"cases":[\n' + ",\n".join(json.dumps(c, separators=(",", ":")) for c in cases) + "\n]}\n")
        print(f"gen_tokenizer_golden: {name}: {len(cases)} inputs", file=sys.stderr)


def bench(reps=20):
    """Python's side of BenchmarkEncodeGPT2 (tokenizer/bench_test.go): the same text, the same
    GPT-2 tokenizer.json, add_special_tokens=False, mean time per encode over reps."""
    import time
    with open(os.path.join(os.path.dirname(ROOT), "shared", "data", "wikitext-2", "test.txt"), "rb") as f:
        data = f.read()
    n = 100_000
    while n < len(data) and data[n - 1] != ord("\n"):
        n += 1
    text = data[:n].decode("utf-8")
    tok = tokenizers.Tokenizer.from_file(os.path.join(SHARED, "alt-pykeio-ort", "tokenizer.json"))
    tok.encode(text, add_special_tokens=False)  # warm-up
    start = time.perf_counter()
    for _ in range(reps):
        ntok = len(tok.encode(text, add_special_tokens=False).ids)
    dt = (time.perf_counter() - start) / reps
    print(f"python tokenizers {tokenizers.__version__}: {n} bytes, {ntok} tokens, "
          f"{dt * 1e3:.1f} ms/encode, {n / dt / 1e6:.2f} MB/s, {ntok / dt:.0f} tokens/s")


if __name__ == "__main__":
    if sys.argv[1:] == ["--bench"]:
        bench()
    else:
        main()
