"""A condition's context inferred from its paths as pkg/ottl's priorityContextInferrer infers it:
the lowest hinted context, a lower one when the converters or enums need it, errors otherwise."""

from __future__ import annotations

import pytest

from otel.ottl.errors import OttlSyntaxError
from otel.ottl.infer import infer_context
from otel.ottl.parser import parse

TRACES = ("resource", "scope", "span", "spanevent")
METRICS = ("resource", "scope", "metric", "datapoint")


@pytest.mark.parametrize("text, offered, context", [
    ('resource.attributes["k"] == "v"', TRACES, "resource"),
    ('scope.name == "x"', TRACES, "scope"),
    ('span.name == "x" and resource.attributes["k"] == 1', TRACES, "span"),
    ('resource.attributes["host.name"] == "localhost" or spanevent.name == "grpc.timeout"', TRACES, "spanevent"),
    ('span.attributes["a"] == 1 and spanevent.attributes["grpc"] == true', TRACES, "spanevent"),
    ('IsRootSpan() and resource.attributes["k"] == 1', TRACES, "span"),  # resource lacks IsRootSpan: lower
    ('resource.attributes["k"] == 1 and metric.type == METRIC_DATA_TYPE_SUM', METRICS, "metric"),
    ('metric.name == "k8s.pod.phase" and datapoint.value_int == 4', METRICS, "datapoint"),
    ('HasAttrKeyOnDatapoint("k") and resource.attributes["k"] == 1', METRICS, "metric"),
])
def test_the_lowest_context_that_parses_everything_is_chosen(text, offered, context):
    assert infer_context(parse(text), offered, text) == context


@pytest.mark.parametrize("text, offered, words", [
    ('name == "x"', TRACES, "unable to infer a context"),
    ("IsRootSpan()", TRACES, "unable to infer a context"),
    ('IsRootSpan() or spanevent.name == "bar"', TRACES, None),  # inferred spanevent, then refused by compile
    ('log.body == "x"', TRACES, "not a supported context"),
    ('instrumentation_scope.name == "x"', TRACES, "not a supported context"),
    ('span.name == "x" and attributes["k"] == 1', TRACES, "missing context name for path attributes"),
])
def test_what_cannot_be_inferred_is_refused(text, offered, words):
    if words is None:
        assert infer_context(parse(text), offered, text) == "spanevent"
        return
    with pytest.raises(OttlSyntaxError, match=words):
        infer_context(parse(text), offered, text)
