"""The agent's /metrics as a Prometheus user meets it: lint-clean, with otelcol 0.165's series, and
with every series the shipped and the deployment guides' alert rules query.

The same pipelines and traffic go to edgeagent and to a real otelcol-contrib 0.165.0 (traces,
metrics and logs over gRPC and HTTP; some dead-lettered, some dropped, some refused).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helpers.agent import AgentProcess
from tests.helpers.net import free_port, wait_until
from tests.helpers.otelcol import Otelcol, otelcol_binary  # noqa: F401  (fixture)
from tests.helpers.self_metrics import (
    Ports,
    edgeagent_config,
    families,
    pipelines_config,
    scrape,
    send_traffic,
    upstreams,
)

ROOT = Path(__file__).resolve().parents[2]

# otelcol series, for components we run, that edgeagent deliberately does not serve, with the reason
NOT_SERVED = {
    "otelcol_process_runtime_total_alloc_bytes": "Go's cumulative allocation count; CPython keeps none, and "
    "tracemalloc would cost on every allocation",
    "otelcol_processor_batch_batch_send_size": "batching happens in each exporter's queue consumer, not in a "
    "processor; request sizes are in otelcol_exporter_enqueue_size",
    "otelcol_processor_batch_batch_send_size_bytes": "as above: see otelcol_exporter_enqueue_size_bytes",
    "otelcol_processor_batch_metadata_cardinality": "as above: metadata_keys split the queue's batches",
    "otelcol_processor_batch_timeout_trigger_send": "as above: the queue consumer's timeout is not a processor's",
    "otelcol_processor_tail_sampling_sampling_policy_execution_count": "a counter named _count is rejected by "
    "promtool (reserved for histograms and summaries)",
    "otelcol_processor_tail_sampling_sampling_policy_execution_time_sum": "a counter named _sum is rejected by "
    "promtool (reserved for histograms and summaries)",
    "otelcol_processor_tail_sampling_sampling_decision_timer_latency": "there is no periodic decision timer: "
    "each trace is decided at its own deadline",
    "http_server_request_body_size": "Go's otelhttp instrumentation: body sizes (the durations are served)",
    "http_server_response_body_size": "as above",
    "http_client_request_body_size": "as above, of the exporter's client",
    "promhttp_metric_handler_errors_total": "Go's promhttp handler of the endpoint itself",
}
# labels otelcol adds that edgeagent deliberately does not, by metric name prefix, with the reason
LABELS_NOT_SERVED = {
    ("otelcol_exporter_send_failed_", "error_permanent"): "level detailed only; permanent rejections are "
    "counted apart in edgeagent_deadletter_items{exporter,data_type}",
    ("otelcol_exporter_send_failed_", "error_type"): "level detailed only; see edgeagent_deadletter_items",
}

# The alert expressions of the TFO deployment guide, verbatim: they must keep finding their series
GUIDE_EXPRESSIONS = [
    "rate(otelcol_exporter_send_failed_metric_points[5m]) / rate(otelcol_exporter_sent_metric_points[5m]) > 0.01",
    "otelcol_exporter_queue_size / otelcol_exporter_queue_capacity > 0.8",
]
# Series of components this traffic does not run (Kafka receiver, Redis-shared decisions, cAdvisor, `up`)
ABSENT_BY_CONFIG = {"kafka_consumer_lag", "edgeagent_sampler_shared_state_up", "container_memory_working_set_bytes",
                    "container_spec_memory_limit_bytes", "up"}
PROMQL_WORDS = {"sum", "by", "rate", "increase", "and", "or", "unless", "on", "ignoring", "without", "bool", "max",
                "min", "avg", "count"}


def _promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian/Ubuntu: apt-get install prometheus)")
    return promtool


@pytest.fixture(scope="module")
def agent_after_traffic(tmp_path_factory):
    """An agent that has taken the mixed traffic; yields (agent, its /metrics body). The module's tests
    only read it, so they share one: on a loaded machine the traffic takes up to a minute (the SDK
    retries what a full queue refuses)."""
    directory = tmp_path_factory.mktemp("self-metrics")
    with upstreams() as servers:
        agent = AgentProcess(args=[], log_path=str(directory / "agent.log"))  # the ports the config names
        ports = Ports(agent.grpc_port, agent.http_port)
        config = edgeagent_config(directory / "agent.yaml", ports, servers, agent.metrics_port, agent.health_port)
        agent.args = ["run", "--config", config, "--state-dir", str(directory / "state")]
        try:
            agent.start()
            assert send_traffic(ports) > 0, "the full queue refused nothing"
            wait_until(lambda: agent.metric("edgeagent_deadletter_items", data_type="traces") > 0
                       and agent.metric("edgeagent_deadletter_items", data_type="metrics") > 0
                       and len(servers.http.spans()) > 0 and agent.metric("otelcol_exporter_sent_log_records",
                                                                          exporter="otlp") > 0
                       and agent.metric("otelcol_processor_tail_sampling_global_count_traces_sampled") > 0,
                       timeout=30, message="dead letters, delivered spans and logs, sampling decisions")
            yield agent, scrape(agent.metrics_port)
        finally:
            agent.kill()


def test_metrics_endpoint_passes_promtool_after_mixed_traffic(agent_after_traffic):
    promtool = _promtool()
    agent, body = agent_after_traffic
    # the traffic took every path: refused, dead-lettered, dropped
    assert agent.metric("otelcol_receiver_refused_metric_points_total", receiver="otlp/refusing") > 0
    assert agent.metric("edgeagent_deadletter_items_total") > 0
    assert agent.metric("edgeagent_dropped_items_total", reason="queue_full") > 0
    result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_counters_are_served_typed_with_total_and_under_otelcol_spelling_with_the_same_value(agent_after_traffic):
    _, body = agent_after_traffic
    served = families(body)
    assert served["otelcol_receiver_accepted_spans_total"][0] == "counter"
    assert served["otelcol_receiver_accepted_spans"][0] == "untyped"
    assert served["otelcol_process_uptime_total"][0] == "counter"
    for name in ("otelcol_receiver_accepted_spans", "otelcol_exporter_sent_spans", "edgeagent_deadletter_items"):
        assert _samples(body, name) == _samples(body, name + "_total") > 0  # one scrape: no count moves between
    assert served["target_info"][1] == {"service_instance_id", "service_name", "service_version"}


def _samples(body: str, name: str) -> float:
    """The sum of the samples of `name` in one /metrics body."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
               if line.startswith((name + "{", name + " ")))


def test_the_alert_expressions_find_their_series_and_join_on_what_the_agent_serves(agent_after_traffic, tmp_path):
    """Each rule's expression, without its threshold, evaluated by promtool over the series the agent
    serves (every one growing by 1 a minute) returns data: its names exist and its labels match."""
    promtool = _promtool()
    _, body = agent_after_traffic
    rules = yaml.safe_load((ROOT / "packaging" / "kubernetes" / "prometheus-rules.yaml").read_text())
    expressions = [rule["expr"] for group in rules["groups"] for rule in group["rules"]] + GUIDE_EXPRESSIONS
    checked = [expr for expr in expressions if not _metric_names(expr) & ABSENT_BY_CONFIG]
    assert len(checked) >= 10 and GUIDE_EXPRESSIONS[0] in checked
    served = [line.rsplit(" ", 1)[0] for line in body.splitlines() if line and not line.startswith("#")]
    tests = [{"expr": f"count({_without_threshold(expr)}) > bool 0", "eval_time": "10m",
              "exp_samples": [{"labels": "{}", "value": 1}]} for expr in checked]
    (tmp_path / "none.yaml").write_text("groups: []\n")
    (tmp_path / "test.yaml").write_text(yaml.safe_dump({
        "rule_files": ["none.yaml"], "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": [{"series": series, "values": "0+1x10"} for series in served],
                   "promql_expr_test": tests}]}))
    result = subprocess.run([promtool, "test", "rules", "test.yaml"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def _without_threshold(expr: str) -> str:
    return re.sub(r"\s*(==|!=|>=|<=|>|<)\s*[0-9.]+\s*$", "", expr.strip())


def _metric_names(expr: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"|\[[^\]]*\]|\{[^}]*\}', " ", expr)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_strings))
    return {word for word in words if word not in PROMQL_WORDS and "_" in word or word == "up"}


def test_every_otelcol_series_of_the_components_we_share_is_served_with_its_labels(
        agent_after_traffic, otelcol_binary, tmp_path):  # noqa: F811
    _, ours_body = agent_after_traffic
    theirs_body = _otelcol_after_traffic(otelcol_binary, tmp_path / "otelcol")
    ours, theirs = families(ours_body), families(theirs_body)
    assert "otelcol_receiver_accepted_spans" in theirs  # otelcol served what this test compares
    missing = sorted(set(theirs) - set(ours) - set(NOT_SERVED))
    assert missing == [], f"otelcol 0.165 serves these and edgeagent does not: {missing}"
    missing_labels = sorted((name, label) for name, (_, labels) in theirs.items() if name in ours
                            for label in labels - ours[name][1]
                            if not any(name.startswith(prefix) and label == exempt
                                       for prefix, exempt in LABELS_NOT_SERVED))
    assert missing_labels == [], f"labels otelcol 0.165 has and edgeagent lacks: {missing_labels}"
    kinds = sorted((name, kind, ours[name][0]) for name, (kind, _) in theirs.items()
                   if name in ours and kind != ours[name][0] and not (kind == "counter" and ours[name][0] == "untyped"
                                                                      and ours[name + "_total"][0] == "counter"))
    assert kinds == [], f"types that differ (otelcol, ours): {kinds}"
    stale = sorted(set(NOT_SERVED) & set(ours))
    assert stale == [], f"served now: take them off NOT_SERVED: {stale}"


def _otelcol_after_traffic(binary: Path, directory: Path) -> str:
    directory.mkdir()
    ports, metrics_port = Ports(), free_port()
    with upstreams() as servers:
        config = pipelines_config(ports, servers)
        reader = {"pull": {"exporter": {"prometheus": {"host": "127.0.0.1", "port": metrics_port}}}}
        config["service"]["telemetry"] = {"metrics": {"level": "detailed", "readers": [reader]}}
        collector = Otelcol(binary, config, directory)
        try:
            collector.start()
            send_traffic(ports)
            wait_until(lambda: all(f"{name}{{" in scrape(metrics_port) for name in (
                "otelcol_processor_tail_sampling_global_count_traces_sampled", "otelcol_exporter_send_failed_spans",
                "rpc_client_call_duration_count")), timeout=30, message="otelcol's decisions, failed and gRPC sends")
            return scrape(metrics_port)
        finally:
            collector.stop()
