"""A natural-data training corpus that every machine with Python has: the standard
library's own source, concatenated into one text file.

    python -m export.code_corpus OUT.txt [--stdlib DIR]

Every *.py file under DIR (default: this Python's standard library) except tests,
idlelib and installed packages, in byte order of their paths, each file's text as it is.
Nothing is injected or repeated: what repeats in it (names, idioms) is the code's own. Prints
the file count, size and sha256 so a run can say exactly what it trained on.
"""
import argparse
import hashlib
import os
import sysconfig

SKIP_DIRS = {"test", "tests", "idlelib", "site-packages", "dist-packages", "__pycache__"}


def source_files(stdlib):
    """The corpus's .py files under stdlib, sorted by path (bytewise)."""
    files = []
    for root, dirs, names in os.walk(stdlib):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        files += [os.path.join(root, n) for n in names if n.endswith(".py")]
    rel = sorted(os.path.relpath(f, stdlib).encode() for f in files)
    return [os.path.join(stdlib, r.decode()) for r in rel]


def write(out, stdlib):
    """Writes the corpus to out; returns (files, bytes, sha256 hex)."""
    files = source_files(stdlib)
    if not files:
        raise SystemExit(f"code_corpus: no .py files under {stdlib}; give the standard library with --stdlib DIR")
    h, n = hashlib.sha256(), 0
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "wb") as f:
        for p in files:
            with open(p, "rb") as src:
                data = src.read()
            f.write(data)
            h.update(data)
            n += len(data)
    return len(files), n, h.hexdigest()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--stdlib", default=sysconfig.get_paths()["stdlib"])
    a = ap.parse_args(argv)
    files, size, digest = write(a.out, a.stdlib)
    print(f"code_corpus: {files} files from {a.stdlib}, {size} bytes, sha256 {digest}")


if __name__ == "__main__":
    main()
