"""The Grafana dashboard and the alert rules against a real Prometheus scraping a real agent.

One agent gets traffic that moves every metric the dashboard draws: OTLP on every signal (and
traces from Kafka) through tail sampling with decisions shared in Redis; an upstream that takes
the data, one that rejects it permanently (dead letters), a queue of one request that drops the
oldest (drops by reason), one that blocks (refused items), and a memory limiter that refuses
everything (refused requests). Prometheus scrapes it every second; every panel expression, with
the dashboard's variables filled in, must return data through Prometheus' HTTP API, and every
alert rule must evaluate cleanly over metrics that exist.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.helpers.agent import AgentProcess
from tests.helpers.kafka import Broker
from tests.helpers.net import free_port, wait_until
from tests.helpers.redis_server import RedisServer
from tests.helpers.upstream import Upstream
from tests.packaging.shipped import otlp_trace_request
from tests.packaging.tools import require

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = json.loads((ROOT / "packaging" / "grafana" / "edgeagent.json").read_text())
RULES = ROOT / "packaging" / "kubernetes" / "prometheus-rules.yaml"
VARIABLES = {"$__rate_interval": "10s", "$job": "edgeagent", "$instance": ".+"}
# metrics that come from elsewhere than the agent: cAdvisor in Kubernetes
EXTERNAL = {"container_memory_working_set_bytes", "container_spec_memory_limit_bytes"}
TOPIC = "otlp_spans"


def _expressions() -> dict[str, str]:
    """Each panel target's expression, with the dashboard's variables filled in, by `title:refId`."""
    out = {}
    for panel in DASHBOARD["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in VARIABLES.items():
                expr = expr.replace(variable, value)
            out[f"{panel['title']}:{target['refId']}"] = expr
    return out


def _rule_metrics() -> list[str]:
    names: set[str] = set()
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            # a regular expression on __name__ is a quoted string: tests/e2e/test_self_metrics.py checks it returns data
            expr = re.sub(r'"[^"]*"', '""', rule["expr"])
            names |= set(re.findall(r"\b(?:otelcol|edgeagent|kafka|container)_[a-z0-9_]+\b|\bup\b", expr))
    return sorted(names - EXTERNAL)


def _agent_config(agent: AgentProcess, state: Path, ports: dict[str, int], urls: dict[str, str]) -> dict:
    retry = {"initial_interval": "100ms", "max_interval": "1s", "max_elapsed_time": "0s"}
    otlp = {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{agent.grpc_port}"},
                                   "http": {"endpoint": f"127.0.0.1:{agent.http_port}"}}},
            "otlp/tight": {"protocols": {"http": {"endpoint": f"127.0.0.1:{ports['tight']}"}}},
            "otlp/full": {"protocols": {"http": {"endpoint": f"127.0.0.1:{ports['full']}"}}}}
    forwarded = ["otlphttp", "otlphttp/rejecting"]
    return {
        "receivers": {
            **otlp,
            "kafka": {
                "brokers": [urls["kafka"]],
                "group_id": "dashboard",
                "initial_offset": "earliest",
                "traces": {"topic": TOPIC},
            },
        },
        "processors": {
            "memory_limiter/tight": {"check_interval": "100ms", "limit_mib": 1, "spike_limit_mib": 0},
            "tail_sampling": {
                "decision_wait": "1s",
                "policies": [{"name": "everything", "type": "always_sample"}],
                "shared_state": {"redis": {"url": urls["redis"]}},
            },
            "batch": {"timeout": "200ms"},
        },
        "exporters": {
            "otlphttp": {
                "endpoint": urls["upstream"],
                "retry_on_failure": retry,
                "sending_queue": {"storage": "file_storage"},
            },
            "otlphttp/rejecting": {
                "endpoint": urls["rejecting"],
                "retry_on_failure": retry,
                "sending_queue": {"storage": "file_storage"},
            },
            "otlphttp/ring": {"endpoint": "", "sending_queue": {"storage": "file_storage/ring", "queue_size": 1}},
            "otlphttp/full": {"endpoint": "", "sending_queue": {"storage": "file_storage/full", "queue_size": 1}},
        },
        "extensions": {
            "health_check": {"endpoint": f"127.0.0.1:{agent.health_port}"},
            "file_storage": {"directory": str(state / "queue"), "max_size_mib": 64},
            "file_storage/ring": {"directory": str(state / "ring"), "full_policy": "drop_oldest"},
            "file_storage/full": {"directory": str(state / "full"), "full_policy": "block"},
        },
        "service": {
            "extensions": ["health_check", "file_storage", "file_storage/ring", "file_storage/full"],
            "telemetry": {"metrics": {"address": f"127.0.0.1:{agent.metrics_port}"}},
            "pipelines": {
                "traces": {
                    "receivers": ["otlp", "kafka"],
                    "processors": ["tail_sampling", "batch"],
                    "exporters": forwarded,
                },
                "metrics": {"receivers": ["otlp"], "processors": ["batch"], "exporters": [*forwarded, "otlphttp/ring"]},
                "logs": {"receivers": ["otlp"], "processors": ["batch"], "exporters": [*forwarded, "otlphttp/ring"]},
                "traces/tight": {
                    "receivers": ["otlp/tight"],
                    "processors": ["memory_limiter/tight"],
                    "exporters": ["otlphttp"],
                },
                **{
                    f"{signal}/full": {"receivers": ["otlp/full"], "exporters": ["otlphttp/full"]}
                    for signal in ("traces", "metrics", "logs")
                },
            },
        },
    }


def _requests() -> dict[str, bytes]:
    """One small OTLP/protobuf request per signal, for posting without a client's retries."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    metrics = ExportMetricsServiceRequest()
    metric = metrics.resource_metrics.add().scope_metrics.add().metrics.add()
    metric.name = "requests"
    metric.gauge.data_points.add(as_int=1, time_unix_nano=1_700_000_000_000_000_000)
    logs = ExportLogsServiceRequest()
    logs.resource_logs.add().scope_logs.add().log_records.add(
        time_unix_nano=1_700_000_000_000_000_000
    ).body.string_value = "x"
    return {"traces": otlp_trace_request("dashboard"), "metrics": metrics.SerializeToString(),
            "logs": logs.SerializeToString()}


def _post(port: int, signal: str, body: bytes) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/{signal}", data=body, method="POST",
                                     headers={"Content-Type": "application/x-protobuf"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def _traffic(agent: AgentProcess, ports: dict[str, int], broker: Broker) -> None:
    from tests.helpers.sdk import send_logs, send_metrics, send_spans

    broker.produce(TOPIC, [otlp_trace_request("kafka")])
    send_spans("grpc", agent.grpc_port, 20)
    send_metrics("http", agent.http_port)
    send_logs("grpc", agent.grpc_port)
    for signal, body in _requests().items():
        for _ in range(2):  # the second request finds the one-request queues full: dropped, refused
            assert _post(agent.http_port, signal, body) == 200
            _post(ports["full"], signal, body)
        _post(ports["tight"], signal, body)  # refused by the memory limiter


def _prometheus_config(directory: Path, target: str) -> Path:
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        group["interval"] = "1s"  # evaluated within the test's time
    (directory / "rules.yaml").write_text(yaml.safe_dump(rules))
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "rule_files": [str(directory / "rules.yaml")],
              "scrape_configs": [{"job_name": "edgeagent", "static_configs": [{"targets": [target]}]}]}
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


class Prometheus:
    def __init__(self, binary: str, directory: Path, target: str):
        self.port = free_port()
        self._log = open(directory / "prometheus.log", "ab")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={_prometheus_config(directory, target)}",
                f"--storage.tsdb.path={directory / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=self._log,
            stdin=subprocess.DEVNULL,
        )
        wait_until(self._ready, timeout=20, interval=0.1, message="prometheus ready")

    def _ready(self) -> bool:
        assert self.process.poll() is None, "prometheus exited"
        try:
            return self.api("/-/ready", raw=True) is not None
        except OSError:
            return False

    def api(self, path: str, raw: bool = False, **params: str):
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}{query}", timeout=5) as response:
            body = response.read()
        return body if raw else json.loads(body)

    def query(self, expr: str) -> list:
        answer = self.api("/api/v1/query", query=expr)
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self._log.close()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    """A real Prometheus scraping an agent that got the traffic above; ready once every exposed
    metric the dashboard draws has at least two samples."""
    binary = require("prometheus", "apt-get install -y prometheus")
    require("redis-server", "apt-get install -y redis-server")
    base = tmp_path_factory.mktemp("dashboard")
    started = time.monotonic()
    upstream, rejecting = Upstream(free_port()).start(), Upstream(free_port(), status=400).start()
    redis = RedisServer(str(base)).start()
    broker = Broker(base / "kafka").start()
    agent = AgentProcess(args=[], log_path=str(base / "agent.log"))
    server = None
    try:
        broker.create_topic(TOPIC, 1)
        ports = {"tight": free_port(), "full": free_port()}
        urls = {"upstream": upstream.url, "rejecting": rejecting.url, "redis": redis.url, "kafka": broker.bootstrap}
        config = base / "agent.yaml"
        config.write_text(yaml.safe_dump(_agent_config(agent, base / "state", ports, urls)))
        agent.args = ["run", "--config", str(config), "--state-dir", str(base / "state")]
        agent.start(wait=60)
        _traffic(agent, ports, broker)
        server = Prometheus(binary, base, f"127.0.0.1:{agent.metrics_port}")
        exposed = list(_expressions().values())
        deadline = time.monotonic() + 30  # then each panel's test says which has no data
        while time.monotonic() < deadline and not all(server.query(expr) for expr in exposed):
            time.sleep(0.5)
        print(f"agent, traffic and Prometheus with data in {time.monotonic() - started:.1f}s")
        yield server
    finally:
        if server is not None:
            server.stop()
        agent.kill()
        broker.kill()
        redis.kill()
        upstream.stop()
        rejecting.stop()


# One test against Prometheus, not one per panel, rule and metric: each test of this module that a
# worker of a parallel run takes makes that worker start the whole stack above (seconds) for itself.
def test_every_panel_and_alert_rule_works_against_a_real_prometheus(prometheus):
    problems = [f"panel {panel} has no data: {expr}" for panel, expr in _expressions().items()
                if not prometheus.query(expr)]
    metrics = _rule_metrics()
    assert metrics
    problems += [f"metric {metric}, named by an alert rule, is not exposed" for metric in metrics
                 if not prometheus.query(f'count({{__name__="{metric}", job="edgeagent"}})')]
    problems += _unhealthy_rules(prometheus)
    assert not problems, "\n".join(problems)


def _unhealthy_rules(prometheus) -> list[str]:
    """Every alert rule evaluates cleanly, over metrics that exist."""
    def rules() -> list[dict]:
        groups = prometheus.api("/api/v1/rules")["data"]["groups"]
        return [rule for group in groups for rule in group["rules"]]

    wait_until(lambda: all(rule["lastEvaluation"] > "2000" for rule in rules()), timeout=15, interval=0.5,
               message="every rule evaluated once")
    loaded = rules()
    expected = sum(len(group["rules"]) for group in yaml.safe_load(RULES.read_text())["groups"])
    problems = [] if len(loaded) == expected else [f"{len(loaded)} rules loaded of {expected}"]
    return problems + [f"rule {rule['name']} is {rule['health']}: {rule.get('lastError')}" for rule in loaded
                       if rule["health"] != "ok"]


def test_the_dashboard_filters_every_panel_by_job_and_instance():
    variables = {variable["name"] for variable in DASHBOARD["templating"]["list"]}
    assert {"datasource", "job", "instance"} <= variables
    for panel in DASHBOARD["panels"]:
        for target in panel.get("targets", []):
            assert 'job=~"$job", instance=~"$instance"' in target["expr"], panel["title"]
            assert target["datasource"]["uid"] == "${datasource}"
