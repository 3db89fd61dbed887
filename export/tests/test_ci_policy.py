"""export/tests/ci_policy.py: under CI=true a skip fails, a LegitimateSkip stays a skip, a
module that skips itself while collected is an error; outside CI all three skip."""
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TESTS = '''
import pytest
from export.tests.ci_policy import legitimate_skip


def test_plain_skip():
    pytest.skip("fixture absent")


def test_missing_module():
    pytest.importorskip("no_such_module_for_ci_policy")


@pytest.mark.skipif(True, reason="marked")
def test_skipif():
    pass


def test_legitimate():
    legitimate_skip("optimum cannot be installed beside PyTorch 1.13")


@pytest.mark.xfail(reason="known", strict=True)
def test_xfail():
    assert False


def test_passes():
    assert True
'''

MODULE_SKIP = '''
import pytest
pytest.importorskip("no_such_module_for_ci_policy")


def test_never_collected():
    pass
'''


@pytest.fixture
def inner(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    pytester.makeconftest('pytest_plugins = ["export.tests.ci_policy"]\n')
    return pytester


@pytest.mark.parametrize("ci, want", [
    # skipif is evaluated in setup: a failure there counts as an error.
    ("true", dict(passed=1, failed=2, errors=1, skipped=1, xfailed=1)),
    ("1", dict(passed=1, failed=2, errors=1, skipped=1, xfailed=1)),
    ("", dict(passed=1, failed=0, skipped=4, xfailed=1)),
    ("false", dict(passed=1, failed=0, skipped=4, xfailed=1)),
])
def test_skips_fail_under_ci(inner, monkeypatch, ci, want):
    monkeypatch.setenv("CI", ci)
    inner.makepyfile(test_inner=TESTS)
    result = inner.runpytest_subprocess("-p", "no:cacheprovider", "-rA")
    result.assert_outcomes(**want)
    if want["failed"]:
        result.stdout.fnmatch_lines(["*fixture absent*CI=*fails under CI instead of skipping*"])
        result.stdout.fnmatch_lines(["*no_such_module_for_ci_policy*fails under CI*"])


@pytest.mark.parametrize("ci, errors", [("true", 1), ("", 0)])
def test_module_level_skip_is_an_error_under_ci(inner, monkeypatch, ci, errors):
    monkeypatch.setenv("CI", ci)
    inner.makepyfile(test_module=MODULE_SKIP)
    result = inner.runpytest_subprocess("-p", "no:cacheprovider")
    if errors:
        result.assert_outcomes(errors=1)
        assert result.ret != 0
    else:
        result.assert_outcomes(skipped=1)
        assert result.ret in (0, 5)  # all skipped / nothing ran
