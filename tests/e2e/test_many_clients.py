"""More clients than the open-file soft limit the agent was started with: it serves them, as otelcol does."""

from __future__ import annotations

import resource
import socket
import sys
import time

from tests.e2e.test_hostile_input import post, spans
from tests.helpers.agent import AgentProcess
from tests.helpers.net import free_port

SOFT_LIMIT = 128


def _soft_limit(pid: int) -> int:
    with open(f"/proc/{pid}/limits") as limits:
        line = next(line for line in limits if line.startswith("Max open files"))
    return int(line.split()[3])


def test_an_agent_started_with_a_low_soft_limit_on_open_files_serves_more_clients_than_it(tmp_path):
    """A shell, a container or a unit without LimitNOFILE starts the agent with a soft limit of
    1,024 descriptors under a far higher hard one: past about a thousand connections the receivers
    stopped accepting, where otelcol serves on (Go raises its soft limit to the hard one at start)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert hard == resource.RLIM_INFINITY or hard > 4 * SOFT_LIMIT, "the test needs a hard limit above the soft one"
    launcher = ["sh", "-c", f'ulimit -S -n {SOFT_LIMIT} && exec "$0" -m edgeagent "$@"', sys.executable]
    agent = AgentProcess(args=["run", "--state-dir", str(tmp_path / "state"),
                               "--upstream", f"http://127.0.0.1:{free_port()}"],
                         command=launcher, log_path=str(tmp_path / "agent.log"))
    agent.args += agent.ports_overrides()
    clients: list[socket.socket] = []
    try:
        agent.start()
        assert agent.process is not None
        for _ in range(2 * SOFT_LIMIT):  # idle connections, each holding one of the agent's descriptors
            clients.append(socket.create_connection(("127.0.0.1", agent.http_port), timeout=5))
        time.sleep(0.5)  # accepted by now
        assert post(agent.http_port, spans(3)) == 200
        assert _soft_limit(agent.process.pid) > SOFT_LIMIT
    finally:
        for client in clients:
            client.close()
        agent.kill()
