"""The rotel collector (PyPI package `rotel`, binary `rotel-agent`) as a peer on loopback."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers.net import free_port


def rotel_binary() -> str | None:
    """The rotel-agent shipped in the installed `rotel` package, else one on PATH, else None."""
    try:
        import rotel
    except ImportError:
        return shutil.which("rotel-agent")
    candidate = Path(rotel.__file__).parent / "rotel-agent"
    return str(candidate) if candidate.is_file() else shutil.which("rotel-agent")


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class Rotel:
    """rotel receiving OTLP on free loopback ports and exporting as `exporter_args` say."""

    workdir: Path
    exporter_args: list[str]
    grpc_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @classmethod
    def forwarding_to(cls, workdir: Path, url: str) -> Rotel:
        """rotel that forwards everything over OTLP/HTTP to `url` (an `Upstream`), without batching delays."""
        return cls(workdir, ["--exporter", "otlp", "--otlp-exporter-endpoint", url,
                             "--otlp-exporter-protocol", "http", "--batch-timeout", "50ms"])

    def start(self, wait: float = 20.0) -> Rotel:
        binary = rotel_binary()
        if binary is None:
            raise RuntimeError("rotel-agent not found: install the `rotel` package")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.workdir / "rotel.log", "ab")
        self.process = subprocess.Popen(
            [binary, "start", "--otlp-grpc-endpoint", f"127.0.0.1:{self.grpc_port}",
             "--otlp-http-endpoint", f"127.0.0.1:{self.http_port}", "--otlp-grpc-max-recv-msg-size-mib", "64",
             "--pid-file", str(self.workdir / "rotel.pid"), "--log-file", str(self.workdir / "rotel-daemon.log"),
             *self.exporter_args],
            stdout=self._log, stderr=self._log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"rotel exited with {self.process.returncode}:\n{self.log()}")
            if _accepts(self.grpc_port) and _accepts(self.http_port):
                return self
            time.sleep(0.1)
        raise RuntimeError(f"rotel not listening after {wait}s:\n{self.log()}")

    def log(self) -> str:
        path = self.workdir / "rotel.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if hasattr(self, "_log"):
            self._log.close()
