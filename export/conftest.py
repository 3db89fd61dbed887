# Lets `cd export && python -m pytest` import the package as `export`, and applies the CI
# policy (export/tests/ci_policy.py): under CI=true a skipped test fails unless it raises
# LegitimateSkip.
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytest_plugins = ["export.tests.ci_policy", "pytester"]
