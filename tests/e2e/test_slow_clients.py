"""Slow and lying HTTP clients: they hold only what they sent, and otelcol's read timeouts end them."""

from __future__ import annotations

import socket
import time

import pytest

from tests.e2e.test_hostile_input import post, spans
from tests.helpers.net import free_port, wait_until


def _open(port: int, head: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(head)
    return sock


def _declares(size: int) -> bytes:
    return (f"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            f"Content-Length: {size}\r\n\r\n").encode() + b"\x0a"


def _closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Whether the agent answered and/or closed the connection within `seconds`."""
    sock.settimeout(seconds)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
        return True, received
    except TimeoutError:
        return False, received
    except ConnectionResetError:
        return True, received


@pytest.fixture
def start(agents, tmp_path):
    def run(*settings: str):
        args = ["run", "--state-dir", str(tmp_path / "state"), "--upstream", f"http://127.0.0.1:{free_port()}"]
        for setting in settings:
            args += ["--set", setting]
        return agents(args)
    return run


def test_slow_clients_declaring_large_bodies_do_not_make_everyone_else_get_503(start):
    agent = start()  # default limits: 20 MiB bodies, memory_limiter 512 MiB
    slow = [_open(agent.http_port, _declares(20 << 20)) for _ in range(6)]
    try:
        time.sleep(0.5)
        held = agent.health()[1]["memory_limiter"]["memory_limiter"]["in_flight_mib"]
        statuses = [post(agent.http_port, spans(10)) for _ in range(5)]
    finally:
        for sock in slow:
            sock.close()
    assert held < 1, f"{held} MiB of the memory budget held for 6 bytes received"
    assert statuses == [200] * 5


def test_read_timeout_ends_a_body_that_never_completes(start):
    agent = start("receivers::otlp::protocols::http::read_timeout=1s")
    sock = _open(agent.http_port, _declares(1000))
    began = time.monotonic()
    try:
        sock.settimeout(10)
        answer = sock.recv(65536)
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
    assert time.monotonic() - began < 5
    assert post(agent.http_port, spans(1)) == 200


def test_read_header_timeout_ends_headers_that_never_complete(start):
    agent = start("receivers::otlp::protocols::http::read_header_timeout=1s")
    sock = _open(agent.http_port, b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n")
    began = time.monotonic()
    try:
        closed, _ = _closed_within(sock, 10)
    finally:
        sock.close()
    assert closed and time.monotonic() - began < 5


@pytest.mark.parametrize("size", [10, 200])
def test_http_1_0_without_content_length_gets_a_4xx_answer(start, size):
    agent = start()
    sock = _open(agent.http_port, b"POST /v1/traces HTTP/1.0\r\nContent-Type: application/x-protobuf\r\n\r\n")
    try:
        time.sleep(0.2)
        try:
            sock.sendall(spans(size * 10) * 20)
        except OSError:
            pass  # answered and closed already
        closed, answer = _closed_within(sock, 10)
    finally:
        sock.close()
    assert closed
    assert answer[:12] in (b"HTTP/1.0 411", b"HTTP/1.1 411"), answer[:80]


def test_clients_that_disconnect_mid_body_are_counted_and_logged_once_without_tracebacks(start):
    agent = start()
    for _ in range(5):
        sock = _open(agent.http_port, _declares(100_000))
        time.sleep(0.1)
        sock.close()
    wait_until(lambda: agent.metric("edgeagent_receiver_client_disconnects") == 5, timeout=10,
               message="five disconnects counted")
    log = agent.log()
    assert log.count("clients disconnect before their requests complete") == 1
    assert "Traceback" not in log


def test_the_metrics_endpoint_ends_headers_that_never_complete(start):
    """The Prometheus endpoint has otelcol's timeouts (its server: ReadTimeout 5 s, WriteTimeout
    10 s): a client trickling a head or holding a connection idle does not keep it for ever."""
    agent = start()
    sock = _open(agent.metrics_port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    began = time.monotonic()
    try:
        closed, _ = _closed_within(sock, 15)
    finally:
        sock.close()
    assert closed and time.monotonic() - began < 8
