"""A real `redis-server` on a free loopback port, without persistence, for tests."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field

import redis

from tests.helpers.net import free_port


@dataclass
class RedisServer:
    directory: str
    port: int = field(default_factory=free_port)
    args: list[str] = field(default_factory=list)  # e.g. ["--requirepass", "secret"]
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self, wait: float = 10.0) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (Debian package redis-server); .ci/run installs it")
        self._log = open(f"{self.directory}/redis-{self.port}.log", "ab")
        self.process = subprocess.Popen(
            [binary, "--save", "", "--appendonly", "no", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", self.directory, *self.args],
            stdout=self._log, stderr=self._log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            if self._answers():
                return self
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"redis-server not answering on port {self.port} after {wait}s")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                reply = sock.recv(64)
        except OSError:
            return False
        return reply.startswith((b"+PONG", b"-NOAUTH", b"-LOADING"))  # loading: up, not ready

    def kill(self) -> None:
        """SIGKILL by PID: Redis vanishes as in a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        if hasattr(self, "_log") and not self._log.closed:
            self._log.close()

    def client(self, password: str | None = None) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=password, socket_timeout=5)

    def calls(self, command: str, password: str | None = None) -> int:
        """How many times Redis ran `command` (INFO commandstats)."""
        with self.client(password) as client:
            return int(client.info("commandstats").get(f"cmdstat_{command.lower()}", {}).get("calls", 0))
