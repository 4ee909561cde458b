"""A config read as otelcol reads it reaches the upstream unchanged: references and YAML 1.2 text."""

from __future__ import annotations

from tests.helpers.configs import http_exporter, traces_config
from tests.helpers.net import wait_until
from tests.helpers.sdk import send_spans


def test_a_file_reference_and_plain_on_reach_the_upstream_as_otelcol_sends_them(agents, upstream, tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret")
    config = traces_config(tmp_path / "agent.yaml", {"otlphttp": http_exporter(upstream.url, headers={
        "Authorization": f"Bearer ${{file:{token}}}", "X-Debug": "on", "X-Env": "${env:EDGE_SITE}"})})
    text = (tmp_path / "agent.yaml").read_text()
    (tmp_path / "agent.yaml").write_text(text.replace("X-Debug: 'on'", "X-Debug: on"))  # plain, as a user writes it
    agent = agents(["run", "--config", config, "--state-dir", str(tmp_path / "state")], env={"EDGE_SITE": "a$$b"})
    send_spans("http", agent.http_port, 5)
    wait_until(lambda: upstream.received("traces"), 20, message="spans at the upstream")
    headers = upstream.received("traces")[0].headers
    assert (headers["Authorization"], headers["X-Debug"], headers["X-Env"]) == ("Bearer s3cret", "on", "a$b")
