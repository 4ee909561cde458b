"""The health_check extension's otelcol keys: `tls` (a real agent answering over HTTPS, checked
with the test CA), `response_body` (its healthy and unhealthy text), and the keys otelcol accepts
but ignores (a warning here) or refuses (the v2 settings)."""

from __future__ import annotations

import asyncio
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from edgeagent.extensions.health_check import HealthCheck, HealthCheckConfig
from tests.helpers.net import free_port

CONFIG = """
receivers:
  otlp:
    protocols:
      http:
exporters:
  debug:
extensions:
  health_check:
  health_check/tls:
    endpoint: 127.0.0.1:${env:TLS_PORT}
    path: /status
    tls:
      cert_file: ${env:CERT}
      key_file: ${env:KEY}
    response_body:
      healthy: I'm OK
      unhealthy: I'm not well
    response_headers:
      X-Served-By: edge
    compression_algorithms: [gzip]
    check_collector_pipeline:
      enabled: false
      interval: 5m
      exporter_failure_threshold: 5
service:
  extensions: [health_check, health_check/tls]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [debug]
"""


def _get(url: str, context: ssl.SSLContext | None = None) -> tuple[int, str, str]:
    answer = _get_with_headers(url, context)
    return answer[0], answer[1].get("Content-Type", ""), answer[2]


def _get_with_headers(url: str, context: ssl.SSLContext | None = None) -> tuple[int, dict[str, str], str]:
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


def test_health_check_serves_https_with_the_configured_body(agents, tmp_path, certs):
    config = tmp_path / "health-tls.yaml"
    config.write_text(CONFIG)
    port = free_port()
    agents(["run", "--config", str(config), "--state-dir", str(tmp_path / "state")],
           env={"TLS_PORT": str(port), "CERT": certs.server_cert, "KEY": certs.server_key})
    trusting = ssl.create_default_context(cafile=certs.ca_file)

    status, content_type, body = _get(f"https://127.0.0.1:{port}/status", trusting)
    assert (status, body) == (200, "I'm OK")
    assert content_type.startswith("text/plain")
    status, _, details = _get(f"https://127.0.0.1:{port}/health", trusting)  # the other paths stay JSON
    assert status == 200 and '"healthy": true' in details

    # plain HTTP to a TLS port: Go's answer, in plain text
    assert _get(f"http://127.0.0.1:{port}/status") == (400, "", "Client sent an HTTP request to an HTTPS server.\n")
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):  # a CA that did not sign it
        _get(f"https://127.0.0.1:{port}/status", ssl.create_default_context())


@dataclass
class _Host:
    """The one thing the extension asks of its host: the service's health."""

    healthy: bool = True
    failures: dict[str, str] = field(default_factory=dict)

    def health(self) -> dict[str, Any]:
        return {"healthy": self.healthy, "failures": self.failures}

    def ready(self) -> bool:
        return self.healthy


async def _status(extension_config: dict[str, Any], healthy: bool) -> tuple[int, str]:
    port = free_port()
    config = HealthCheckConfig.model_validate({"endpoint": f"127.0.0.1:{port}", **extension_config})
    extension = HealthCheck("health_check", config, _Host(healthy=healthy))
    await extension.start()
    try:
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/") as response:
            return response.status, await response.text()
    finally:
        await extension.shutdown()


@pytest.mark.parametrize(("healthy", "expected"), [(True, (200, "I'm OK")), (False, (503, "I'm not well"))])
def test_response_body_answers_with_the_text_of_the_state(healthy, expected):
    body = {"response_body": {"healthy": "I'm OK", "unhealthy": "I'm not well"}}
    assert asyncio.run(_status(body, healthy)) == expected


def test_without_response_body_the_answer_is_otelcols_json():
    status, text = asyncio.run(_status({}, False))
    assert status == 503 and '"status": "Server not available"' in text


@pytest.mark.parametrize(("settings", "warned"), [
    ({"check_collector_pipeline": {"enabled": True, "interval": "5m", "exporter_failure_threshold": -1}},
     "check_collector_pipeline has no effect"),
    ({"component_health": {"include_permanent_errors": True, "recovery_duration": "1m"}},
     "component_health has no effect"),
])
def test_keys_otelcol_accepts_and_ignores_are_accepted_with_a_warning(settings, warned):
    warnings = HealthCheckConfig.model_validate(settings).config_warnings()
    assert any(warned in warning for warning in warnings), warnings


def test_handler_settings_otelcols_health_check_ignores_are_accepted_with_a_warning():
    settings = {"cors": {"allowed_origins": ["https://app.example"]}, "response_headers": {"X-A": "b"},
                "compression_algorithms": ["gzip"], "max_request_body_size": 10, "include_metadata": True}
    warnings = HealthCheckConfig.model_validate(settings).config_warnings()
    assert [warning.split(" ")[0] for warning in warnings] == list(settings)
    assert all("has no effect on the health check, as in otelcol" in warning for warning in warnings)


def test_read_header_timeout_closes_a_connection_that_sends_nothing():
    async def scenario() -> float:
        port = free_port()
        config = HealthCheckConfig.model_validate({"endpoint": f"127.0.0.1:{port}", "read_header_timeout": "300ms"})
        extension = HealthCheck("health_check", config, _Host())
        await extension.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            started = asyncio.get_running_loop().time()
            assert await asyncio.wait_for(reader.read(), timeout=5) == b""  # closed by the server
            writer.close()
            return asyncio.get_running_loop().time() - started
        finally:
            await extension.shutdown()

    assert 0.2 < asyncio.run(scenario()) < 2.0


def test_a_disabled_collector_pipeline_check_asks_for_nothing_and_is_not_warned_about():
    config = {"check_collector_pipeline": {"enabled": False}, "use_v2": False}
    assert HealthCheckConfig.model_validate(config).config_warnings() == []


def test_tls_and_response_body_answer_as_otelcols(agents, otelcol, tmp_path, certs):
    """The same health_check settings on otelcol 0.165 and on edgeagent: the same answer over HTTPS."""
    trusting = ssl.create_default_context(cafile=certs.ca_file)
    answers = {}
    for name in ("otelcol", "edgeagent"):
        port = free_port()
        settings = {"endpoint": f"127.0.0.1:{port}", "path": "/status",
                    "tls": {"cert_file": certs.server_cert, "key_file": certs.server_key},
                    "response_body": {"healthy": "I'm OK", "unhealthy": "I'm not well"},
                    # keys of the handler otelcol's health check replaces: no effect on either
                    "response_headers": {"X-Served-By": "edge"}, "compression_algorithms": ["gzip"],
                    "check_collector_pipeline": {"enabled": True, "interval": "5m", "exporter_failure_threshold": 5}}
        if name == "otelcol":
            otelcol({"receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{free_port()}"}}}},
                     "exporters": {"debug": {}}, "extensions": {"health_check/tls": settings},
                     "service": {"extensions": ["health_check/tls"],
                                 "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["debug"]}}}})
        else:
            config = tmp_path / "health-tls.yaml"
            config.write_text(CONFIG)
            agents(["run", "--config", str(config), "--state-dir", str(tmp_path / "state")],
                   env={"TLS_PORT": str(port), "CERT": certs.server_cert, "KEY": certs.server_key})
        status, headers, body = _get_with_headers(f"https://127.0.0.1:{port}/status", trusting)
        answers[name] = (status, headers.get("Content-Type"), body, headers.get("X-Served-By"))
    assert answers["edgeagent"] == answers["otelcol"] == (200, "text/plain; charset=utf-8", "I'm OK", None)


def test_health_check_serves_on_a_unix_socket_and_removes_it_at_shutdown(tmp_path):
    path = tmp_path / "health.sock"

    async def scenario() -> tuple[int, str]:
        config = HealthCheckConfig.model_validate({"transport": "unix", "endpoint": str(path), "path": "/status",
                                                   "response_body": {"healthy": "up"}})
        extension = HealthCheck("health_check", config, _Host(healthy=True))
        await extension.start()
        try:
            async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(path))) as session, \
                    session.get("http://health/status") as response:
                return response.status, await response.text()
        finally:
            await extension.shutdown()

    assert asyncio.run(scenario()) == (200, "up")
    assert not path.exists()


async def _statuses(path: str, asked: list[str], method: str = "GET") -> list[int]:
    port = free_port()
    config = HealthCheckConfig.model_validate({"endpoint": f"127.0.0.1:{port}", "path": path})
    extension = HealthCheck("health_check", config, _Host(healthy=True))
    await extension.start()
    try:
        statuses = []
        async with aiohttp.ClientSession() as session:
            for url_path in asked:
                async with session.request(method, f"http://127.0.0.1:{port}{url_path}") as response:
                    statuses.append(response.status)
        return statuses
    finally:
        await extension.shutdown()


def test_a_path_ending_in_a_slash_answers_below_it_as_otelcols_does():
    """otelcol serves `path` with Go's ServeMux, where a pattern ending in / matches every path
    below it: with the default `/`, a probe of /healthz or /livez is answered, not 404."""
    assert asyncio.run(_statuses("/", ["/", "/healthz", "/livez/x"])) == [200, 200, 200]
    assert asyncio.run(_statuses("/status/", ["/status/", "/status/x", "/other"])) == [200, 200, 404]
    assert asyncio.run(_statuses("/status", ["/status", "/status/x"])) == [200, 404]


def test_the_path_answers_any_method_as_otelcols_does():
    """otelcol's handler takes every method: HAProxy's `option httpchk` sends OPTIONS by default."""
    assert asyncio.run(_statuses("/", ["/", "/healthz"], method="OPTIONS")) == [200, 200]
    assert asyncio.run(_statuses("/status", ["/status"], method="POST")) == [200]
