"""The attribute keys a condition cannot match without: only where their absence makes it false
without an error, so skipping a batch that lacks them never changes a decision."""

from __future__ import annotations

import pytest

from otel.ottl.needles import needed_keys
from otel.ottl.parser import parse


@pytest.mark.parametrize(("text", "keys"), [
    ('attributes["k"] == "x"', {"k"}),
    ('resource.attributes["svc"] >= 5', {"svc"}),
    ('"x" == span.attributes["k"]["inner"]', {"k"}),
    ("attributes[\"k\"] == SPAN_KIND_SERVER", {"k"}),
    ('IsMatch(attributes["route"], "^/a")', {"route"}),
    ('attributes["a"] == 1 or attributes["b"] == 2', {"a", "b"}),
    ('attributes["a"] == 1 and name == "x"', {"a"}),
    ('attributes["k"] != "x"', None),  # true when absent
    ('attributes["k"] == nil', None),
    ('name == "x" and attributes["a"] == 1', None),  # the first operand could fail before
    ('attributes["a"] == 1 or name == "x"', None),
    ('not attributes["a"] == 1', None),
    ('IsString(attributes["a"])', None),
    ('Int(attributes["a"]) == 1', None),
    ("true", None),
])
def test_only_keys_whose_absence_means_false_are_needed(text, keys):
    needed = needed_keys(parse(text))
    assert needed == (None if keys is None else frozenset(keys))
