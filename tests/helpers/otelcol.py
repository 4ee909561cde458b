"""A real otelcol-contrib v0.165.0, the reference peer of the interoperability tests and benchmarks.

The binary is built on first use with the OpenTelemetry Collector Builder from a manifest written
here at run time, and cached outside the repository under
`$EDGEAGENT_OTELCOL_CACHE` (default `$XDG_CACHE_HOME/edgeagent-otelcol`, i.e. `~/.cache/edgeagent-otelcol`)
as `otelcol-contrib-<version>-<manifest hash>/otelcol-contrib`. A file lock makes parallel test
workers build it once; the others wait and use it. Building needs Go; without it the tests that
need otelcol are skipped (in CI, where `CI` is set, they fail instead: .ci/run provides Go).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.net import free_port

VERSION = "0.165.0"
CORE = "go.opentelemetry.io/collector"
CONTRIB = "github.com/open-telemetry/opentelemetry-collector-contrib"
# The components the tests and benchmarks configure, each at the release's version. (The file
# exporter is left out: a test dependency of it is not published for this release.)
COMPONENTS: dict[str, list[str]] = {
    "receivers": [f"{CORE}/receiver/otlpreceiver", f"{CONTRIB}/receiver/kafkareceiver"],
    "exporters": [f"{CORE}/exporter/otlpexporter", f"{CORE}/exporter/otlphttpexporter",
                  f"{CORE}/exporter/debugexporter", f"{CORE}/exporter/nopexporter",
                  f"{CONTRIB}/exporter/kafkaexporter"],
    "processors": [f"{CORE}/processor/batchprocessor", f"{CORE}/processor/memorylimiterprocessor",
                   f"{CONTRIB}/processor/attributesprocessor", f"{CONTRIB}/processor/resourceprocessor",
                   f"{CONTRIB}/processor/filterprocessor", f"{CONTRIB}/processor/tailsamplingprocessor"],
    "extensions": [f"{CONTRIB}/extension/storage/filestorage", f"{CONTRIB}/extension/healthcheckextension"],
}
BUILD_TIMEOUT_S = 1800  # a cold build downloads a few hundred modules and compiles them


class OtelcolUnavailable(RuntimeError):
    """The binary cannot be built here (no Go, or the build failed); the caller skips or fails."""


def manifest() -> str:
    """The builder manifest; its hash names the cached binary, so a changed component list rebuilds."""
    lines = ["dist:", "  name: otelcol-contrib", f"  description: otelcol-contrib {VERSION} for edgeagent tests",
             "  output_path: ./out"]
    for kind, modules in COMPONENTS.items():
        lines.append(f"{kind}:")
        lines += [f"  - gomod: {module} v{VERSION}" for module in modules]
    return "\n".join(lines) + "\n"


def cache_dir() -> Path:
    configured = os.environ.get("EDGEAGENT_OTELCOL_CACHE")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgeagent-otelcol"


def binary_path() -> Path:
    digest = hashlib.sha256(manifest().encode()).hexdigest()[:12]
    return cache_dir() / f"otelcol-contrib-{VERSION}-{digest}" / "otelcol-contrib"


def build(progress: Callable[[str], None] = lambda line: None) -> Path:
    """The cached binary, built first if missing; concurrent callers wait for one build."""
    target = binary_path()
    if target.exists():
        return target
    go = shutil.which("go")
    if go is None:
        raise OtelcolUnavailable("otelcol is built with Go, and `go` is not on PATH (install Go 1.25 or newer)")
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes; another worker may have built it meanwhile
        if not target.exists():
            _build(go, cache, target, progress)
    return target


def _build(go: str, cache: Path, target: Path, progress: Callable[[str], None]) -> None:
    started = time.monotonic()
    builder = cache / f"builder-v{VERSION}" / "builder"
    if not builder.exists():
        progress(f"installing the collector builder v{VERSION}")
        _run([go, "install", f"{CORE}/cmd/builder@v{VERSION}"], cwd=cache,
             env={"GOBIN": str(builder.parent)})
    work = target.parent.with_name(target.parent.name + ".building")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    (work / "manifest.yaml").write_text(manifest())
    progress(f"building otelcol-contrib {VERSION} (several minutes the first time)")
    _run([str(builder), "--config", "manifest.yaml"], cwd=work, env={})
    target.parent.mkdir(exist_ok=True)
    os.replace(work / "out" / "otelcol-contrib", target)  # whole or absent: never a half-written binary
    (target.parent / "manifest.yaml").write_text(manifest())
    shutil.rmtree(work, ignore_errors=True)
    progress(f"built {target.name} in {time.monotonic() - started:.0f}s")


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> None:
    result = subprocess.run(command, cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True,
                            timeout=BUILD_TIMEOUT_S, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise OtelcolUnavailable(f"{' '.join(command[:2])} exited {result.returncode}:\n{result.stderr[-4000:]}")


@dataclass
class Otelcol:
    """One otelcol process on loopback: health check and internal metrics on free ports of its own."""

    binary: Path
    config: dict[str, Any]
    directory: Path
    health_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    def start(self, wait: float = 30.0) -> Otelcol:
        path = self.directory / "otelcol.yaml"
        path.write_text(yaml.safe_dump(self._with_health_and_telemetry(), sort_keys=False))
        self._log = open(self.directory / "otelcol.log", "ab")
        self.process = subprocess.Popen([str(self.binary), "--config", str(path)], stdout=self._log,
                                        stderr=self._log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"otelcol exited with {self.process.returncode}:\n{self.log()}")
            if self._ready():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"otelcol not ready after {wait}s:\n{self.log()}")

    def _with_health_and_telemetry(self) -> dict[str, Any]:
        """The test's config plus a health check to wait on and metrics on a free port, not :8888."""
        config = yaml.safe_load(yaml.safe_dump(self.config))
        config.setdefault("extensions", {})["health_check"] = {"endpoint": f"127.0.0.1:{self.health_port}"}
        service = config.setdefault("service", {})
        service["extensions"] = [*service.get("extensions", []), "health_check"]
        reader = {"pull": {"exporter": {"prometheus": {"host": "127.0.0.1", "port": self.metrics_port}}}}
        service.setdefault("telemetry", {}).setdefault("metrics", {"readers": [reader]})
        return config

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/", timeout=2) as response:
                return response.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` (otelcol's own metrics) whose labels include `labels`."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith("#") or not line:
                continue
            key, _, value = line.rpartition(" ")
            base, _, rest = key.partition("{")
            if base == name and all(f'{k}="{v}"' in rest for k, v in labels.items()):
                total += float(value)
        return total

    def log(self) -> str:
        with open(self.directory / "otelcol.log", encoding="utf-8", errors="replace") as handle:
            return handle.read()[-6000:]

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM by PID (otelcol flushes and shuts down), SIGKILL if it does not within `timeout`."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.send_signal(signal.SIGKILL)
                self.process.wait(10)
        if hasattr(self, "_log"):
            self._log.close()


@pytest.fixture(scope="session")
def otelcol_binary() -> Path:
    try:
        return build()
    except OtelcolUnavailable as error:
        if os.environ.get("CI"):
            pytest.fail(f"otelcol is needed in CI: {error}")
        pytest.skip(str(error))


@pytest.fixture
def otelcol(otelcol_binary: Path, tmp_path: Path) -> Iterator[Callable[[dict[str, Any] | str], Otelcol]]:
    """Start otelcol with `otelcol(config)`: its YAML, as text or as the dict it parses to, listening on
    loopback ports the test chose; every one started is stopped by its PID at the end."""
    started: list[Otelcol] = []

    def start(config: dict[str, Any] | str) -> Otelcol:
        directory = tmp_path / f"otelcol-{len(started)}"
        directory.mkdir()
        collector = Otelcol(otelcol_binary, yaml.safe_load(config) if isinstance(config, str) else config, directory)
        started.append(collector)
        return collector.start()

    yield start
    for collector in started:
        collector.stop()
