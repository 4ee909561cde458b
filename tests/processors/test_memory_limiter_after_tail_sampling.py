"""A memory_limiter listed after tail_sampling: it refuses new data at the receivers, politely, and
never the traces the stage keeps, which were answered OK and must be delivered."""

from __future__ import annotations

from typing import Any

import yaml

from tests.helpers.hostile import spans_request
from tests.helpers.net import free_port, wait_until
from tests.helpers.otlp_post import post
from tests.helpers.upstream import Upstream

SPANS = 3


def _agent(agents: Any, tmp_path: Any, upstream: Upstream, limit_mib: int) -> Any:
    config = {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": "127.0.0.1:0"}}}},
        "processors": {"memory_limiter": {"check_interval": "100ms", "limit_mib": limit_mib},
                       "tail_sampling": {"decision_wait": "200ms", "policies": [{"name": "all",
                                                                                 "type": "always_sample"}]}},
        "exporters": {"otlp_http": {"endpoint": upstream.url}},
        "extensions": {"health_check": {}},
        "service": {"extensions": ["health_check"],
                    "pipelines": {"traces": {"receivers": ["otlp"], "processors": ["tail_sampling", "memory_limiter"],
                                             "exporters": ["otlp_http"]}}},
    }
    path = tmp_path / f"agent-{limit_mib}.yaml"
    path.write_text(yaml.safe_dump(config))
    return agents(["run", "--config", str(path), "--state-dir", str(tmp_path / f"state-{limit_mib}")])


def test_while_it_refuses_new_data_is_refused_retryably_and_nothing_is_dead_lettered(agents, tmp_path):
    upstream = Upstream(free_port()).start()
    try:
        agent = _agent(agents, tmp_path, upstream, limit_mib=1)  # below what the agent uses: it always refuses
        wait_until(lambda: agent.metric("edgeagent_memory_limiter_refusing") == 1, timeout=20, message="refusing")
        status, headers = post(agent.http_port, spans_request(SPANS))
        assert (status, bool(headers.get("Retry-After"))) == (503, True)
        wait_until(lambda: agent.health("/")[1].get("uptime") is not None, timeout=5, message="health")
        assert agent.health("/")[1]["dead_letters"] == 0
        assert upstream.spans() == []
    finally:
        upstream.stop()


def test_with_memory_to_spare_kept_traces_pass_it_and_are_delivered(agents, tmp_path):
    upstream = Upstream(free_port()).start()
    try:
        agent = _agent(agents, tmp_path, upstream, limit_mib=4000)
        assert post(agent.http_port, spans_request(SPANS))[0] == 200
        wait_until(lambda: len(upstream.spans()) == SPANS, timeout=20, message="the kept traces upstream")
        assert agent.health("/")[1]["dead_letters"] == 0
    finally:
        upstream.stop()
