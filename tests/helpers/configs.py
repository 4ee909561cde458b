"""Agent configs for end-to-end tests: the otlp receiver feeding the given exporters."""

from __future__ import annotations

from pathlib import Path

import yaml

# fast retries, so tests about retrying take seconds, not minutes
FAST_RETRY = {"initial_interval": "100ms", "max_interval": "1s", "max_elapsed_time": "0s"}


def traces_config(path: Path, exporters: dict[str, dict], processors: dict[str, dict] | None = None) -> str:
    """Write a config with one traces pipeline, otlp receiver -> `processors` -> `exporters`; returns its path."""
    processors = processors or {}
    config = {
        "receivers": {"otlp": {"protocols": {"grpc": {}, "http": {}}}},
        "processors": processors,
        "exporters": exporters,
        "extensions": {"health_check": {}},
        "service": {
            "extensions": ["health_check"],
            "pipelines": {"traces": {"receivers": ["otlp"], "processors": list(processors),
                                     "exporters": list(exporters)}},
        },
    }
    if not processors:
        del config["processors"]
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


def grpc_exporter(endpoint: str, **settings) -> dict:
    """The `otlp` (gRPC) exporter over plaintext, with fast retries and one consumer unless overridden."""
    return {"endpoint": endpoint, "tls": {"insecure": True}, "retry_on_failure": FAST_RETRY,
            "sending_queue": {"num_consumers": 1}, **settings}


def http_exporter(endpoint: str, **settings) -> dict:
    """The `otlphttp` exporter with fast retries and one consumer unless overridden."""
    return {"endpoint": endpoint, "retry_on_failure": FAST_RETRY, "sending_queue": {"num_consumers": 1}, **settings}


def queue_on_disk_config(path: Path, directory: Path | str, full_policy: str = "block") -> str:
    """An OTLP/HTTP traces pipeline into an otlphttp exporter whose queue is kept by file_storage in
    `directory` (the disk tests' small or failing filesystems); the upstream is ${env:UPSTREAM}."""
    path.write_text(f"""
receivers:
  otlp:
    protocols:
      http:
exporters:
  otlphttp:
    endpoint: ${{env:UPSTREAM}}
    retry_on_failure:
      initial_interval: 200ms
      max_interval: 1s
    sending_queue:
      queue_size: 100000
      storage: file_storage
extensions:
  health_check:
  file_storage:
    directory: {directory}
    full_policy: {full_policy}
service:
  extensions: [health_check, file_storage]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlphttp]
""")
    return str(path)
