"""The fast loop (`-m "not e2e"`) leaves out every test that starts a process, and the suite's order
starts the longest tests first."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _collected() -> tuple[list[str], list[str]]:
    """One collection, as the fast loop selects: (the whole suite in its order, the tests `-m "not e2e"` keeps)."""
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider",
                             "-p", "tests.helpers.suite_order", "-m", "not e2e"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    order = [line.split(" ", 1) for line in lines if line.startswith(("selected tests/", "deselected tests/"))]
    fast = [test for verdict, test in order if verdict == "selected"]
    assert fast == [line for line in lines if "::" in line and line.startswith("tests/")], "what pytest listed"
    return [test for _, test in order], fast


@pytest.mark.e2e  # runs pytest's collection in a process of its own
def test_the_fast_loop_leaves_out_process_tests_and_the_suite_starts_with_the_longest():
    everything, fast = _collected()
    assert fast, "the fast loop collected nothing"
    by_directory = [test for test in fast if test.startswith(("tests/e2e/", "tests/packaging/", "tests/interop/"))]
    assert by_directory == []
    # tests that start a process through a fixture, outside those directories
    assert not [test for test in fast if test.startswith(("tests/exporters/test_otlp_grpc_exporter.py",
                                                          "tests/config/test_config_errors.py::test_bad_config_reports_error_at_path",
                                                          "tests/sampler/cluster/test_redis_state.py",
                                                          "tests/receivers/test_parse_cost.py::test_hostile",
                                                          "tests/receivers/test_parse_cost.py::test_ordinary",
                                                          "tests/receivers/test_parse_cost.py::test_grpc"))]

    assert everything[0].startswith("tests/packaging/test_debian_package.py::")
    assert everything[1].startswith("tests/packaging/test_debian_package.py::")
    first_fast = everything.index(fast[0])
    assert set(everything[first_fast:]) == set(fast), "every e2e test comes before the fast ones"
