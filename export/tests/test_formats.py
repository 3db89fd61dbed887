"""`inspect dump|heads|tokens|ablate --format npz|parquet|json` read by numpy, pyarrow and
pandas equal the CSV the same command writes (bin/inspect on the committed demo model)."""
import io
import json
import os

import numpy as np
import pytest

from export.tests import inspect_cli

MODEL = os.path.join("models", "demo", "model.onnx")
TEXT = 'Hello world, hello "world"'


def run(tmp_path, ext, *args):
    """Runs bin/inspect ARGS --out tmp/out.EXT and returns the file's path."""
    out = tmp_path / f"out-{len(list(tmp_path.iterdir()))}.{ext}"
    p = inspect_cli.run(*args, "--out", str(out), "--device", "cpu")
    assert p.returncode == 0, p.stderr
    return out


def pandas():
    return pytest.importorskip("pandas", reason="pandas is in export/requirements.txt")


def test_dump_npz_equals_csv(tmp_path):
    pd = pandas()
    args = ("dump", MODEL, "--text", TEXT)
    df = pd.read_csv(run(tmp_path, "csv", *args), keep_default_na=False)
    with np.load(run(tmp_path, "npz", *args), allow_pickle=False) as z:
        assert z["ids"].dtype == np.int64 and z["tokens"].dtype.kind == "U"
        T = len(z["ids"])
        assert list(z["layers"]) == [0, 1] and list(z["layer_kinds"]) == ["self", "self"]
        for layer in (0, 1):
            a = z[f"attn.L{layer}"]
            assert a.dtype == np.float32 and a.shape == (8, T, T)
            rows = df[df.layer == layer]
            # CSV rows are head, query, key in C order: the array flattened.
            assert np.array_equal(rows.weight.to_numpy(np.float32), a.reshape(-1))
            assert np.allclose(a.sum(axis=-1), 1, atol=1e-5)
        first = df[(df["layer"] == 0) & (df["head"] == 0) & (df["key"] == 0)]
        assert list(first.query_id) == list(z["ids"])
        assert list(first.query_token) == list(z["tokens"])


@pytest.mark.parametrize("extra", [(), ("--causal-only",), ("--top-k", "2", "--min-weight", "0.05")])
def test_dump_parquet_equals_csv(tmp_path, extra):
    pd = pandas()
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is in export/requirements.txt")
    args = ("dump", MODEL, "--text", TEXT, *extra)
    want = pd.read_csv(run(tmp_path, "csv", *args), keep_default_na=False)
    path = run(tmp_path, "parquet", *args)
    f = pq.ParquetFile(path)
    assert f.metadata.num_row_groups == 2  # one per layer
    for rg in range(2):
        enc = f.metadata.row_group(rg).column(4).encodings  # query_token
        assert "RLE_DICTIONARY" in enc or "PLAIN_DICTIONARY" in enc
    got = pd.read_parquet(path)
    assert list(got.columns) == list(want.columns)
    for c in ("query_token", "key_token"):
        got[c] = got[c].astype(str)
    got["weight"] = got["weight"].astype(np.float64)
    want["weight"] = want["weight"].astype(np.float32).astype(np.float64)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


def test_dump_json(tmp_path):
    pd = pandas()
    args = ("dump", MODEL, "--text", TEXT, "--causal-only")
    want = pd.read_csv(run(tmp_path, "csv", *args), keep_default_na=False)
    doc = json.loads(run(tmp_path, "json", *args).read_text())
    weights = [w for L in doc["layers"] for h in L["weights"] for row in h for w in row]
    assert np.allclose(np.float32(weights), want.weight.to_numpy(np.float32), atol=0)
    assert all(len(row) == q + 1 for L in doc["layers"] for h in L["weights"] for q, row in enumerate(h))


@pytest.mark.parametrize("cmd", [
    ("heads", MODEL, "--text", TEXT, "--probes", "2", "--probe-len", "8"),
    ("tokens", MODEL, "--text", TEXT),
    ("ablate", MODEL, "--text", TEXT, "--heads", "L0H0,L1H3"),
])
def test_tables_equal_csv(tmp_path, cmd):
    pd = pandas()
    pytest.importorskip("pyarrow", reason="pyarrow is in export/requirements.txt")
    want = pd.read_csv(run(tmp_path, "csv", *cmd), keep_default_na=False, na_values=["NaN", ""])
    tables = {
        "parquet": pd.read_parquet(run(tmp_path, "parquet", *cmd)),
        "json": pd.DataFrame(json.loads(run(tmp_path, "json", *cmd).read_text())),
    }
    with np.load(run(tmp_path, "npz", *cmd), allow_pickle=False) as z:
        assert list(z.files) == list(want.columns)
        tables["npz"] = pd.DataFrame({k: z[k] for k in z.files})
    for fmt, got in tables.items():
        assert list(got.columns) == list(want.columns), fmt
        for c in want.columns:
            if want[c].dtype.kind in "if":
                a, b = got[c].to_numpy(np.float64), want[c].to_numpy(np.float64)
                assert np.allclose(a, b, rtol=1e-7, atol=1e-12, equal_nan=True), (fmt, c)
            else:
                assert list(got[c].astype(str)) == list(want[c].astype(str)), (fmt, c)
