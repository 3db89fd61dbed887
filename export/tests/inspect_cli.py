"""Runs the Go tool, bin/inspect, from the tests that check its output against Python."""
import os
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INSPECT = os.path.join(REPO, "bin", "inspect")


def run(*args):
    """bin/inspect ARGS from the repository root, with the set-up's onnxruntime library
    unless ONNXRUNTIME_SHARED_LIBRARY_PATH names one; skips when the binary is not built."""
    if not os.path.exists(INSPECT):
        pytest.skip("bin/inspect not built: run `make build` (make test builds it first)")
    env = dict(os.environ)
    lib = os.path.join(REPO, "lib", "libonnxruntime.so")
    if not env.get("ONNXRUNTIME_SHARED_LIBRARY_PATH") and os.path.exists(lib):
        env["ONNXRUNTIME_SHARED_LIBRARY_PATH"] = lib
    return subprocess.run([INSPECT, *args], cwd=REPO, capture_output=True, text=True, env=env)
