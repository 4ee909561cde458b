"""The Prometheus rendering of the agent's own metrics: names, types and values a scraper can trust."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from edgeagent.extensions.metrics import Derived, Metrics


def _metrics() -> Metrics:
    metrics = Metrics()
    sent = metrics.counter("otelcol_exporter_sent_spans", "Spans sent.", ("exporter",),
                           Derived(("url_path",), lambda labels: ("/v1/traces",)))
    sent.inc(3, "otlphttp")
    metrics.observed_counter("otelcol_process_uptime", "Uptime (seconds).", (), lambda: [((), 2.5)])
    metrics.histogram("otelcol_processor_internal_duration", "Seconds.", ("processor",)).observe(0.001, "filter")
    return metrics


def test_a_counter_names_its_type_line_after_its_samples_and_keeps_otelcols_spelling_as_untyped():
    text = _metrics().render().decode()
    assert "# TYPE otelcol_exporter_sent_spans_total counter\n" \
           'otelcol_exporter_sent_spans_total{exporter="otlphttp",url_path="/v1/traces"} 3.0\n' in text
    assert "# TYPE otelcol_exporter_sent_spans untyped\n" \
           'otelcol_exporter_sent_spans{exporter="otlphttp",url_path="/v1/traces"} 3.0\n' in text
    assert "# TYPE otelcol_process_uptime_total counter\notelcol_process_uptime_total 2.5\n" in text


def test_a_counter_registered_with_total_is_refused_instead_of_served_as_total_total():
    with pytest.raises(ValueError, match="without _total"):
        Metrics().counter("edgeagent_dropped_items_total", "Dropped.", ("reason",))


def test_a_histogram_counts_each_observation_in_its_bucket_and_every_one_above():
    text = _metrics().render().decode()
    assert 'otelcol_processor_internal_duration_bucket{le="0",processor="filter"} 0.0' in text
    assert 'otelcol_processor_internal_duration_bucket{le="5",processor="filter"} 1.0' in text
    assert 'otelcol_processor_internal_duration_bucket{le="+Inf",processor="filter"} 1.0' in text
    assert 'otelcol_processor_internal_duration_count{processor="filter"} 1.0' in text


def test_the_rendering_passes_promtool():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian/Ubuntu: apt-get install prometheus)")
    result = subprocess.run([promtool, "check", "metrics"], input=_metrics().render(), capture_output=True,
                            timeout=30)
    assert (result.returncode, result.stdout + result.stderr) == (0, b"")


def test_label_values_help_text_and_values_are_written_as_prometheus_reads_them():
    metrics = Metrics()
    metrics.counter("c", 'Two\nlines \\ here', ("path",)).inc(1, 'a"b\\c\nd')
    metrics.gauge("g", "G", ("x",), lambda: [(("big",), 1e21), (("mid",), 12345678.5), (("inf",), float("inf")),
                                             (("nan",), float("nan")), (("small",), 0.25)])
    metrics.info = {"service.name": "edgeagent", "9lives": "x"}
    text = metrics.render().decode()
    assert "# HELP c_total Two\\nlines \\\\ here\n" in text
    assert 'c_total{path="a\\"b\\\\c\\nd"} 1.0\n' in text
    for line in ('g{x="big"} 1e+21\n', 'g{x="mid"} 1.23456785e+07\n', 'g{x="inf"} +Inf\n', 'g{x="nan"} NaN\n',
                 'g{x="small"} 0.25\n'):
        assert line in text
    assert 'target_info{_lives="x",service_name="edgeagent"} 1.0\n' in text
