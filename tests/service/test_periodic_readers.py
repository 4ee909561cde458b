"""Periodic metric readers push the agent's own metrics to real OTLP servers on loopback.

The upstreams are the tests' recording OTLP/HTTP (aiohttp) and OTLP/gRPC (grpcio) servers; the
agent pushes with its own clients. A push that fails or hangs is counted and logged, and the
event loop keeps serving meanwhile (measured as the lag of a 10 ms ticker).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
import urllib.request

from opentelemetry.proto.metrics.v1 import metrics_pb2

from edgeagent.config.service import MetricsConfig
from edgeagent.runtime import logwriter
from edgeagent.service.metrics_otlp import Snapshot
from edgeagent.service.telemetry import Telemetry
from tests.helpers.grpc_upstream import GrpcUpstream
from tests.helpers.net import free_port
from tests.helpers.upstream import Upstream

CUMULATIVE = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
DELTA = metrics_pb2.AGGREGATION_TEMPORALITY_DELTA


def _settings(*exporters: dict, interval: int = 60000, timeout: int = 30000, pull_port: int | None = None,
              level: str = "normal") -> MetricsConfig:
    readers: list[dict] = [{"periodic": {"interval": interval, "timeout": timeout, "exporter": exporter}}
                           for exporter in exporters]
    if pull_port is not None:
        readers.insert(0, {"pull": {"exporter": {"prometheus": {"host": "127.0.0.1", "port": pull_port}}}})
    return MetricsConfig.model_validate({"level": level, "readers": readers})


def _telemetry() -> Telemetry:
    telemetry = Telemetry()
    telemetry.describe({"deployment.environment": "prod"})
    telemetry.counter_inc("otelcol_exporter_sent_spans", 5, "otlphttp/up")
    telemetry.metrics.histogram("edgeagent_test_seconds", "A test histogram.", ("route",), (0.1, 1.0)).observe(
        0.5, "/v1/traces")
    telemetry.metrics.histogram("http_server_request_duration", "Level detailed only.", ()).observe(0.01)
    return telemetry


async def _until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


class LoopLag:
    """The longest the event loop kept a 10 ms ticker waiting beyond its time."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task = asyncio.create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            started = time.monotonic()
            await asyncio.sleep(0.01)
            self.worst = max(self.worst, time.monotonic() - started - 0.01)

    async def stop(self) -> float:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        return self.worst


def _metrics(request) -> dict[str, metrics_pb2.Metric]:
    (resource_metrics,) = request.resource_metrics
    return {metric.name: metric for scope in resource_metrics.scope_metrics for metric in scope.metrics}


def _attributes(point) -> dict:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in point.attributes}


def test_http_push_carries_the_agents_metrics_with_otelcols_names_types_and_resource_beside_the_pull_reader():
    upstream = Upstream(free_port()).start()
    pull_port = free_port()
    otlp = {"protocol": "http/protobuf", "endpoint": upstream.url, "compression": "gzip",
            "headers": [{"name": "x-api-key", "value": "k-123"}]}

    async def scenario() -> str:
        telemetry = _telemetry()
        await telemetry.serve(_settings({"otlp": otlp}, interval=100, pull_port=pull_port))
        try:
            await _until(lambda: len(upstream.received("metrics")) >= 2)
            return await asyncio.to_thread(
                lambda: urllib.request.urlopen(f"http://127.0.0.1:{pull_port}/metrics", timeout=5).read().decode())
        finally:
            await telemetry.stop_serving()

    try:
        scraped = asyncio.run(scenario())
        received = upstream.received("metrics")
    finally:
        upstream.stop()
    assert "otelcol_exporter_sent_spans_total" in scraped  # the pull reader serves meanwhile
    assert not upstream.stray  # posted to /v1/metrics: the endpoint has no path
    assert received[0].headers["Content-Encoding"] == "gzip" and received[0].headers["x-api-key"] == "k-123"
    resource = {kv.key: kv.value.string_value for kv in received[0].message.resource_metrics[0].resource.attributes}
    assert resource["service.name"] == "edgeagent" and resource["deployment.environment"] == "prod"
    assert {"service.instance.id", "service.version"} <= set(resource)
    metrics = _metrics(received[-1].message)
    sent = metrics["otelcol_exporter_sent_spans"]
    assert sent.WhichOneof("data") == "sum" and sent.sum.is_monotonic
    assert sent.sum.aggregation_temporality == CUMULATIVE
    (point,) = sent.sum.data_points
    assert point.as_int == 5 and _attributes(point) == {"exporter": "otlphttp/up"}
    assert point.start_time_unix_nano < point.time_unix_nano
    assert metrics["otelcol_process_memory_rss"].WhichOneof("data") == "gauge"
    assert metrics["otelcol_process_uptime"].sum.is_monotonic  # an observed counter
    (bucketed,) = metrics["edgeagent_test_seconds"].histogram.data_points
    assert list(bucketed.explicit_bounds) == [0.1, 1.0] and list(bucketed.bucket_counts) == [0, 1, 0]
    assert (bucketed.count, bucketed.sum, _attributes(bucketed)) == (1, 0.5, {"route": "/v1/traces"})
    assert "http_server_request_duration" not in metrics  # level detailed only, as on /metrics
    assert "target_info" not in metrics  # the resource says it
    pushes = metrics["edgeagent_telemetry_metrics_pushes"].sum.data_points
    assert {(_attributes(p)["reader"], _attributes(p)["result"]) for p in pushes} == {
        ("readers::1::periodic", "delivered")}


def test_grpc_push_to_a_scheme_less_endpoint_with_insecure_goes_in_plaintext_with_its_headers():
    upstream = GrpcUpstream(free_port()).start()
    otlp = {"protocol": "grpc", "endpoint": upstream.endpoint, "insecure": True, "compression": "gzip",
            "headers_list": "x-tenant=edge%20one"}

    async def scenario() -> None:
        telemetry = _telemetry()
        await telemetry.serve(_settings({"otlp": otlp}, interval=100))
        try:
            await _until(lambda: upstream.requests)
        finally:
            await telemetry.stop_serving()

    try:
        asyncio.run(scenario())
        received = list(upstream.requests)
    finally:
        upstream.stop()
    assert received[0].metadata["x-tenant"] == "edge one"
    metrics = _metrics(received[0].message)
    assert metrics["otelcol_exporter_sent_spans"].sum.data_points[0].as_int == 5
    assert metrics["otelcol_process_memory_rss"].WhichOneof("data") == "gauge"


def test_https_push_verifies_the_upstream_with_certificate_and_presents_client_certificate_and_key(certs):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    context.load_verify_locations(certs.ca_file)
    context.verify_mode = ssl.CERT_REQUIRED  # mTLS: a push without the client certificate fails
    upstream = Upstream(free_port(), ssl_context=context).start()
    endpoint = f"127.0.0.1:{upstream.port}"  # https://, as otelcol adds it without insecure
    mutual = {"protocol": "http/protobuf", "endpoint": endpoint, "certificate": certs.ca_file,
              "client_certificate": certs.client_cert, "client_key": certs.client_key}
    anonymous = {"protocol": "http/protobuf", "endpoint": endpoint, "certificate": certs.ca_file}

    async def scenario() -> dict[str, float]:
        telemetry = _telemetry()
        await telemetry.serve(_settings({"otlp": mutual}, {"otlp": anonymous}, timeout=2000))
        await telemetry.stop_serving()  # each pushes once
        counter = telemetry.metrics.counters["edgeagent_telemetry_metrics_pushes"]
        return {f"{reader}/{result}": value for (reader, result), value in counter.values.items()}

    try:
        pushes = asyncio.run(scenario())
        assert len(upstream.received("metrics")) == 1
    finally:
        upstream.stop()
    assert pushes == {"readers::0::periodic/delivered": 1, "readers::1::periodic/failed": 1}


def test_stop_pushes_the_last_values_once_even_before_the_first_interval():
    upstream = Upstream(free_port()).start()

    async def scenario() -> None:
        telemetry = _telemetry()
        await telemetry.serve(_settings({"otlp": {"protocol": "http/protobuf", "endpoint": upstream.url}}))
        telemetry.counter_inc("otelcol_exporter_sent_spans", 2, "otlphttp/up")
        await telemetry.stop_serving()
        await telemetry.stop_serving()  # idempotent: no second push

    try:
        asyncio.run(scenario())
        received = upstream.received("metrics")
    finally:
        upstream.stop()
    assert len(received) == 1
    assert _metrics(received[0].message)["otelcol_exporter_sent_spans"].sum.data_points[0].as_int == 7


def test_an_unreachable_upstream_is_counted_logged_once_and_never_holds_the_loop(caplog):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there

    async def scenario() -> tuple[float, float, float]:
        telemetry = _telemetry()
        lag = LoopLag()
        await telemetry.serve(_settings({"otlp": {"protocol": "http/protobuf", "endpoint": dead}}, interval=30))
        failed = telemetry.metrics.counters["edgeagent_telemetry_metrics_pushes"]
        await _until(lambda: failed.get("readers::0::periodic", "failed") >= 4)
        started = time.monotonic()
        await telemetry.stop_serving()
        return time.monotonic() - started, await lag.stop(), failed.get("readers::0::periodic", "delivered")

    with caplog.at_level(logging.WARNING, logger="edgeagent.service.periodic"):
        stopping, worst_lag, delivered = asyncio.run(scenario())
    assert delivered == 0
    assert [r.getMessage() for r in caplog.records].count(
        "pushing the agent's metrics failed; the next interval tries again") == 1
    assert stopping < 2.0 and worst_lag < 0.5, (stopping, worst_lag)  # the stop does not wait on the dead upstream


def test_an_upstream_that_does_not_answer_is_given_up_after_the_readers_timeout():
    upstream = Upstream(free_port(), hang=5.0).start()

    async def scenario() -> tuple[float, float, float]:
        telemetry = _telemetry()
        lag = LoopLag()
        await telemetry.serve(_settings({"otlp": {"protocol": "http/protobuf", "endpoint": upstream.url}},
                                        timeout=200))
        started = time.monotonic()
        await telemetry.stop_serving()  # its last push hangs
        failed = telemetry.metrics.counters["edgeagent_telemetry_metrics_pushes"].get("readers::0::periodic", "failed")
        return time.monotonic() - started, await lag.stop(), failed

    try:
        stopping, worst_lag, failed = asyncio.run(scenario())
    finally:
        upstream.stop()
    assert failed == 1
    assert 0.15 < stopping < 2.0 and worst_lag < 0.5, (stopping, worst_lag)  # blocking: the 5 s hang


def test_console_writes_each_push_as_a_line_of_otlp_json(capfd):
    async def scenario() -> None:
        telemetry = _telemetry()
        await telemetry.serve(_settings({"console": {}}))
        await telemetry.stop_serving()

    asyncio.run(scenario())
    logwriter.shared(1, "stdout").flush()  # stdout is written by a thread of its own
    (line,) = capfd.readouterr().out.splitlines()
    names = {metric["name"] for metric in json.loads(line)["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]}
    assert "otelcol_exporter_sent_spans" in names


def test_delta_points_cover_the_time_since_the_last_delivered_push_so_a_failed_one_loses_nothing():
    telemetry = _telemetry()
    counter = telemetry.metrics.counters["otelcol_exporter_sent_spans"]
    snapshot = Snapshot(telemetry.metrics, "delta")

    def sent(request) -> tuple[float, int]:
        metric = _metrics(request).get("otelcol_exporter_sent_spans")
        if metric is None:
            return 0.0, 0
        assert metric.sum.aggregation_temporality == DELTA
        (point,) = metric.sum.data_points
        return point.as_int, point.start_time_unix_nano

    first = snapshot.request()
    snapshot.delivered()
    counter.inc(3, "otlphttp/up")
    second = snapshot.request()  # not delivered
    counter.inc(4, "otlphttp/up")
    third = snapshot.request()
    snapshot.delivered()
    assert sent(first)[0] == 5 and sent(second)[0] == 3 and sent(third)[0] == 7
    first_at = _metrics(first)["otelcol_exporter_sent_spans"].sum.data_points[0].time_unix_nano
    assert sent(third)[1] == first_at  # the time of the last delivered push
    unchanged = _metrics(snapshot.request())
    assert "otelcol_exporter_sent_spans" not in unchanged and "edgeagent_test_seconds" not in unchanged


def test_lowmemory_keeps_observed_counters_cumulative():
    metrics = _metrics(Snapshot(_telemetry().metrics, "lowmemory").request())
    assert metrics["otelcol_process_uptime"].sum.aggregation_temporality == CUMULATIVE
    assert metrics["otelcol_exporter_sent_spans"].sum.aggregation_temporality == DELTA
    assert metrics["edgeagent_test_seconds"].histogram.aggregation_temporality == DELTA


def test_a_reader_whose_task_ends_unexpectedly_starts_again_counted_and_logged(caplog):
    """Its task ended by anything but its stop (a cancellation from elsewhere, an error that is no
    Exception) stayed dead: the agent's metrics were no longer pushed, which nothing but a log line
    said, and a cancellation not even that."""
    upstream = Upstream(free_port()).start()

    async def scenario() -> tuple[float, int]:
        telemetry = _telemetry()
        await telemetry.serve(_settings({"otlp": {"protocol": "http/protobuf", "endpoint": upstream.url}},
                                        interval=50))
        try:
            await _until(lambda: len(upstream.received("metrics")) >= 1)
            (task,) = [task for task in asyncio.all_tasks() if task.get_name() == "readers::0::periodic"]
            task.cancel()  # not by the reader's stop
            await asyncio.gather(task, return_exceptions=True)
            pushed = len(upstream.received("metrics"))
            await _until(lambda: len(upstream.received("metrics")) >= pushed + 2)
            return telemetry.metrics.counters["edgeagent_background_errors"].get("readers::0::periodic"), pushed
        finally:
            await telemetry.stop_serving()

    try:
        with caplog.at_level(logging.ERROR):
            errors, _ = asyncio.run(scenario())
    finally:
        upstream.stop()
    assert errors == 1
    (logged,) = [r for r in caplog.records if r.name == "edgeagent.runtime.supervise"]
    assert logged.getMessage() == "a background task stopped unexpectedly; it starts again"
    assert logged.reader == "readers::0::periodic" and logged.cancelled
