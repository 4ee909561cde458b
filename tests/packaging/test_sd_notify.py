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
