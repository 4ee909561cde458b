"""Finding the packaging tools: a missing tool skips a test locally and fails it in CI."""

from __future__ import annotations

import os
import shutil
import sys

import pytest


def find(tool: str) -> str | None:
    """A tool on PATH, or beside the running interpreter (a virtualenv's bin is not always on PATH)."""
    return shutil.which(tool) or shutil.which(tool, path=os.path.dirname(sys.executable))


def require(tool: str, how: str) -> str:
    path = find(tool)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is missing in CI: .ci/run should install it ({how})")
        pytest.skip(f"{tool} is not installed ({how})")
    return path
