"""The agent's stdout and stderr stop taking writes: a log driver or journald gone (a pipe whose reader
has closed: EPIPE, or one that stays open and reads no more, so that writes block once the pipe
is full) or a full disk under the file they go to (ENOSPC). The agent keeps answering, keeping
and delivering what it took, spends no CPU on the failing writes, reloads, and its stop still
keeps what is queued and exits 0."""

from __future__ import annotations

import fcntl
import os
import signal
import struct
import termios
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers.agent import AgentProcess
from tests.helpers.net import free_port, wait_until
from tests.helpers.otlp_post import post
from tests.helpers.sdk import send_spans
from tests.helpers.upstream import Upstream

# every line the agent can write: its own log at debug, and a debug exporter's full text on stdout
# (use_internal_logger: false, as a sidecar that prints what passes through)
CONFIG = """
receivers:
  otlp:
    protocols:
      grpc:
      http:
exporters:
  otlphttp:
    endpoint: ${env:UPSTREAM}
    retry_on_failure: {initial_interval: 100ms, max_interval: 500ms}
    sending_queue: {storage: file_storage}
  debug:
    verbosity: detailed
    use_internal_logger: false
    output_paths: [stdout]
extensions:
  health_check:
  file_storage:
    directory: ${env:QUEUE}
service:
  extensions: [health_check, file_storage]
  telemetry:
    logs: {level: debug}
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlphttp, debug]
"""


@contextmanager
def _gone_pipe() -> Iterator[tuple[int, object]]:
    """A pipe's writing end; its reader closes once the agent is up (the second item, called)."""
    reader, writer = os.pipe()
    try:
        yield writer, lambda: os.close(reader)
    finally:
        for descriptor in (reader, writer):
            try:
                os.close(descriptor)
            except OSError:
                pass


@contextmanager
def _stalled_pipe() -> Iterator[tuple[int, object]]:
    """A pipe whose reader stays, reading nothing: once its 64 kB are full, every write waits."""
    reader, writer = os.pipe()
    try:
        yield writer, lambda: None
    finally:
        os.close(reader)
        os.close(writer)


@contextmanager
def _full_disk() -> Iterator[tuple[int, object]]:
    descriptor = os.open("/dev/full", os.O_WRONLY)
    try:
        yield descriptor, lambda: None
    finally:
        os.close(descriptor)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _agent(tmp_path: Path, upstream_port: int, output: int | None) -> AgentProcess:
    config = tmp_path / "agent.yaml"
    config.write_text(CONFIG)
    agent = AgentProcess(args=["run", "--config", str(config)], output=output,
                         log_path=str(tmp_path / "agent.log"),
                         env={"UPSTREAM": f"http://127.0.0.1:{upstream_port}", "QUEUE": str(tmp_path / "queue"),
                              "STATE_DIRECTORY": str(tmp_path / "state")})
    agent.args += agent.ports_overrides()
    return agent


@pytest.mark.parametrize("stream", [_gone_pipe, _stalled_pipe, _full_disk], ids=["reader-gone", "reader-stalled",
                                                                                  "disk-full"])
def test_an_agent_whose_log_stream_fails_keeps_serving_delivering_and_stops_cleanly(tmp_path, stream):
    port = free_port()
    with stream() as (output, reader_leaves):
        agent = _agent(tmp_path, port, output)
        try:
            agent.start()
            reader_leaves()
            # upstream down: every request logged at debug, every retry logged, every span printed
            sent = send_spans("http", agent.http_port, 200, batch=20, must_deliver=True)
            sent |= send_spans("grpc", agent.grpc_port, 200, batch=20, must_deliver=True)
            for _ in range(20):
                assert post(agent.http_port, b"\x0a\x05broken")[0] == 400
            agent.process.send_signal(signal.SIGHUP)
            before = _cpu_seconds(agent.process.pid)
            wait_until(lambda: agent.metric("otelcol_exporter_send_failed_spans") > 0, timeout=10,
                       message="sends failing while the upstream is down")
            assert agent.process.poll() is None
            upstream = Upstream(port).start()
            try:
                wait_until(lambda: upstream.span_ids() >= sent, timeout=30, message="every span delivered")
            finally:
                upstream.stop()
            kept = send_spans("http", agent.http_port, 50, batch=10, must_deliver=True)
            used = _cpu_seconds(agent.process.pid) - before
            assert agent.terminate() == 0
        finally:
            agent.kill()
    # the stop kept what the upstream did not take: a second run (logging to a file) delivers it
    upstream = Upstream(port).start()
    again = _agent(tmp_path, port, None)
    try:
        again.start()
        wait_until(lambda: upstream.span_ids() >= kept, timeout=30, message="the queued spans delivered after restart")
        assert again.terminate() == 0
    finally:
        again.kill()
        upstream.stop()
    assert used < 10, f"{used:.1f}s of CPU while the log stream was failing"


def _unread(reader: int) -> int:
    """Bytes waiting in a pipe."""
    return struct.unpack("i", fcntl.ioctl(reader, termios.FIONREAD, b"\0\0\0\0"))[0]


def test_an_agent_printing_its_metrics_to_a_stalled_stdout_still_stops(tmp_path):
    # the console reader wrote on a worker thread, which the full pipe held for good, and the stop
    # waited for that thread: SIGTERM never ended the agent
    port = free_port()
    reader, writer = os.pipe()
    try:
        agent = _agent(tmp_path, port, writer)
        # the agent's own metrics also printed on stdout ten times a second, as OTLP/JSON lines
        pull = "{pull: {exporter: {prometheus: {host: 127.0.0.1, port: %s}}}}".replace("%s", str(agent.metrics_port))
        console = "{periodic: {interval: 100, exporter: {console: {}}}}"
        agent.args += ["--set", f"service::telemetry::metrics::readers=[{pull}, {console}]"]
        try:
            agent.start()
            sent = send_spans("http", agent.http_port, 100, batch=20, must_deliver=True)
            wait_until(lambda: _unread(reader) > 48_000, timeout=10, message="the pipe all but full")
            time.sleep(0.5)  # five more pushes, more than the pipe has room for
            upstream = Upstream(port).start()
            try:
                wait_until(lambda: upstream.span_ids() >= sent, timeout=30, message="every span delivered")
            finally:
                upstream.stop()
            assert agent.terminate() == 0
        finally:
            agent.kill()
    finally:
        os.close(reader)
        os.close(writer)
