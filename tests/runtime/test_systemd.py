"""sd_notify: a notification never blocks the agent, whoever holds the socket."""

from __future__ import annotations

import socket
import threading
import time

from edgeagent.runtime.systemd import notify


def test_notifications_to_a_socket_nobody_reads_never_block(tmp_path) -> None:
    """A datagram socket's queue holds about ten messages: a blocking send then waited for good, on
    the event loop (a reader that stopped reading stopped the whole agent)."""
    address = str(tmp_path / "notify")
    deaf = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    deaf.bind(address)
    answers: list[bool] = []

    def send_many() -> None:
        for _ in range(100):
            answers.append(notify("WATCHDOG=1", {"NOTIFY_SOCKET": address}))

    sender = threading.Thread(target=send_many, daemon=True)
    started = time.monotonic()
    sender.start()
    sender.join(5)
    blocked = sender.is_alive()
    deaf.close()  # lets a blocked send fail, so the thread ends
    sender.join(5)
    assert not blocked and time.monotonic() - started < 5
    assert answers[0] is True and answers[-1] is False and len(answers) == 100
