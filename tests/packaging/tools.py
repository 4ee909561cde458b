"""Finding the packaging tools: a missing tool skips a test locally and fails it in CI."""

from __future__ import annotations

import os
import shutil

import pytest


def require(tool: str, how: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is missing in CI: .ci/run should install it ({how})")
        pytest.skip(f"{tool} is not installed ({how})")
    return path
