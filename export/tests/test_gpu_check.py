"""scripts/gpu-check.sh, the prepared run for a GPU machine, run here on CPU: --device cpu
--quick goes through every step (attention against PyTorch's references, the timings on the
tiny stand-in, the natural-text training when scripts/train-natural.sh exists) and passes;
a comparison held to an impossible tolerance fails the script."""
import os
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "scripts", "gpu-check.sh")


def _env(tmp_path):
    if not os.path.exists(os.path.join(REPO, "bin", "inspect")):
        pytest.skip("bin/inspect not built: run `make build` (make test builds it first)")
    env = dict(os.environ)
    lib = os.path.join(REPO, "lib", "libonnxruntime.so")
    if not env.get("ONNXRUNTIME_SHARED_LIBRARY_PATH"):
        if not os.path.exists(lib):
            pytest.skip("no onnxruntime library: run `bash scripts/fetch-onnxruntime.sh`")
        env["ONNXRUNTIME_SHARED_LIBRARY_PATH"] = lib
    env["OUT"] = str(tmp_path / "out")
    env["GPU_CHECK_WORK"] = str(tmp_path / "work")
    return env


def _run(tmp_path, *args):
    return subprocess.run(["bash", SCRIPT, "--device", "cpu", "--quick", *args], cwd=REPO,
                          env=_env(tmp_path), capture_output=True, text=True, timeout=300)


def test_quick_cpu_run_passes_end_to_end(tmp_path):
    r = _run(tmp_path)
    out = r.stdout
    assert r.returncode == 0, out + r.stderr[-3000:]
    assert "FAIL " not in out
    # every committed model's attention against PyTorch's reference
    for name in ("demo", "gpt2tiny", "mha", "gqa", "merged", "encdec", "split-encdec"):
        assert f"PASS     attention {name} reference cpu-vs-pytorch" in out, out
    assert "PASS     timings torch-cpu" in out and "PASS     timings ort-cpu" in out, out
    if os.path.exists(os.path.join(REPO, "scripts", "train-natural.sh")):
        assert "PASS     training:" in out, out
        assert any(f.startswith("natural-export.tar.gz") for f in os.listdir(tmp_path / "out"))
    else:
        assert "scripts/train-natural.sh does not exist yet" in out, out
    res = tmp_path / "out"
    for f in ("env.txt", "summary.txt", "timings.jsonl", "log.txt"):
        assert (res / f).is_file(), f
    assert len(os.listdir(res)) <= 8  # a device run brings back at most 8 files
    assert "onnxruntime (cpu):" in (res / "env.txt").read_text()
    assert (res / "summary.txt").read_text().strip().splitlines()[-1] \
        == out.strip().splitlines()[-1]


def test_broken_comparison_fails(tmp_path):
    # ORT and PyTorch agree to ~1e-6, never to 1e-12: every comparison must fail, and the script
    r = _run(tmp_path, "--tol", "1e-12", "--skip-bench", "--skip-train")
    assert r.returncode == 1, r.stdout + r.stderr[-3000:]
    fails = [l for l in r.stdout.splitlines() if l.startswith("FAIL     attention")]
    assert len(fails) == 7, r.stdout
    assert "tolerance 1e-12" in fails[0]
    assert "7 FAILED" in r.stdout.splitlines()[-1]
