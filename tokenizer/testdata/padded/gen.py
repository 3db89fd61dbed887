#!/usr/bin/env python3
"""Writes tokenizer/testdata/padded/golden.json: what Hugging Face's Python `tokenizers` gives
for tokenizer.json files that set fixed padding and truncation, as sentence-transformers writes
them (pad and cut at 128), with those settings turned off (`no_padding()`, `no_truncation()`),
which is what attnscope must reproduce; and, to show the files really pad and cut, what Python
gives with the settings on.

Run from the repository root, after `make setup`:

    .venv/bin/python tokenizer/testdata/padded/gen.py

Tokenizers read (never copied into the repository): models/demo/tokenizer.json (committed; BPE)
and bert-base-uncased.json from the Go module github.com/daulet/tokenizers (WordPiece with
[CLS] … [SEP]). The Go test adds the same padding and truncation objects to them.
"""
import json
import os
import subprocess
import tempfile

import tokenizers

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
OUT = os.path.join(ROOT, "tokenizer", "testdata", "padded", "golden.json")

# As sentence-transformers' all-MiniLM-L12-v2 / paraphrase-* tokenizer.json files write them.
PADDING = {"strategy": {"Fixed": 128}, "direction": "Right", "pad_to_multiple_of": None,
           "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"}
TRUNCATION = {"direction": "Right", "max_length": 128, "strategy": "LongestFirst", "stride": 0}

SENTENCE = "The quick brown fox jumps over the lazy dog, and then it runs away."
TEXTS = ["", "Hello, world!", SENTENCE, " ".join([SENTENCE] * 30)]


def module_dir():
    out = subprocess.run(["go", "list", "-m", "-f", "{{.Dir}}", "github.com/daulet/tokenizers"],
                         cwd=ROOT, check=True, capture_output=True, text=True)
    return out.stdout.strip()


def with_settings(path):
    """The tokenizer.json at path with PADDING and TRUNCATION set, written to a temporary file."""
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    doc["padding"], doc["truncation"] = PADDING, TRUNCATION
    tmp = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8")
    json.dump(doc, tmp, ensure_ascii=False)
    tmp.close()
    return tmp.name


def cases(path):
    padded_path = with_settings(path)
    try:
        applied = tokenizers.Tokenizer.from_file(padded_path)
        plain = tokenizers.Tokenizer.from_file(padded_path)
    finally:
        os.unlink(padded_path)
    plain.no_padding()
    plain.no_truncation()
    out = []
    for text in TEXTS:
        out.append({
            "text": text,
            "ids": plain.encode(text, add_special_tokens=False).ids,
            "ids_special": plain.encode(text, add_special_tokens=True).ids,
            "with_file_settings": applied.encode(text, add_special_tokens=True).ids,
        })
    return out


def main():
    sources = {
        "demo": ("repo", "models/demo/tokenizer.json"),
        "bert-base-uncased": ("module", "test/data/bert-base-uncased.json"),
    }
    doc = {"python_tokenizers": tokenizers.__version__, "padding": PADDING,
           "truncation": TRUNCATION, "tokenizers": {}}
    for name, (where, rel) in sources.items():
        base = ROOT if where == "repo" else module_dir()
        doc["tokenizers"][name] = {"where": where, "path": rel,
                                   "cases": cases(os.path.join(base, rel))}
    with open(OUT, "w", encoding="utf-8") as f:  # one case per line
        text = json.dumps(doc, ensure_ascii=False)
        f.write(text.replace('{"text"', '\n{"text"') + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
