"""The CI policy for export/'s tests, loaded by export/conftest.py as a pytest plugin.

Under CI (the environment variable CI set to a true value, as .ci/run does and most CI
services do; the same spellings as Go's strconv.ParseBool), a skipped test is a failure: in
CI a missing Python dependency, fixture or built binary means the set-up is broken, and a
skip would report a green run that checked nothing. Outside CI a skip stays a skip.

A skip that CI cannot make go away — a tool that cannot be installed beside the pinned
PyTorch — raises LegitimateSkip (legitimate_skip(reason)) instead of calling pytest.skip;
every use says why in its reason. Expected failures (xfail) are left alone.
"""
import os

import pytest

CI_ENV = "CI"
_TRUE = {"1", "t", "T", "TRUE", "true", "True"}


def in_ci():
    """True when $CI is a true value ("true", "1", …), as testutil.InCI in Go."""
    return os.environ.get(CI_ENV, "") in _TRUE


class LegitimateSkip(pytest.skip.Exception):
    """A skip that stays a skip under CI; raise it through legitimate_skip."""


def legitimate_skip(reason):
    """Skips the current test even under CI. reason must say why CI cannot meet the need."""
    __tracebackhide__ = True  # report the caller's line
    raise LegitimateSkip(reason)


def _reason(longrepr):
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def _ci_failure(reason):
    return (f"{reason.removeprefix('Skipped: ')} ({CI_ENV}={os.environ.get(CI_ENV)}: a missing "
            "dependency, fixture or build fails under CI instead of skipping)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not in_ci() or not rep.skipped or hasattr(rep, "wasxfail"):
        return
    if call.excinfo is not None and call.excinfo.errisinstance(LegitimateSkip):
        return
    rep.outcome = "failed"
    rep.longrepr = _ci_failure(_reason(rep.longrepr))


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """A module that skips itself while being collected (a module-level importorskip) fails
    under CI: a collection error, which stops the run."""
    outcome = yield
    rep = outcome.get_result()
    if in_ci() and rep.outcome == "skipped":
        rep.outcome = "failed"
        rep.longrepr = _ci_failure(_reason(rep.longrepr))
