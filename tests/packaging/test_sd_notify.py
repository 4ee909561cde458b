"""Under systemd (Type=notify) the agent says READY=1, pings the watchdog and says STOPPING=1."""

from __future__ import annotations

import socket
import time

from tests.helpers.sdk import send_spans


def test_ready_watchdog_and_stopping_reach_the_notify_socket(agents, tmp_path):
    path = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.settimeout(0.2)
    messages: list[str] = []

    def collect(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                messages.append(listener.recv(4096).decode())
            except TimeoutError:
                pass

    try:
        agent = agents(["run", "--state-dir", str(tmp_path / "state")],
                       env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
        send_spans("http", agent.http_port, 10)
        collect(1.5)
        assert agent.terminate() == 0
        collect(0.5)
    finally:
        listener.close()

    assert messages[0].startswith("READY=1")
    assert sum(message == "WATCHDOG=1" for message in messages) >= 4  # every 0.2 s for 1.5 s
    assert messages[-1].startswith("STOPPING=1")


def test_a_drain_longer_than_the_units_stop_timeout_extends_it(agents, tmp_path):
    """With EDGEAGENT_DRAIN_TIMEOUT (or --drain-timeout) above the unit's TimeoutStopSec (20 s), systemd
    killed the agent in the middle of its drain: the drain must tell systemd how long it may take."""
    path = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.settimeout(0.2)
    messages: list[str] = []
    try:
        agent = agents(["run", "--state-dir", str(tmp_path / "state"), "--drain-timeout", "45"],
                       env={"NOTIFY_SOCKET": path})
        assert agent.terminate() == 0
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            try:
                messages.append(listener.recv(4096).decode())
            except TimeoutError:
                pass
    finally:
        listener.close()
    extended = [line for message in messages for line in message.splitlines()
                if line.startswith("EXTEND_TIMEOUT_USEC=")]
    assert extended, messages
    assert int(extended[0].split("=", 1)[1]) >= 45_000_000


def test_a_sighup_while_draining_does_not_tell_systemd_the_agent_is_ready_again(agents, tmp_path):
    """A SIGHUP during the drain (refused: the agent is stopping) still sent RELOADING=1, then READY=1
    with "receivers up, queue open", which `systemctl status` showed for a process on its way out."""
    import os
    import signal

    path = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.settimeout(0.2)
    messages: list[str] = []

    def collect(until) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not until():
            try:
                messages.append(listener.recv(4096).decode())
            except TimeoutError:
                pass

    try:
        agent = agents(["run", "--state-dir", str(tmp_path / "state"), "--drain-timeout", "3",
                        "--upstream", "http://127.0.0.1:9"], env={"NOTIFY_SOCKET": path})
        send_spans("http", agent.http_port, 10)  # queued: the upstream refuses connections
        os.kill(agent.process.pid, signal.SIGTERM)
        collect(lambda: any("EXTEND_TIMEOUT_USEC=" in message for message in messages))
        os.kill(agent.process.pid, signal.SIGHUP)
        assert agent.process.wait(timeout=20) == 0
        collect(lambda: any(message.startswith("STOPPING=1") for message in messages))
    finally:
        listener.close()
    draining = next(index for index, message in enumerate(messages) if "EXTEND_TIMEOUT_USEC=" in message)
    assert "config reload refused: the agent is stopping" in agent.log()
    assert not [message for message in messages[draining:] if "READY=1" in message or "RELOADING=1" in message], \
        messages[draining:]
