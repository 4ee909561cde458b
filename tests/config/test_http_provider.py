"""otelcol's http and https providers: `--config https://...` and `${https://...}` fetch with one GET.

A real HTTP(S) server on loopback serves the documents; the agent's own command reads them.
"""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import Iterator

import pytest

from edgeagent.config.loader import ConfigError, load_text
from tests.config.conftest import run_validate
from tests.config.test_otelcol_compat import run_cli

AGENT = ("receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:4318\n"
         "exporters:\n  otlp_http:\n    endpoint: http://collector:4318\n"
         "service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [otlp_http]\n")


class _Documents(http.server.BaseHTTPRequestHandler):
    documents: dict[str, tuple[int, bytes]] = {}

    def do_GET(self) -> None:  # noqa: N802 (the handler's name is http.server's)
        status, body = self.documents.get(self.path, (404, b"no such document"))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _serve(documents: dict[str, tuple[int, bytes]], context: ssl.SSLContext | None = None) -> Iterator[str]:
    handler = type("Handler", (_Documents,), {"documents": documents})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"{'https' if context else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


DOCUMENTS = {"/agent.yaml": (200, AGENT.encode()), "/token": (200, b"s3cret"),
             "/queue": (200, b"{num_consumers: 3}"), "/gone": (503, b"try later")}


@pytest.fixture
def web() -> Iterator[str]:
    yield from _serve(DOCUMENTS)


@pytest.mark.e2e  # runs the edgeagent command
def test_a_config_served_over_http_validates_and_merges_with_the_next_config(web, tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text("exporters:\n  otlp_http:\n    timeout: soon\n")
    assert run_validate(f"{web}/agent.yaml").returncode == 0
    result = run_cli("validate", "--config", f"{web}/agent.yaml", "--config", str(site))
    assert result.returncode == 1 and "exporters::otlp_http::timeout" in result.stderr, result.stderr


def test_an_http_reference_is_the_body_inside_text_and_its_yaml_as_a_whole_value(web):
    text = AGENT.replace("    endpoint: http://collector:4318\n",
                         "    endpoint: http://collector:4318\n"
                         f"    headers: {{Authorization: 'Bearer ${{{web}/token}}'}}\n"
                         f"    sending_queue: ${{{web}/queue}}\n")
    exporter = load_text(text, environ={}).exporters["otlp_http"].config
    assert exporter.headers == {"Authorization": "Bearer s3cret"}
    assert exporter.sending_queue.num_consumers == 3


@pytest.mark.e2e  # runs the edgeagent command
def test_a_source_that_does_not_answer_200_is_an_error_naming_the_uri_and_the_status(web):
    result = run_cli("validate", "--config", f"{web}/missing.yaml")
    assert result.returncode == 1 and f"{web}/missing.yaml" in result.stderr and "404" in result.stderr, \
        result.stderr
    text = AGENT.replace("    endpoint: http://collector:4318\n",
                         f"    endpoint: http://collector:4318\n    headers: {{X-Token: '${{{web}/gone}}'}}\n")
    with pytest.raises(ConfigError) as caught:
        load_text(text, environ={})
    assert [(path, "503" in message and f"{web}/gone" in message) for path, message in caught.value.errors] == [
        ("exporters::otlp_http::headers::X-Token", True)]


@pytest.mark.e2e  # runs the edgeagent command
def test_a_config_served_over_https_is_read_with_the_trusted_cas_and_refused_without_them(certs):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    for base in _serve(DOCUMENTS, context):
        trusted = run_cli("validate", "--config", f"{base}/agent.yaml", env={"SSL_CERT_FILE": certs.ca_file})
        assert trusted.returncode == 0, trusted.stderr
        untrusted = run_cli("validate", "--config", f"{base}/agent.yaml")
        assert untrusted.returncode == 1 and "certificate" in untrusted.stderr, untrusted.stderr
