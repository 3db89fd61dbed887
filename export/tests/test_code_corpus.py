import hashlib

from export import code_corpus


def test_corpus_is_the_sources_in_path_order_without_tests(tmp_path):
    lib = tmp_path / "lib"
    for rel, text in [("b.py", "B\n"), ("a/z.py", "Z\n"), ("a/Y.py", "Y\n"), ("test/t.py", "T\n"),
                      ("site-packages/p.py", "P\n"), ("a/notes.txt", "N\n")]:
        (lib / rel).parent.mkdir(parents=True, exist_ok=True)
        (lib / rel).write_text(text)
    out = tmp_path / "out" / "corpus.txt"
    files, size, digest = code_corpus.write(str(out), str(lib))
    assert out.read_text() == "Y\nZ\nB\n"  # a/Y.py < a/z.py < b.py bytewise; tests, packages, .txt left out
    assert (files, size) == (3, 6)
    assert digest == hashlib.sha256(b"Y\nZ\nB\n").hexdigest()
