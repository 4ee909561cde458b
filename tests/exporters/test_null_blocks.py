"""A block written as `key:` alone (YAML null, e.g. every setting under it commented out) means
what it means in otelcol 0.165: a plain block keeps its defaults, an optional block that is on by
default (sending_queue, gRPC keepalive) stays on with its defaults, and one that is off by default
(cookies) stays off. edgeagent refused the first kind, and took `cookies:` as a cookie jar and
gRPC `keepalive:` as no keepalive, which otelcol does not (checked against it: a run with
`cookies:` sends no cookie back)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from edgeagent.exporters.otlp import OtlpGrpcConfig
from edgeagent.exporters.otlphttp import OtlpHttpConfig
from tests.config.conftest import REPO_ROOT, _environment

HTTP_NULLS = ["sending_queue", "retry_on_failure", "headers", "compression_params", "cookies", "keepalive"]
GRPC_NULLS = ["sending_queue", "retry_on_failure", "headers", "tls", "keepalive"]


def test_null_blocks_of_the_http_exporter_keep_otelcols_defaults():
    config = OtlpHttpConfig.model_validate({"endpoint": "http://collector:4318", **dict.fromkeys(HTTP_NULLS)})
    default = OtlpHttpConfig.model_validate({"endpoint": "http://collector:4318"})
    assert config == default
    assert config.cookies is None and config.sending_queue.enabled and config.retry_on_failure.enabled
    partition = OtlpHttpConfig.model_validate({"endpoint": "http://collector:4318",
                                               "sending_queue": {"batch": {"partition": None}}})
    assert partition.sending_queue.batch is not None and partition.sending_queue.batch.partition.cache_size == 10000


def test_null_blocks_of_the_grpc_exporter_keep_otelcols_defaults():
    config = OtlpGrpcConfig.model_validate({"endpoint": "collector:4317", **dict.fromkeys(GRPC_NULLS)})
    assert config == OtlpGrpcConfig.model_validate({"endpoint": "collector:4317"})
    assert config.channel_settings().keepalive_time == 10.0
    off = OtlpGrpcConfig.model_validate({"endpoint": "collector:4317", "keepalive": {"enabled": False}})
    assert off.channel_settings().keepalive_time == 0.0


@pytest.mark.e2e
def test_otelcol_and_edgeagent_both_accept_them(otelcol_binary, tmp_path):
    exporters = {"otlphttp": {"endpoint": "http://127.0.0.1:4319", **dict.fromkeys(HTTP_NULLS),
                              "sending_queue": {"batch": {"partition": None}}},
                 "otlp": {"endpoint": "127.0.0.1:4317", **dict.fromkeys(GRPC_NULLS)}}
    document = {"receivers": {"otlp": {"protocols": {"http": {"endpoint": "127.0.0.1:4318"}}}},
                "exporters": exporters,
                "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": list(exporters)}}}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    theirs = subprocess.run([str(otelcol_binary), "validate", "--config", str(path)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert theirs.returncode == 0, theirs.stderr[-2000:]
    ours = subprocess.run([sys.executable, "-m", "edgeagent", "validate", "--config", str(path)],
                          capture_output=True, text=True, timeout=60, check=False, env=_environment(None),
                          cwd=REPO_ROOT, stdin=subprocess.DEVNULL)
    assert ours.returncode == 0, ours.stdout[-2000:] + ours.stderr[-2000:]
