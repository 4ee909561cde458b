"""A pytest plugin for tests/test_markers.py: one `--collect-only -m "not e2e" -p tests.helpers.suite_order`
prints the whole suite in its order, each test as `selected <id>` or `deselected <id>` by the `-m`."""

from __future__ import annotations

import pytest

_order: list[str] = []
_deselected: set[str] = set()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Called after the suite's own hook (tryfirst) has ordered the tests, and before `-m` deselects:
    pluggy calls a plugin given with -p before the built-in ones."""
    _order[:] = [item.nodeid for item in items]


def pytest_deselected(items: list[pytest.Item]) -> None:
    _deselected.update(item.nodeid for item in items)


def pytest_collection_finish(session: pytest.Session) -> None:
    for nodeid in _order:
        print("deselected" if nodeid in _deselected else "selected", nodeid)
