"""Run the real `edgeagent` process for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field

from tests.helpers.net import free_port


@dataclass
class AgentProcess:
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    log_path: str = ""
    # a descriptor the agent's stdout and stderr go to instead of the log file (a pipe, /dev/full)
    output: int | None = None
    grpc_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    health_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    # how to launch the agent: an installed `edgeagent` script instead, to test a built package
    command: list[str] = field(default_factory=lambda: [sys.executable, "-m", "edgeagent"])
    # what `start` waits for: /health/live for an agent that starts with a failed component (not ready)
    ready_path: str = "/health/ready"

    def ports_overrides(self, receiver: str = "otlp", health: str = "health_check") -> list[str]:
        """--set flags that move every listener of a config to free loopback ports."""
        return [
            "--set", f"receivers::{receiver}::protocols::grpc::endpoint=127.0.0.1:{self.grpc_port}",
            "--set", f"receivers::{receiver}::protocols::http::endpoint=127.0.0.1:{self.http_port}",
            "--set", f"extensions::{health}::endpoint=127.0.0.1:{self.health_port}",
            "--set", "service::telemetry::metrics::readers=[{pull: {exporter: {prometheus: "
                     f"{{host: 127.0.0.1, port: {self.metrics_port}}}}}}}}}]",
        ]

    def start(self, wait: float = 30.0) -> AgentProcess:
        self.launch()
        assert self.process is not None
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"agent exited with {self.process.returncode}:\n{self.log()}")
            if self.health(self.ready_path)[0] == 200:
                return self
            if self._readiness is not None and not self._readiness.ready:
                self._readiness.wait(min(0.5, max(0.0, deadline - time.monotonic())))
            else:
                time.sleep(0.05)
        raise RuntimeError(f"agent not ready after {wait}s:\n{self.log()}")

    def launch(self) -> subprocess.Popen:
        """Start the process and return at once (`start` then waits until it is ready)."""
        env = {**os.environ, **self.env}
        env.pop("EDGEAGENT_UPSTREAM", None) if "EDGEAGENT_UPSTREAM" not in self.env else None
        # the agent says READY=1 over sd_notify once its receivers are up: wait for that, not a poll
        # (unless the test listens on NOTIFY_SOCKET itself)
        self._readiness = None if "NOTIFY_SOCKET" in self.env else Readiness()
        if self._readiness is not None:
            env["NOTIFY_SOCKET"] = self._readiness.address
        self._log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        output = self._log if self.output is None else self.output
        self.process = subprocess.Popen([*self.command, *self.args], env=env,
                                        stdout=output, stderr=output, stdin=subprocess.DEVNULL)
        return self.process

    def log(self) -> str:
        if not self.log_path:
            return ""
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()[-6000:]

    def health(self, path: str = "/health") -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}{path}", timeout=2) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")
        except (OSError, ValueError):
            return 0, {}

    def metrics(self) -> dict[str, float]:
        """Every sample of /metrics as {'name{labels}': value}."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels`."""
        total = 0.0
        for key, value in self.metrics().items():
            base, _, rest = key.partition("{")
            if base == name and all(f'{k}="{v}"' in rest for k, v in labels.items()):
                total += value
        return total

    def terminate(self, timeout: float = 15.0) -> int:
        if self.process is None:
            return 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            self._close()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self._close()

    def _close(self) -> None:
        if self.log_path and hasattr(self, "_log") and not self._log.closed:
            self._log.close()
        if getattr(self, "_readiness", None) is not None:
            self._readiness.close()


class Readiness:
    """The sd_notify socket an agent is started with, in the abstract namespace (no file to remove).

    It stays open while the agent runs, so its STOPPING=1 at shutdown finds a listener."""

    def __init__(self) -> None:
        self.address = f"@edgeagent-tests-{uuid.uuid4().hex}"
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._socket.bind("\0" + self.address[1:])
        self.ready = False

    def wait(self, timeout: float) -> None:
        """Until READY=1 arrives or `timeout` passes."""
        self._socket.settimeout(timeout)
        try:
            while not self.ready:
                self.ready = b"READY=1" in self._socket.recv(4096).split(b"\n")
        except (TimeoutError, OSError):
            return

    def close(self) -> None:
        self._socket.close()
