"""Work that one test run does once, however many pytest-xdist workers need its result."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path

import pytest


def once_per_run(tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], Path]) -> Path:
    """`make(directory)` runs in the first worker that asks; the others wait for it and get the path it
    returned. A failed `make` leaves no result, so the next worker to ask tries again (and fails alike)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the workers' base directories share this parent, one per run
    result = root / f"{name}.path"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if result.exists():
            return Path(result.read_text())
        directory = root / name
        directory.mkdir(exist_ok=True)
        made = make(directory)
        result.write_text(str(made))
        return made
