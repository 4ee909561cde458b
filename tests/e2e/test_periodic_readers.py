"""Periodic readers in the real agent: it pushes its own metrics to an OTLP/HTTP upstream while it
serves /metrics, and once more when it stops (the last counts and queue gauges); and what it pushes
has the shape of what otelcol-contrib 0.165.0 pushes after the same traffic."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.helpers.agent import AgentProcess
from tests.helpers.net import free_port, wait_until
from tests.helpers.sdk import send_spans
from tests.helpers.self_metrics import Ports, edgeagent_config, pipelines_config, send_traffic, upstreams
from tests.helpers.upstream import Upstream


def _values(received, name: str, **attributes: str) -> list[float]:
    values = []
    for metric in (m for rm in received.message.resource_metrics for sm in rm.scope_metrics for m in sm.metrics):
        if metric.name != name:
            continue
        points = getattr(metric, metric.WhichOneof("data")).data_points
        values += [getattr(point, point.WhichOneof("value")) for point in points
                   if attributes.items() <= {(kv.key, kv.value.string_value) for kv in point.attributes}]
    return values


def test_the_agent_pushes_its_counters_while_it_runs_and_its_last_values_when_it_stops(agents, upstream, tmp_path):
    """Beside a pull reader, and beside a periodic reader whose upstream is down (logged once)."""
    telemetry = Upstream(free_port()).start()
    ports = AgentProcess(args=[])
    otlp = {"protocol": "http/protobuf", "endpoint": telemetry.url}
    dead = {"protocol": "grpc", "endpoint": f"http://127.0.0.1:{free_port()}"}  # nothing listens there
    readers = json.dumps([  # YAML reads JSON
        {"pull": {"exporter": {"prometheus": {"host": "127.0.0.1", "port": ports.metrics_port}}}},
        {"periodic": {"interval": 200, "exporter": {"otlp": otlp}}},
        {"periodic": {"interval": 50, "exporter": {"otlp": dead}}}])
    args = ["run", "--state-dir", str(tmp_path / "state"), "--upstream", upstream.url,
            *ports.ports_overrides()[:-2], "--set", f"service::telemetry::metrics::readers={readers}",
            "--set", "service::telemetry::resource={attributes: [{name: deployment.environment, value: edge-test}]}"]
    try:
        agent = agents(args, ports=ports, port_overrides=False)
        send_spans("http", agent.http_port, 40)

        def pushed_accepted() -> float:
            received = telemetry.received("metrics")
            return max(_values(received[-1], "otelcol_receiver_accepted_spans"), default=0.0) if received else 0.0

        wait_until(lambda: pushed_accepted() == 40, timeout=20, message="the accepted spans pushed")
        assert agent.metric("otelcol_receiver_accepted_spans") == 40  # the pull reader serves the same registry
        wait_until(lambda: len(upstream.spans()) == 40, timeout=20, message="the spans delivered")  # data goes on
        wait_until(lambda: agent.metric("edgeagent_telemetry_metrics_pushes_total", result="failed") >= 5,
                   timeout=10, message="failed pushes to the dead upstream")
        before = len(telemetry.received("metrics"))
        assert agent.terminate() == 0
        last = telemetry.received("metrics")[-1]
        assert len(telemetry.received("metrics")) > before  # the push at stop
        assert _values(last, "otelcol_exporter_queue_capacity", data_type="traces") == [1_000_000]
        resource = {kv.key: kv.value.string_value for kv in last.message.resource_metrics[0].resource.attributes}
        assert resource["service.name"] == "edgeagent" and resource["deployment.environment"] == "edge-test"
        failures = [line for line in agent.log().splitlines() if "pushing the agent's metrics" in line]
        assert len(failures) == 1 and "readers::2::periodic" in failures[0], failures  # once per episode
    finally:
        telemetry.stop()


def _shape(request) -> dict[str, tuple]:
    """name -> (data kind, monotonic, temporality, unit, attribute keys of its points) of a metrics request."""
    shapes = {}
    for metric in (m for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics):
        kind = metric.WhichOneof("data")
        data = getattr(metric, kind)
        keys = frozenset(kv.key for point in data.data_points for kv in point.attributes)
        shapes[metric.name] = (kind, getattr(data, "is_monotonic", None),
                               getattr(data, "aggregation_temporality", None), metric.unit, keys)
    return shapes


# attributes otelcol adds that edgeagent deliberately does not (tests/e2e/test_self_metrics.py's LABELS_NOT_SERVED)
NOT_PUSHED = ("otelcol_exporter_send_failed_", {"error.permanent", "error.type"})
# what the mixed traffic makes both push: the names the comparison must find in each
EXPECTED = ("otelcol_processor_tail_sampling_global_count_traces_sampled", "otelcol_exporter_send_failed_spans",
            "rpc.client.call.duration", "otelcol_processor_filter_spans.filtered", "otelcol_exporter_sent_spans")


def _pushed_by(start, telemetry: Upstream, ports: Ports) -> tuple[dict[str, tuple], set[str]]:
    """What a collector pushes (its metrics' shapes, its resource's attribute names) after the mixed traffic."""
    start()
    send_traffic(ports)

    def complete() -> bool:
        received = telemetry.received("metrics")
        return bool(received) and set(EXPECTED) <= set(_shape(received[-1].message))

    wait_until(complete, timeout=60, message="the traffic's metrics pushed")
    last = telemetry.received("metrics")[-1].message
    return _shape(last), {kv.key for kv in last.resource_metrics[0].resource.attributes}


def _pushing(config: dict, telemetry: Upstream) -> dict:
    """`config` with its metrics pushed to `telemetry` (its other readers kept)."""
    otlp = {"protocol": "http/protobuf", "endpoint": telemetry.url}
    metrics = config["service"].setdefault("telemetry", {}).setdefault("metrics", {})
    metrics["level"] = "detailed"
    metrics["readers"] = [*metrics.get("readers", []), {"periodic": {"interval": 200, "exporter": {"otlp": otlp}}}]
    return config


def test_the_push_has_otelcols_names_kinds_temporality_units_and_attributes(agents, otelcol, tmp_path):
    """The same pipelines and mixed traffic as the /metrics comparison (tests/e2e/test_self_metrics.py)
    for otelcol-contrib 0.165.0 and edgeagent, each pushing its own metrics to an OTLP/HTTP server of
    its own: what both push has the same shape."""
    theirs_to, ours_to = Upstream(free_port()).start(), Upstream(free_port()).start()
    try:
        with upstreams() as servers:
            their_ports = Ports()
            config = _pushing(pipelines_config(their_ports, servers), theirs_to)
            theirs, their_resource = _pushed_by(lambda: otelcol(config), theirs_to, their_ports)
        with upstreams() as servers:
            agent = AgentProcess(args=[])
            ports = Ports(agent.grpc_port, agent.http_port)
            path = tmp_path / "agent.yaml"
            written = yaml.safe_load(Path(edgeagent_config(path, ports, servers, agent.metrics_port,
                                                           agent.health_port)).read_text())
            path.write_text(yaml.safe_dump(_pushing(written, ours_to)))
            args = ["run", "--config", str(path), "--state-dir", str(tmp_path / "state")]
            ours, our_resource = _pushed_by(lambda: agents(args, ports=agent, port_overrides=False), ours_to, ports)
    finally:
        theirs_to.stop()
        ours_to.stop()
    assert {"service.name", "service.instance.id", "service.version"} <= their_resource == our_resource
    shared = sorted(set(theirs) & set(ours))
    assert {*EXPECTED, "otelcol_receiver_accepted_spans", "otelcol_process_uptime", "otelcol_process_memory_rss",
            "http.server.request.duration", "otelcol_exporter_in_flight_requests"} <= set(shared)
    differ = [(name, theirs[name][:4], ours[name][:4]) for name in shared if theirs[name][:4] != ours[name][:4]]
    assert differ == [], f"kinds, monotonicity, temporality or units that differ (otelcol, ours): {differ}"
    missing = [(name, sorted(keys)) for name in shared
               if (keys := {key for key in theirs[name][4] - ours[name][4]
                            if not (name.startswith(NOT_PUSHED[0]) and key in NOT_PUSHED[1])})]
    assert missing == [], f"attributes otelcol pushes and edgeagent does not: {missing}"
