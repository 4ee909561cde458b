"""Fixtures for tests of `edgeagent validate --config PATH`.

The command runs in the test's process (`run_command`: `edgeagent.cli.main` with the environment
and working directory it would have as a child): validation is pure, and two hundred
interpreter start-ups were a tenth of the suite's CPU. tests/test_cli.py and the side-by-side exit code tests run
the command as a process.

The CLI contract these tests rely on:

* a valid config exits 0 and prints "valid" on stdout;
* an invalid config exits 1 (as otelcol) and prints every error on stderr, one per line, as
  `error: <yaml path>: <message>`, the path joining keys with `::` as otelcol does
  (e.g. `exporters::otlphttp/telemetryflow::retry_on_failure::max_interval`).

Expected errors are written as `(path, [keywords])`:

* `path` must equal the reported path, or, when it ends in `::*`, the reported path
  may be that path or any path below it (`service::extensions::*` accepts
  `service::extensions` and `service::extensions::1`);
* every keyword must occur (case-insensitively) somewhere in the error line.

`assert_errors` checks both directions: every expected error is reported, and every
reported error is expected, so an "otherwise valid" test config really has no other
problem and one mistake does not cascade into follow-up errors.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edgeagent import cli

REPO_ROOT = Path(__file__).resolve().parents[2]
TESTDATA = REPO_ROOT / "tests" / "testdata"
SEEDS_DIR = TESTDATA / "seeds"
CONFIG_DIR = TESTDATA / "config"

# Variables the test configs read; removed from the inherited environment so that
# every test states exactly which of them are set.
_CONTROLLED_PREFIXES = ("TELEMETRYFLOW_", "EDGEAGENT_TEST_")
_CONTROLLED_NAMES = ("EDGE_LOCATION", "REGION")

ExpectedError = tuple[str, Sequence[str]]


@dataclass
class ValidateResult:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    errors: list[tuple[str, str]] = field(default_factory=list)
    error_lines: list[str] = field(default_factory=list)

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def describe(self) -> str:
        return (f"command: {' '.join(self.args)}\nexit code: {self.returncode}\n"
                f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}")


def parse_error_lines(stderr: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Split `error: <path>: <message>` lines into (path, message); the path ends at the first ": "."""
    lines, errors = [], []
    for raw in stderr.splitlines():
        line = raw.strip()
        if not line.startswith("error:"):
            continue
        rest = line[len("error:"):].strip()
        lines.append(line)
        path, sep, message = rest.partition(": ")
        errors.append((path, message) if sep else ("", rest))
    return lines, errors


def _environment(env: Mapping[str, str] | None) -> dict[str, str]:
    base = {key: value for key, value in os.environ.items()
            if not key.startswith(_CONTROLLED_PREFIXES) and key not in _CONTROLLED_NAMES}
    base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    base.update(env or {})
    return base


@contextlib.contextmanager
def _as_a_child(env: Mapping[str, str], cwd: Path) -> Iterator[tuple[io.StringIO, io.StringIO]]:
    """os.environ, the working directory, stdout and stderr as a child process would have them."""
    saved, here = dict(os.environ), os.getcwd()
    stdout, stderr = io.StringIO(), io.StringIO()
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            yield stdout, stderr
    finally:
        os.chdir(here)
        os.environ.clear()
        os.environ.update(saved)


def run_command(argv: Sequence[str], env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`edgeagent <argv>` in this process, as a child would run it: for the verbs that neither
    serve nor ask a running agent (validate, print-config, components, featuregate)."""
    with _as_a_child(_environment(env), REPO_ROOT) as (stdout, stderr):
        try:
            returncode = cli.main(list(argv))
        except SystemExit as exit_:  # argparse's usage errors
            returncode = exit_.code if isinstance(exit_.code, int) else 1
    return subprocess.CompletedProcess([sys.executable, "-m", "edgeagent", *argv], returncode,
                                       stdout.getvalue(), stderr.getvalue())


def run_validate(config: Path | str, env: Mapping[str, str] | None = None,
                 merged: Sequence[Path | str] = ()) -> ValidateResult:
    """`merged`: more configs given after `config` (`--config` again), merged onto it as otelcol merges them."""
    argv = ["validate", "--config", str(config)] + [part for extra in merged for part in ("--config", str(extra))]
    done = run_command(argv, env)
    lines, errors = parse_error_lines(done.stderr)
    return ValidateResult(done.args, done.returncode, done.stdout, done.stderr, errors, lines)


def _path_matches(expected: str, actual: str) -> bool:
    if expected.endswith("::*"):
        base = expected[:-3]
        return actual == base or actual.startswith(base + "::")
    return actual == expected


def _line_matches(spec: ExpectedError, path: str, line: str) -> bool:
    expected_path, keywords = spec
    return _path_matches(expected_path, path) and all(k.lower() in line.lower() for k in keywords)


def check_valid(result: ValidateResult) -> None:
    assert result.returncode == 0, f"expected a valid config\n{result.describe()}"
    assert "valid" in result.stdout.lower(), f"stdout must say the config is valid\n{result.describe()}"
    assert not result.errors, f"a valid config must not print errors\n{result.describe()}"


def check_errors(result: ValidateResult, expected: Iterable[ExpectedError],
                 optional: Iterable[ExpectedError] = ()) -> None:
    """Exit code 1, each `expected` error reported, and nothing reported beyond `expected` + `optional`."""
    expected, optional = list(expected), list(optional)
    assert result.returncode == 1, f"expected exit code 1 (invalid config)\n{result.describe()}"
    assert result.errors, f"an invalid config must print `error: <path>: <message>` lines\n{result.describe()}"
    pairs = list(zip(result.errors, result.error_lines, strict=True))
    missing = [spec for spec in expected if not any(_line_matches(spec, path, line) for (path, _), line in pairs)]
    assert not missing, f"errors not reported: {missing}\n{result.describe()}"
    unexpected = [line for (path, _), line in pairs
                  if not any(_line_matches(spec, path, line) for spec in expected + optional)]
    assert not unexpected, f"unexpected errors reported: {unexpected}\n{result.describe()}"


@pytest.fixture
def validate():
    """`validate(path, env={...}, merged=[...])` runs the CLI on a config file and returns a ValidateResult."""
    return run_validate


@pytest.fixture
def assert_valid():
    return check_valid


@pytest.fixture
def assert_errors():
    return check_errors
