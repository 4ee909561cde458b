"""SIGHUP and `edgeagent reload`: a new config applies without a restart, an invalid one changes nothing."""

from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.helpers.agent import AgentProcess
from tests.helpers.net import free_port, wait_until
from tests.helpers.otlp_post import post

CONFIG = """
receivers:
  otlp:
    protocols:
      http:
processors:
  attributes/mark:
    actions:
      - {key: config, value: second, action: upsert}
exporters:
  otlphttp:
    endpoint: ${env:UPSTREAM}
    retry_on_failure:
      initial_interval: 100ms
extensions:
  health_check:
service:
  extensions: [health_check]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [%s]
      exporters: [otlphttp]
"""


def _request(number: int) -> bytes:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add(name="reload")
    span.span_id = number.to_bytes(8, "big")
    span.trace_id = number.to_bytes(16, "big")
    return request.SerializeToString()


def _post(port: int, body: bytes) -> int:
    status, _ = post(port, body)
    return status


def _reloads(agent, result: str) -> float:
    return agent.metric("edgeagent_config_reloads", result=result)


def test_reload_under_load_loses_and_repeats_nothing_and_keeps_the_port(agents, upstream, tmp_path):
    config = tmp_path / "agent.yaml"
    config.write_text(CONFIG % "")
    agent = agents(["run", "--config", str(config), "--state-dir", str(tmp_path / "state")],
                   env={"UPSTREAM": upstream.url})
    total, statuses = 400, []

    def send() -> None:
        for number in range(1, total + 1):
            statuses.append(_post(agent.http_port, _request(number)))

    sender = threading.Thread(target=send)
    sender.start()
    for applied, processors in ((1, "attributes/mark"), (2, "")):
        wait_until(lambda: len(statuses) >= applied * 120,  # noqa: B023 (waited on in this iteration)
                   timeout=30, message="requests before the reload")
        config.write_text(CONFIG % processors)
        os.kill(agent.process.pid, signal.SIGHUP)
        wait_until(lambda: _reloads(agent, "applied") == applied,  # noqa: B023 (waited on in this iteration)
                   timeout=15, message=f"reload {applied} applied")
    sender.join(60)
    assert statuses == [200] * total  # the receiver kept its port: no client saw a refusal
    wait_until(lambda: len(upstream.spans()) >= total, timeout=30, message="every span delivered")
    counts = collections.Counter(span.span_id for span in upstream.spans())
    assert len(counts) == total and max(counts.values()) == 1  # nothing lost, nothing sent twice
    marked = [s for s in upstream.spans() if any(a.key == "config" for a in s.attributes)]
    assert 0 < len(marked) < total  # the second config ran between the two reloads
    assert agent.health()[1]["healthy"] is True


def test_an_invalid_config_on_reload_keeps_the_running_one(agents, upstream, tmp_path):
    config = tmp_path / "agent.yaml"
    config.write_text(CONFIG % "")
    agent = agents(["run", "--config", str(config), "--state-dir", str(tmp_path / "state")],
                   env={"UPSTREAM": upstream.url})
    config.write_text((CONFIG % "").replace("initial_interval: 100ms", "initial_interval: -1s"))
    os.kill(agent.process.pid, signal.SIGHUP)
    wait_until(lambda: _reloads(agent, "invalid") == 1, timeout=15, message="invalid reload counted")
    assert "exporters::otlphttp::retry_on_failure::initial_interval" in agent.log()
    assert _post(agent.http_port, _request(7)) == 200
    wait_until(lambda: upstream.span_ids() == {(7).to_bytes(8, "big")}, timeout=15, message="delivered")
    assert agent.process.poll() is None


def test_reload_command_rebinds_a_receiver_whose_endpoint_changed(agents, upstream, tmp_path):
    ports = AgentProcess(args=[])
    flags = ports.ports_overrides()
    overrides = [part for flag, value in zip(flags[::2], flags[1::2], strict=True) if "protocols::http::" not in value
                 for part in (flag, value)]  # the HTTP endpoint comes from the file, which the reload changes
    config = tmp_path / "agent.yaml"
    http_config = "      http:\n        endpoint: 127.0.0.1:%d\n"
    config.write_text((CONFIG % "").replace("      http:\n", http_config % ports.http_port, 1))
    state = str(tmp_path / "state")
    agent = agents(["run", "--config", str(config), "--state-dir", state, *overrides], ports=ports,
                   port_overrides=False, env={"UPSTREAM": upstream.url})
    assert _post(agent.http_port, _request(1)) == 200
    moved = free_port()
    config.write_text((CONFIG % "").replace("      http:\n", http_config % moved, 1))
    result = subprocess.run([sys.executable, "-m", "edgeagent", "reload", "--state-dir", state],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _post(moved, _request(2)) == 200
    try:
        _post(agent.http_port, _request(3))
        raise AssertionError("the old endpoint still answers after the reload")
    except ConnectionRefusedError:
        pass
    wait_until(lambda: len(upstream.spans()) == 2, timeout=15, message="delivered from both endpoints")


def test_a_config_that_cannot_be_built_is_refused_and_the_running_one_stays(agents, upstream, tmp_path):
    config = tmp_path / "agent.yaml"
    config.write_text(CONFIG % "")
    agent = agents(["run", "--config", str(config), "--state-dir", str(tmp_path / "state")],
                   env={"UPSTREAM": upstream.url})
    # valid on its own, but one tail_sampling processor cannot serve two pipelines: found while building
    twice = (CONFIG % "").replace("processors:\n  attributes/mark:", "processors:\n  tail_sampling:\n"
                                  "    policies: [{name: all, type: always_sample}]\n  attributes/mark:")
    twice = twice.replace("""      processors: []
      exporters: [otlphttp]
""", """      processors: [tail_sampling]
      exporters: [otlphttp]
    traces/second:
      receivers: [otlp]
      processors: [tail_sampling]
      exporters: [otlphttp]
""")
    config.write_text(twice)
    os.kill(agent.process.pid, signal.SIGHUP)
    wait_until(lambda: _reloads(agent, "refused") == 1, timeout=15, message="the reload refused")
    assert "cannot be built" in agent.log() and "used by two pipelines" in agent.log()
    assert agent.health()[1]["healthy"] is True
    assert _post(agent.http_port, _request(9)) == 200
    wait_until(lambda: upstream.span_ids() == {(9).to_bytes(8, "big")}, timeout=15, message="still delivering")


def test_a_telemetry_change_is_refused_naming_the_key_and_the_running_config_stays(agents, upstream, tmp_path):
    config = tmp_path / "agent.yaml"
    config.write_text(CONFIG % "")
    state = str(tmp_path / "state")
    agent = agents(["run", "--config", str(config), "--state-dir", state], env={"UPSTREAM": upstream.url})
    config.write_text((CONFIG % "").replace("service:\n", "service:\n  telemetry:\n    logs:\n      level: debug\n"))
    result = subprocess.run([sys.executable, "-m", "edgeagent", "reload", "--state-dir", state],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "reload refused" in result.stdout
    assert "service::telemetry::logs::level" in result.stdout and "only on restart" in result.stdout
    assert _reloads(agent, "refused") == 1 and _reloads(agent, "applied") == 0
    assert _post(agent.http_port, _request(5)) == 200
    wait_until(lambda: upstream.span_ids() == {(5).to_bytes(8, "big")}, timeout=15, message="still delivering")


def _agent_on_port_from_file(agents, upstream, tmp_path, http: str):
    """An agent whose HTTP receiver settings come from the config file (`http`), which a test rewrites."""
    ports = AgentProcess(args=[])
    flags = ports.ports_overrides()
    overrides = [part for flag, value in zip(flags[::2], flags[1::2], strict=True) if "protocols::http::" not in value
                 for part in (flag, value)]
    config = tmp_path / "agent.yaml"
    config.write_text((CONFIG % "").replace("      http:\n", http, 1))
    state = str(tmp_path / "state")
    agent = agents(["run", "--config", str(config), "--state-dir", state, *overrides], ports=ports,
                   port_overrides=False, env={"UPSTREAM": upstream.url})
    return agent, config, state


def test_a_reload_that_cannot_start_restores_the_running_config_and_a_later_one_applies(agents, upstream, tmp_path):
    http = "      http:\n        endpoint: 127.0.0.1:%d\n"
    agent, config, state = _agent_on_port_from_file(agents, upstream, tmp_path, http % free_port())
    agent.http_port = int(config.read_text().split("endpoint: 127.0.0.1:")[1].split()[0])
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        config.write_text((CONFIG % "").replace("      http:\n", http % taken.getsockname()[1], 1))
        failed = subprocess.run([sys.executable, "-m", "edgeagent", "reload", "--state-dir", state],
                                capture_output=True, text=True, timeout=30)
    finally:
        taken.close()
    assert failed.returncode == 1 and "reload failed" in failed.stdout, failed.stdout + failed.stderr
    assert "previous config" in failed.stdout
    assert _reloads(agent, "failed") == 1
    assert agent.health("/health/ready")[0] == 200
    assert _post(agent.http_port, _request(1)) == 200  # the old receiver serves again
    wait_until(lambda: upstream.span_ids() == {(1).to_bytes(8, "big")}, timeout=15, message="still delivering")
    moved = free_port()
    config.write_text((CONFIG % "").replace("      http:\n", http % moved, 1))
    applied = subprocess.run([sys.executable, "-m", "edgeagent", "reload", "--state-dir", state],
                             capture_output=True, text=True, timeout=30)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert _post(moved, _request(2)) == 200
    assert agent.health("/health/ready")[0] == 200 and agent.health()[1]["failures"] == {}


def test_a_reload_whose_config_and_previous_config_both_fail_to_start_exits_non_zero(agents, upstream, tmp_path,
                                                                                      certs):
    tls = f"      http:\n        tls: {{cert_file: {certs.server_cert}, key_file: {certs.server_key}}}\n"
    http = tls + f"        endpoint: 127.0.0.1:{free_port()}\n"
    agent, config, state = _agent_on_port_from_file(agents, upstream, tmp_path, http)
    os.remove(certs.server_cert)  # the running receiver cannot start again
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        config.write_text((CONFIG % "").replace("      http:\n", f"      http:\n        endpoint: "
                                                f"127.0.0.1:{taken.getsockname()[1]}\n", 1))
        os.kill(agent.process.pid, signal.SIGHUP)
        assert agent.process.wait(20) == 1
    finally:
        taken.close()
    assert "could not start the previous config again" in agent.log()


def test_a_reload_that_cannot_start_closes_the_store_its_config_opened(agents, upstream, tmp_path):
    """The restored config does not use the failed config's new storage: it must not stay open (a writer
    thread and the environment's files per failed reload, for as long as the agent runs)."""
    http = "      http:\n        endpoint: 127.0.0.1:%d\n"
    agent, config, state = _agent_on_port_from_file(agents, upstream, tmp_path, http % free_port())
    agent.http_port = int(config.read_text().split("endpoint: 127.0.0.1:")[1].split()[0])
    extra = tmp_path / "extra"
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        text = (CONFIG % "").replace("      http:\n", http % taken.getsockname()[1], 1)
        text = text.replace("      initial_interval: 100ms\n", "      initial_interval: 100ms\n"
                            "    sending_queue:\n      storage: file_storage/extra\n")
        text = text.replace("  health_check:\n", f"  health_check:\n  file_storage/extra:\n    directory: {extra}\n"
                            "    create_directory: true\n")
        text = text.replace("[health_check]", "[health_check, file_storage/extra]")
        config.write_text(text)
        failed = subprocess.run([sys.executable, "-m", "edgeagent", "reload", "--state-dir", state],
                                capture_output=True, text=True, timeout=30)
    finally:
        taken.close()
    assert failed.returncode == 1 and "previous config" in failed.stdout, failed.stdout + failed.stderr
    assert any(extra.iterdir())  # the failed config did open its store
    fd_dir = f"/proc/{agent.process.pid}/fd"
    still_open = [target for target in (os.readlink(os.path.join(fd_dir, fd)) for fd in os.listdir(fd_dir))
                  if target.startswith(str(extra))]
    assert still_open == []
    assert _post(agent.http_port, _request(7)) == 200
    wait_until(lambda: upstream.span_ids() == {(7).to_bytes(8, "big")}, timeout=15, message="still delivering")


def test_a_sighup_while_the_agent_starts_is_held_and_applied_once_it_is_up(tmp_path):
    """Python's default action for SIGHUP ends the process: one in the half second before the loop
    took it over killed the agent (exit by signal: systemd's Restart=on-failure does not restart)."""
    agent = AgentProcess(args=["run", "--state-dir", str(tmp_path / "state")], log_path=str(tmp_path / "agent.log"))
    agent.args += agent.ports_overrides()
    hangups = 0

    def caught(pid: int) -> bool:
        """Whether the process has a handler for SIGHUP (the kernel's SigCgt mask: bit 0)."""
        with open(f"/proc/{pid}/status") as status:
            return any(line.startswith("SigCgt:") and int(line.split()[1], 16) & 1 for line in status)

    def hang_up() -> None:
        """Once the process holds SIGHUP, or 0.15 s after it began: while it imports (a fifth of a
        second), before it loads its config and its loop takes signals over."""
        nonlocal hangups
        deadline = time.monotonic() + 5
        while agent.process is None and time.monotonic() < deadline:
            time.sleep(0.001)
        began = time.monotonic()
        while time.monotonic() - began < 0.15 and not caught(agent.process.pid):
            time.sleep(0.002)
        agent.process.send_signal(signal.SIGHUP)
        hangups += 1

    sender = threading.Thread(target=hang_up)
    sender.start()
    try:
        agent.start()
        sender.join(5)
        assert hangups == 1
        wait_until(lambda: _reloads(agent, "applied") == 1, timeout=10, message="the held SIGHUP's reload")
        assert agent.process.poll() is None
    finally:
        sender.join(5)
        agent.terminate()


def test_a_reload_waiting_on_a_slow_config_server_keeps_the_agent_serving(agents, upstream, tmp_path):
    # `--config http://...` is read again on SIGHUP; a server slow to answer must not stall the receivers.
    import http.server

    answer = threading.Event()
    answer.set()
    body = (CONFIG % "").replace("${env:UPSTREAM}", upstream.url).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            answer.wait(10)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    serving.start()
    try:
        agent = agents(["run", "--config", f"http://127.0.0.1:{server.server_address[1]}/agent.yaml",
                        "--state-dir", str(tmp_path / "state")])
        answer.clear()
        os.kill(agent.process.pid, signal.SIGHUP)
        time.sleep(0.5)  # the reload is now waiting for the server's answer
        started = time.monotonic()
        assert _post(agent.http_port, _request(1)) == 200
        assert time.monotonic() - started < 3, "the request waited for the config server"
        answer.set()
        wait_until(lambda: _reloads(agent, "applied") == 1, timeout=15, message="reload applied")
    finally:
        answer.set()
        server.shutdown()
        server.server_close()
        serving.join(5)


def test_a_burst_of_sighups_under_load_loses_and_repeats_nothing(agents, upstream, tmp_path):
    """Config management sending SIGHUP once per changed file: ten in a few milliseconds, while
    clients send. No client sees a refusal, nothing is lost or sent twice, and the config written
    last is the one that runs (the kernel may merge SIGHUPs that arrive before the first is handled)."""
    config = tmp_path / "agent.yaml"
    config.write_text(CONFIG % "attributes/mark")
    agent = agents(["run", "--config", str(config), "--state-dir", str(tmp_path / "state")],
                   env={"UPSTREAM": upstream.url})
    total, statuses = 300, []

    def send() -> None:
        for number in range(1, total + 1):
            statuses.append(_post(agent.http_port, _request(number)))

    sender = threading.Thread(target=send)
    sender.start()
    wait_until(lambda: len(statuses) >= 50, timeout=30, message="requests before the burst")
    for burst in range(10):
        config.write_text(CONFIG % ("attributes/mark" if burst % 2 else ""))
        os.kill(agent.process.pid, signal.SIGHUP)
        time.sleep(0.002)
    sender.join(60)
    applied = -1.0
    while applied != _reloads(agent, "applied"):  # until a second passes without another reload
        applied = _reloads(agent, "applied")
        time.sleep(1)
    assert 1 <= applied <= 10 and _reloads(agent, "failed") == 0 and _reloads(agent, "refused") == 0
    assert statuses == [200] * total
    assert _post(agent.http_port, _request(total + 1)) == 200
    wait_until(lambda: len(upstream.spans()) >= total + 1, timeout=30, message="every span delivered")
    counts = collections.Counter(span.span_id for span in upstream.spans())
    assert len(counts) == total + 1 and max(counts.values()) == 1
    (last,) = [span for span in upstream.spans() if span.span_id == (total + 1).to_bytes(8, "big")]
    assert any(a.key == "config" for a in last.attributes)  # the last config written marks
    assert agent.process.poll() is None and agent.health()[1]["healthy"] is True
