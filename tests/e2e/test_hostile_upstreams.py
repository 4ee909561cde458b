"""Upstreams that answer in ways that used to lose data, leak secrets or stop the senders.

The real agent sends to `tests.helpers.upstream.Upstream`, programmed to redirect, refuse
oversized requests, or echo the request's headers in its error answers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.helpers.cli import cli, cli_json
from tests.helpers.net import free_port, wait_until
from tests.helpers.sdk import send_metrics, send_spans
from tests.helpers.upstream import Upstream

CONFIG = os.path.join(os.path.dirname(__file__), "..", "testdata", "e2e", "upstream-behaviours.yaml")
EXPORTER = "otlphttp"
METRICS_PIPELINE = ["--set", "service::pipelines::metrics={receivers: [otlp], exporters: [otlphttp]}"]


def start_agent(agents, tmp_path, upstream, *extra: str, env: dict[str, str] | None = None, **exporter):
    args = ["run", "--config", CONFIG, "--state-dir", str(tmp_path / "state"), *extra]
    for key, value in exporter.items():
        args += ["--set", f"exporters::{EXPORTER}::{key}={json.dumps(value)}"]
    return agents(args, env={"UPSTREAM": upstream.url, **(env or {})})


def log_entries(agent) -> list[dict]:
    with open(agent.log_path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.startswith("{")]


def queued(agent, signal: str = "traces") -> float:
    return agent.metric("edgeagent_queue_items", data_type=signal)


# ---- redirects -----------------------------------------------------------------------------------

@pytest.mark.parametrize("status", [301, 302, 303])
def test_a_redirect_to_a_login_page_keeps_the_data_queued_instead_of_following_it_as_a_get(
        agents, upstream, tmp_path, status):
    portal = f"{upstream.url}/login?next=/v1/traces"
    upstream.redirect = (status, portal)
    agent = start_agent(agents, tmp_path, upstream)
    sent = send_spans("http", agent.http_port, 20)
    wait_until(lambda: len(upstream.attempts_of("traces")) >= 4, timeout=15, message="four redirected attempts")

    assert upstream.stray == [], "the exporter followed the redirect"
    assert agent.metric("otelcol_exporter_sent_spans", exporter=EXPORTER) == 0
    assert queued(agent) == 20
    wait_until(lambda: agent.health()[1]["exporters"][EXPORTER]["upstream"] == "offline", timeout=10,
               message="the exporter offline")
    shown = f"{upstream.url}/login?next=***"  # query values may be tokens: never shown
    assert shown in agent.health()[1]["exporters"][EXPORTER].get("problem", "")
    mentions = [e for e in log_entries(agent) if shown in json.dumps(e)]
    # once per episode, not per attempt: the redirect's warning, and the unreachable upstream's with its error
    assert sorted(e["msg"] for e in mentions) == sorted({e["msg"] for e in mentions}) != [], mentions

    upstream.redirect = None
    wait_until(lambda: upstream.span_ids() >= sent, timeout=30, message="every span delivered")
    wait_until(lambda: "problem" not in agent.health()[1]["exporters"][EXPORTER], timeout=10,
               message="the problem cleared")
    assert agent.terminate() == 0


@pytest.mark.parametrize("status", [307, 308])
def test_307_and_308_are_followed_with_the_same_method_and_body(agents, upstream, tmp_path, status):
    target = Upstream(free_port()).start()
    try:
        upstream.redirect = (status, f"{target.url}/v1/traces")
        agent = start_agent(agents, tmp_path, upstream)
        sent = send_spans("http", agent.http_port, 50)
        wait_until(lambda: target.span_ids() >= sent, timeout=20, message="every span at the redirect target")
        wait_until(lambda: agent.metric("otelcol_exporter_sent_spans", exporter=EXPORTER) == 50, timeout=10,
                   message="50 spans counted as sent")
        assert upstream.stray == [] and target.stray == []
        assert agent.terminate() == 0
    finally:
        target.stop()


def test_a_307_loop_is_bounded_and_keeps_the_data_queued(agents, upstream, tmp_path):
    upstream.redirect = (307, f"{upstream.url}/v1/traces")
    agent = start_agent(agents, tmp_path, upstream, retry_on_failure={"initial_interval": "1s", "max_interval": "1s",
                                                                       "max_elapsed_time": "0s"})
    send_spans("http", agent.http_port, 10)
    time.sleep(3)
    hops = len(upstream.attempts_of("traces"))
    assert 0 < hops <= 4 * 11 * 4, hops  # a few attempts of at most 11 requests each
    assert queued(agent) == 10
    assert agent.metric("otelcol_exporter_sent_spans", exporter=EXPORTER) == 0
    assert agent.terminate() == 0


# ---- 413 on every signal -------------------------------------------------------------------------

def test_413_on_one_metric_with_many_points_splits_down_to_data_points(agents, upstream, tmp_path):
    upstream.max_items = 3
    agent = start_agent(agents, tmp_path, upstream, *METRICS_PIPELINE)
    send_metrics("http", agent.http_port, points=20)  # one metric, 20 data points
    wait_until(lambda: len(upstream.data_points()) >= 20, timeout=20, message="20 data points upstream")
    assert len(upstream.data_points()) == 20
    calls = upstream.attempts_of("metrics")
    assert all(call.items <= 3 for call in calls if call.status == 200)
    assert len(calls) < 40, len(calls)
    assert agent.metric("otelcol_exporter_sent_metric_points", exporter=EXPORTER) == 20
    assert agent.health()[0] == 200
    assert agent.terminate() == 0


def test_a_single_data_point_still_too_large_is_dead_lettered_and_the_senders_go_on(agents, upstream, tmp_path):
    upstream.max_items = 0  # 413 for everything
    agent = start_agent(agents, tmp_path, upstream, *METRICS_PIPELINE)
    send_metrics("http", agent.http_port, points=8)
    wait_until(lambda: agent.metric("edgeagent_deadletter_items", exporter=EXPORTER, data_type="metrics") == 8,
               timeout=20, message="8 data points dead-lettered")
    assert len(upstream.attempts_of("metrics")) == 2 * 8 - 1  # halving 8 down to 8 single points
    upstream.max_items = None
    sent = send_spans("http", agent.http_port, 10)  # the senders still work
    wait_until(lambda: upstream.span_ids() >= sent, timeout=20, message="spans after the dead letters")
    assert agent.terminate() == 0


# ---- credentials in the endpoint -----------------------------------------------------------------

def test_credentials_in_the_endpoint_are_sent_as_basic_auth_and_never_shown(agents, upstream, tmp_path):
    url = upstream.url.replace("http://", "http://edge:s3cret-in-url@")
    agent = agents(["run", "--config", CONFIG, "--state-dir", str(tmp_path / "state")], env={"UPSTREAM": url})
    sent = send_spans("http", agent.http_port, 10)
    wait_until(lambda: upstream.span_ids() >= sent, timeout=20, message="every span delivered")
    headers = {k.lower(): v for k, v in upstream.received("traces")[0].headers.items()}
    assert headers["authorization"] == "Basic ZWRnZTpzM2NyZXQtaW4tdXJs"  # edge:s3cret-in-url
    assert "s3cret-in-url" not in json.dumps(agent.health()[1])
    assert agent.terminate() == 0


@pytest.mark.parametrize(
    "setting",
    [
        ["--set", "exporters::otlphttp::headers={Authorization: Bearer abc}"],
        [
            "--set",
            "extensions::bearertokenauth={token: abc}",
            "--set",
            "service::extensions=[health_check, bearertokenauth]",
            "--set",
            "exporters::otlphttp::auth={authenticator: bearertokenauth}",
        ],
    ],
    ids=["authorization-header", "auth-extension"],
)
def test_credentials_in_the_endpoint_and_another_authorization_are_a_config_error(tmp_path, setting):
    result = subprocess.run([sys.executable, "-m", "edgeagent", "validate", "--config", CONFIG, *setting],
                            capture_output=True, text=True, timeout=60, check=False,
                            env={**os.environ, "UPSTREAM": "http://edge:pw@127.0.0.1:4318"})
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "exporters::otlphttp::endpoint" in output, output
    assert "pw@" not in output


# ---- secrets echoed by the upstream --------------------------------------------------------------

HEADER_SECRET = "hdr-5ecret-91f0"
TOKEN_SECRET = "tok-5ecret-44aa"
QUERY_SECRET = "qry-5ecret-7c2d"


def test_secrets_echoed_in_error_answers_never_reach_logs_dead_letters_or_status(agents, upstream, tmp_path):
    upstream.status, upstream.echo = 400, True
    agent = start_agent(
        agents, tmp_path, upstream,
        "--set", f"extensions::bearertokenauth={{token: {TOKEN_SECRET}}}",
        "--set", "service::extensions=[health_check, bearertokenauth]",
        "--set", "exporters::otlphttp::auth={authenticator: bearertokenauth}",
        "--set", f"exporters::otlphttp::traces_endpoint={upstream.url}/v1/traces?access_token={QUERY_SECRET}",
        headers={"X-Custom-Key": HEADER_SECRET})
    send_spans("http", agent.http_port, 10)
    wait_until(lambda: agent.metric("edgeagent_deadletter_items", exporter=EXPORTER) == 10, timeout=20,
               message="10 spans dead-lettered")
    letters = json.dumps(cli_json(tmp_path / "state", "queue", "dead-letter", "list"))
    status = cli(tmp_path / "state", "status").stdout.decode()
    health = json.dumps(agent.health()[1])
    agent.terminate()
    with open(agent.log_path, encoding="utf-8") as handle:
        logged = handle.read()
    for where, text in (("dead letters", letters), ("status", status), ("health", health), ("log", logged)):
        for secret in (HEADER_SECRET, TOKEN_SECRET, QUERY_SECRET):
            assert secret not in text, f"{secret} in {where}"
    assert "refused by test upstream" in letters  # the rest of the answer is kept


# ---- no sender dies ------------------------------------------------------------------------------

def test_an_unexpected_error_in_a_sender_is_logged_once_counted_and_the_data_stays_queued(
        agents, upstream, tmp_path):
    # a header name no request can carry passes validation (otelcol's own example config has one)
    # but fails in the HTTP client
    agent = start_agent(agents, tmp_path, upstream, headers={"X Bad:": "one"})
    send_spans("http", agent.http_port, 10)
    wait_until(lambda: agent.metric("edgeagent_exporter_unexpected_errors", exporter=EXPORTER) >= 3, timeout=20,
               message="three unexpected errors: the consumers went on")
    assert queued(agent) == 10
    details = agent.health()[1]
    assert details["failures"] == {}, "a consumer stopped"
    assert details["exporters"][EXPORTER].get("problem"), details
    errors = [e for e in log_entries(agent) if e["level"] == "error"]
    assert len(errors) == 1, errors
    assert agent.terminate() == 0
