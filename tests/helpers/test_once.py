"""once_per_run: concurrent askers get one `make` between them."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.helpers.once import once_per_run


def test_concurrent_askers_share_one_make_and_its_result(tmp_path_factory):
    calls: list[Path] = []
    started = threading.Barrier(4)

    def make(directory: Path) -> Path:
        calls.append(directory)
        time.sleep(0.2)  # long enough for the other askers to arrive while it works
        return directory / "made"

    def ask(_: int) -> Path:
        started.wait(5)
        return once_per_run(tmp_path_factory, name, make)

    name = f"once-{uuid.uuid4().hex}"
    tmp_path_factory.getbasetemp()  # made before the threads ask: pytest makes it lazily, not thread-safely
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(ask, range(4)))
    assert len(calls) == 1
    assert results == [calls[0] / "made"] * 4
