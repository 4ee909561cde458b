"""The same pipelines and traffic for edgeagent and otelcol, so their /metrics can be compared.

Traces and metrics go to a healthy upstream and to one that answers 400 (dead-lettered by
edgeagent); traces through memory_limiter, filter, tail_sampling and batch. Metrics and logs also
go to an offline upstream whose small queue overflows, and logs to an OTLP/gRPC upstream (edgeagent drops its
oldest records); a
second receiver feeds an offline upstream whose queue holds one request, so the requests after
it are refused.
"""

from __future__ import annotations

import contextlib
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from tests.helpers.grpc_upstream import GrpcUpstream
from tests.helpers.net import free_port
from tests.helpers.sdk import send_logs, send_metrics, send_spans
from tests.helpers.upstream import Upstream

RETRY = {"initial_interval": "100ms", "max_interval": "500ms", "max_elapsed_time": "0s"}


@dataclass
class Ports:
    grpc: int = field(default_factory=free_port)
    http: int = field(default_factory=free_port)
    refusing: int = field(default_factory=free_port)  # the receiver whose queue is full


@dataclass
class Upstreams:
    """A healthy OTLP/HTTP upstream, one that answers 400, and a healthy OTLP/gRPC one."""

    http: Upstream
    rejecting: Upstream
    grpc: GrpcUpstream


@contextlib.contextmanager
def upstreams() -> Iterator[Upstreams]:
    servers = Upstreams(Upstream(free_port()).start(), Upstream(free_port()).start(),
                        GrpcUpstream(free_port()).start())
    servers.rejecting.status = 400
    try:
        yield servers
    finally:
        for server in (servers.http, servers.rejecting, servers.grpc):
            server.stop()


def pipelines_config(ports: Ports, servers: Upstreams) -> dict[str, Any]:
    """The config both take, in otelcol's YAML shape."""
    offline = f"http://127.0.0.1:{free_port()}"
    return {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{ports.grpc}"},
                                             "http": {"endpoint": f"127.0.0.1:{ports.http}"}}},
                      "otlp/refusing": {"protocols": {"http": {"endpoint": f"127.0.0.1:{ports.refusing}"}}}},
        "processors": {
            "memory_limiter": {"check_interval": "1s", "limit_mib": 2000, "spike_limit_mib": 400},
            "filter": {"spans": {"exclude": {"match_type": "strict", "span_names": ["op-3"]}}},
            "tail_sampling": {"decision_wait": "1s", "policies": [{"name": "all", "type": "always_sample"}]},
            "batch": {"timeout": "200ms"},
        },
        "exporters": {
            "otlphttp": {"endpoint": servers.http.url, "retry_on_failure": RETRY},
            "otlphttp/rejecting": {"endpoint": servers.rejecting.url, "retry_on_failure": RETRY},
            "otlp": {"endpoint": servers.grpc.endpoint, "tls": {"insecure": True}, "retry_on_failure": RETRY},
            # one consumer: the other queued record is never leased, so edgeagent can drop it to make room
            "otlphttp/offline": {"endpoint": offline, "retry_on_failure": RETRY,
                                 "sending_queue": {"queue_size": 2, "num_consumers": 1}},
            "otlphttp/full": {"endpoint": offline, "retry_on_failure": RETRY, "sending_queue": {"queue_size": 1}},
        },
        "service": {"pipelines": {
            "traces": {"receivers": ["otlp"], "processors": ["memory_limiter", "filter", "tail_sampling", "batch"],
                       "exporters": ["otlphttp", "otlphttp/rejecting"]},
            "metrics": {"receivers": ["otlp"], "processors": ["memory_limiter", "batch"],
                        "exporters": ["otlphttp", "otlphttp/offline", "otlphttp/rejecting"]},
            "logs": {"receivers": ["otlp"], "processors": ["memory_limiter", "batch"],
                     "exporters": ["otlphttp", "otlphttp/offline", "otlp"]},
            "metrics/refusing": {"receivers": ["otlp/refusing"], "exporters": ["otlphttp/full"]},
        }},
    }


def edgeagent_config(path: Path, ports: Ports, servers: Upstreams, metrics_port: int, health_port: int) -> str:
    """The same pipelines for edgeagent: one full queue drops its oldest records, the other refuses."""
    config = pipelines_config(ports, servers)
    config["exporters"]["otlphttp/offline"]["sending_queue"]["storage"] = "file_storage/dropping"
    config["exporters"]["otlphttp/full"]["sending_queue"]["storage"] = "file_storage/blocking"
    config["extensions"] = {"health_check": {"endpoint": f"127.0.0.1:{health_port}"},
                            "file_storage/dropping": {"directory": str(path.parent / "dropping-queue"),
                                                      "full_policy": "drop_oldest"},
                            "file_storage/blocking": {"directory": str(path.parent / "blocking-queue"),
                                                      "full_policy": "block"}}
    config["service"]["extensions"] = list(config["extensions"])
    reader = {"pull": {"exporter": {"prometheus": {"host": "127.0.0.1", "port": metrics_port}}}}
    config["service"]["telemetry"] = {"metrics": {"level": "detailed", "readers": [reader]}}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


def send_traffic(ports: Ports) -> int:
    """Traces, metrics and logs over both transports, several exports of each, so bounded queues
    overflow; then requests to the full queue. Returns how many of those were refused."""
    send_spans("http", ports.http, 60, batch=20)
    send_spans("grpc", ports.grpc, 40, batch=20)
    for _ in range(3):
        send_metrics("http", ports.http, points=4)
        send_metrics("grpc", ports.grpc, points=3)
        send_logs("http", ports.http, count=5)
        send_logs("grpc", ports.grpc, count=5)
    return sum(_post_metrics(ports.refusing) != 200 for _ in range(4))


def _post_metrics(port: int) -> int:
    """One OTLP/HTTP metrics request, without the SDK's retries; returns the status."""
    request = ExportMetricsServiceRequest()
    metric = request.resource_metrics.add().scope_metrics.add().metrics.add(name="queue.probe")
    metric.gauge.data_points.add(as_int=1, time_unix_nano=time.time_ns())
    post = urllib.request.Request(f"http://127.0.0.1:{port}/v1/metrics", data=request.SerializeToString(),
                                  headers={"Content-Type": "application/x-protobuf"}, method="POST")
    try:
        with urllib.request.urlopen(post, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def scrape(port: int, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as response:
        return response.read().decode()


def settle(seconds: float) -> None:
    """Let decision_wait, batch timeouts and retries play out before a scrape."""
    time.sleep(seconds)


def families(text: str) -> dict[str, tuple[str, set[str]]]:
    """Every metric family of a /metrics body: name -> (type, the label names of its series)."""
    types: dict[str, str] = {}
    labels: dict[str, set[str]] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
            labels.setdefault(name, set())
        elif line and not line.startswith("#"):
            series = line.rsplit(" ", 1)[0]
            name, _, rest = series.partition("{")
            family = name if name in types else name.rsplit("_", 1)[0]  # a histogram's _bucket, _sum, _count
            if family not in types and family.endswith("_bucket"):
                family = family[: -len("_bucket")]
            labels.setdefault(family, set()).update(
                pair.split("=", 1)[0] for pair in _label_pairs(rest.rstrip("}")) if not pair.startswith("le="))
    return {name: (types.get(name, "untyped"), labels[name]) for name in labels}


def _label_pairs(text: str) -> list[str]:
    """k="v" pairs of a series; values may hold commas."""
    pairs, current, quoted, escaped = [], "", False, False
    for char in text:
        if char == "," and not quoted:
            pairs.append(current)
            current = ""
            continue
        current += char
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
    if current:
        pairs.append(current)
    return pairs
