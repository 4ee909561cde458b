"""The agent configs shipped under packaging/, and running one end to end on loopback.

A shipped config names hosts of its deployment (a hub Service, Kafka brokers, Redis, a platform
endpoint) and fixed ports. `loopback_overrides` points exactly those at the test's upstream,
broker, Redis and free ports with `--set`, as an operator would; nothing else is changed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.helpers.agent import AgentProcess
from tests.helpers.net import wait_until

ROOT = Path(__file__).resolve().parents[2]
PACKAGING = ROOT / "packaging"
SIGNALS = ("traces", "metrics", "logs")


def _kind(name: str) -> str:
    """A component's type: `otlphttp/telemetryflow` -> `otlphttp`."""
    return name.split("/")[0]


@dataclass(frozen=True)
class ShippedConfig:
    name: str  # where it ships, e.g. kubernetes/hub.yaml
    text: str

    @property
    def document(self) -> dict:
        return yaml.safe_load(self.text)


def configmap_configs(name: str, manifests: str) -> list[ShippedConfig]:
    """The config.yaml of every ConfigMap in a multi-document manifest."""
    return [ShippedConfig(f"{name}:{doc['metadata']['name']}", doc["data"]["config.yaml"])
            for doc in yaml.safe_load_all(manifests) if doc and doc.get("kind") == "ConfigMap"
            and "config.yaml" in doc.get("data", {})]


def shipped_configs() -> list[ShippedConfig]:
    """Plain config files, and the configs inside the Kubernetes manifests' ConfigMaps."""
    configs = [ShippedConfig(str(path.relative_to(PACKAGING)), path.read_text())
               for path in sorted(PACKAGING.glob("*/config.yaml"))]
    for path in sorted((PACKAGING / "kubernetes").glob("*.yaml")):
        configs += configmap_configs(str(path.relative_to(PACKAGING)), path.read_text())
    return configs


# Secrets and node facts the manifests take from the environment (Secrets, the downward API)
DEPLOYMENT_ENV = {"NODE_NAME": "node-1", "TELEMETRYFLOW_WORKSPACE_ID": "workspace-1", "TELEMETRYFLOW_TENANT_ID": "t-1",
                  "TELEMETRYFLOW_ENDPOINT": "http://127.0.0.1:9/unused", "EDGEAGENT_UPSTREAM": "http://127.0.0.1:9/unused"}


@dataclass(frozen=True)
class Loopback:
    """Where the test's services listen."""
    upstream_url: str
    state_dir: Path
    kafka: Callable[[], str]  # started on demand: bootstrap address
    redis: Callable[[], str]  # started on demand: redis:// URL


def needs(document: dict) -> set[str]:
    """Which test services a config talks to: "kafka", "redis"."""
    out = set()
    components = {**(document.get("receivers") or {}), **(document.get("exporters") or {})}
    if any(_kind(name) == "kafka" for name in components):
        out.add("kafka")
    for name, processor in (document.get("processors") or {}).items():
        if _kind(name) == "tail_sampling" and ((processor or {}).get("shared_state") or {}).get("redis"):
            out.add("redis")
    return out


def loopback_overrides(document: dict, agent: AgentProcess, services: Loopback) -> list[str]:
    """--set flags moving every listener to the agent's free loopback ports and every remote
    endpoint to a test service; a component this does not know fails the test loudly."""
    flags: list[str] = []
    otlp = [name for name in document.get("receivers") or {} if _kind(name) == "otlp"]
    assert len(otlp) <= 1, "one otlp receiver per config: the test has one pair of ports"
    for name, receiver in (document.get("receivers") or {}).items():
        kind = _kind(name)
        if kind == "otlp":
            protocols = receiver["protocols"]
            flags += [
                f"receivers::{name}::protocols::{protocol}::endpoint=127.0.0.1:{port}"
                for protocol, port in (("grpc", agent.grpc_port), ("http", agent.http_port))
                if protocol in protocols
            ]
        elif kind == "kafka":
            flags.append(f"receivers::{name}::brokers=[{services.kafka()}]")
        else:
            raise AssertionError(f"receiver {name}: teach loopback_overrides where it listens")
    for name in document.get("exporters") or {}:
        kind = _kind(name)
        if kind == "otlphttp":
            flags.append(f"exporters::{name}::endpoint={services.upstream_url}")
        elif kind == "kafka":
            flags.append(f"exporters::{name}::brokers=[{services.kafka()}]")
        else:
            raise AssertionError(f"exporter {name}: teach loopback_overrides where it sends")
    for name in document.get("extensions") or {}:
        kind = _kind(name)
        if kind == "health_check":
            flags.append(f"extensions::{name}::endpoint=127.0.0.1:{agent.health_port}")
        elif kind == "file_storage":
            flags.append(f"extensions::{name}::directory={services.state_dir / 'queue'}")
    if "redis" in needs(document):
        flags += [f"processors::{name}::shared_state::redis::url={services.redis()}"
                  for name in document["processors"] if _kind(name) == "tail_sampling"]
    flags.append("service::telemetry::metrics::readers=[{pull: {exporter: {prometheus: "
                 f"{{host: 127.0.0.1, port: {agent.metrics_port}}}}}}}}}]")
    return [word for flag in flags for word in ("--set", flag)]


def otlp_trace_request(service: str = "packaging") -> bytes:
    """One OTLP/protobuf trace request with a failing span: what an edge agent writes to Kafka."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.add(key="service.name").value.string_value = service
    span = resource_spans.scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = bytes(range(1, 17)), bytes(range(1, 9)), "checkout"
    span.start_time_unix_nano, span.end_time_unix_nano = 1_700_000_000_000_000_000, 1_700_000_001_000_000_000
    span.status.code = 2  # ERROR: every shipped sampling policy keeps it
    return request.SerializeToString()


ACCEPTED = {"traces": "otelcol_receiver_accepted_spans", "metrics": "otelcol_receiver_accepted_metric_points",
            "logs": "otelcol_receiver_accepted_log_records"}


def _from_kafka(document: dict, receiver: str, agent: AgentProcess, broker) -> None:
    """A trace request written to the receiver's topic once the receiver owns the partition
    (initial_offset: latest skips what was there before)."""
    (topic,) = document["receivers"][receiver]["traces"]["topics"]  # otelcol 0.165 takes a list
    broker.create_topic(topic, 1, exist_ok=True)
    wait_until(lambda: any(key.startswith("kafka_consumer_lag{") for key in agent.metrics()), timeout=30,
               interval=0.25, message="the kafka receiver owning its partition")
    broker.produce(topic, [otlp_trace_request()])


def _from_sdk(kind: str, agent: AgentProcess) -> None:
    from tests.helpers.sdk import send_logs, send_metrics, send_spans

    if kind == "traces":
        send_spans("grpc", agent.grpc_port, 5)
        send_spans("http", agent.http_port, 5)
    elif kind == "metrics":
        send_metrics("http", agent.http_port)
    else:
        send_logs("grpc", agent.grpc_port)


def send_and_check(document: dict, agent: AgentProcess, upstream, broker) -> None:
    """Telemetry into every pipeline's receivers: the agent must accept it, and traces must leave
    through the pipeline's exporter unless a sampling decision holds them back."""
    pipelines = document["service"]["pipelines"]
    for pipeline, settings in pipelines.items():
        kind = _kind(pipeline)
        for receiver in settings["receivers"]:
            if _kind(receiver) == "kafka":
                _from_kafka(document, receiver, agent, broker)
            else:
                _from_sdk(kind, agent)
        wait_until(lambda kind=kind: agent.metric(ACCEPTED[kind]) > 0, timeout=20, interval=0.2,
                   message=f"{kind} accepted")
    traces = pipelines.get("traces")
    if traces is None or any(_kind(name) == "tail_sampling" for name in traces.get("processors", [])):
        return
    if any(_kind(name) == "kafka" for name in traces["exporters"]):
        topic = document["exporters"][next(n for n in traces["exporters"] if _kind(n) == "kafka")]["traces"]["topic"]
        assert broker.records(topic, 1, timeout=30), f"no trace written to {topic}"
    else:
        wait_until(lambda: len(upstream.spans()) >= 10, timeout=30, interval=0.2, message="the spans upstream")


def run_on_installation(config: ShippedConfig, edgeagent: Path, request, upstream, tmp_path: Path) -> None:
    """Start `edgeagent` (an installed script) on `config` with loopback overrides, with Kafka and
    Redis where the config needs them; it must become ready, accept OTLP and stop cleanly."""
    document = config.document
    broker = request.getfixturevalue("kafka") if "kafka" in needs(document) else None
    services = Loopback(upstream.url, tmp_path / "state", kafka=lambda: broker.bootstrap,
                        redis=lambda: request.getfixturevalue("redis_server").url)
    path = tmp_path / "config.yaml"
    path.write_text(config.text)
    # PYTHONPATH emptied: the installed package runs, not the work tree's
    agent = AgentProcess(args=[], env={**DEPLOYMENT_ENV, "PYTHONPATH": ""}, log_path=str(tmp_path / "agent.log"),
                         command=[str(edgeagent)])
    agent.args = ["run", "--config", str(path), "--state-dir", str(services.state_dir),
                  *loopback_overrides(document, agent, services)]
    try:
        agent.start(wait=60)
        send_and_check(document, agent, upstream, broker)
        assert agent.terminate() == 0, agent.log()
    finally:
        agent.kill()
