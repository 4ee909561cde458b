"""The process a deployment starts: descriptors 0 to 2 closed, signals the agent has no use for, a
read-only root filesystem.

Each as otelcol (a Go program) meets them: the Go runtime opens /dev/null on a closed descriptor 0,
1 or 2 before anything else, catches SIGUSR1 and SIGUSR2 and does nothing, and ends on SIGQUIT
with the stacks of its goroutines on stderr, and writes nowhere but where its config says.

The read-only root is a mount namespace of the test's own (root only): every filesystem read-only
but the test's directory, as a container with readOnlyRootFilesystem and no /tmp of its own."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.agent import AgentProcess
from tests.helpers.certs import Certs
from tests.helpers.hostile import spans_request
from tests.helpers.net import wait_until
from tests.helpers.otlp_post import post
from tests.packaging.tools import require

# a queue, a log file and a debug exporter printing each span to stdout
CONFIG = """
receivers:
  otlp:
    protocols:
      grpc:
      http:
exporters:
  debug:
    verbosity: detailed
    use_internal_logger: false
    output_paths: [stdout]
  otlphttp:
    endpoint: http://127.0.0.1:1
    sending_queue: {storage: file_storage}
extensions:
  health_check:
  file_storage:
    directory: ${env:QUEUE}
service:
  extensions: [health_check, file_storage]
  telemetry:
    logs: {level: debug, output_paths: ["${env:LOG}"]}
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlphttp, debug]
"""


def _agent(tmp_path: Path, closing: str = "") -> AgentProcess:
    """The agent on CONFIG, started by a shell that closes the descriptors `closing` names first."""
    config = tmp_path / "agent.yaml"
    config.write_text(CONFIG)
    (tmp_path / "queue").mkdir()
    agent = AgentProcess(args=["run", "--config", str(config)], log_path=str(tmp_path / "output.log"),
                         env={"QUEUE": str(tmp_path / "queue"), "LOG": str(tmp_path / "agent.log"),
                              "STATE_DIRECTORY": str(tmp_path / "state")})
    if closing:
        closes = " ".join(f"{fd}<&-" for fd in closing)
        agent.command = ["sh", "-c", f'exec "$0" "$@" {closes}', sys.executable, "-m", "edgeagent"]
    agent.args += agent.ports_overrides()
    return agent


def _agent_log(tmp_path: Path) -> str:
    return (tmp_path / "agent.log").read_text(errors="replace")


@pytest.mark.parametrize("closing", ["012", "2"], ids=["all-three", "stderr"])
def test_closed_standard_descriptors_are_dev_null_not_the_first_files_the_agent_opens(tmp_path, closing):
    # with 1 closed the agent failed at start (sys.stdout is None); with 2 closed its log file took
    # descriptor 2, where any later text for stderr went (and with all three the queue's files
    # could take them)
    agent = _agent(tmp_path, closing)
    try:
        agent.start()
        pid = agent.process.pid
        assert [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in map(int, closing)] == ["/dev/null"] * len(closing)
        assert post(agent.http_port, spans_request(1))[0] == 200
        assert agent.terminate() == 0
    finally:
        agent.kill()
    assert "edgeagent stopped" in _agent_log(tmp_path)


def test_sigusr1_and_sigusr2_are_ignored_and_said_once(tmp_path):
    # their default action ended the agent: a logrotate script's `kill -USR1` stopped it
    agent = _agent(tmp_path)
    try:
        agent.start()
        for _ in range(3):
            for signum in (signal.SIGUSR1, signal.SIGUSR2):
                agent.process.send_signal(signum)
        wait_until(lambda: "SIGUSR2" in _agent_log(tmp_path), timeout=5, message="the ignored signal logged")
        assert agent.process.poll() is None
        assert post(agent.http_port, spans_request(1))[0] == 200
        assert agent.terminate() == 0
    finally:
        agent.kill()
    lines = [line for line in _agent_log(tmp_path).splitlines() if "SIGUSR" in line]
    assert len(lines) == 2 and "SIGUSR1" in lines[0] and "SIGUSR2" in lines[1], lines


# the agent started with SIGTERM, SIGINT and SIGHUP blocked, as a parent's signal mask leaves them
BLOCKED = ("import os, signal, sys; signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT, "
           "signal.SIGHUP}); os.execv(sys.executable, [sys.executable, '-m', 'edgeagent', *sys.argv[1:]])")


def test_signals_blocked_when_the_agent_starts_still_reload_and_stop_it(tmp_path):
    # a blocked signal stays pending: SIGTERM never reached the agent, which ran on until SIGKILL;
    # Go unblocks the signals a program asks for
    agent = _agent(tmp_path)
    agent.command = [sys.executable, "-c", BLOCKED]
    try:
        agent.start()
        agent.process.send_signal(signal.SIGHUP)
        wait_until(lambda: "config reloaded" in _agent_log(tmp_path), timeout=5, message="the SIGHUP's reload")
        agent.process.send_signal(signal.SIGTERM)
        assert agent.process.wait(10) == 0
    finally:
        agent.kill()
    assert "edgeagent stopped" in _agent_log(tmp_path)


def test_sigquit_writes_every_threads_stack_to_stderr_and_ends_the_agent(tmp_path):
    # it ended the agent with nothing said: a hung agent left no trace of where it hung
    agent = _agent(tmp_path)
    try:
        agent.start()
        agent.process.send_signal(signal.SIGQUIT)
        assert agent.process.wait(10) == -signal.SIGQUIT
    finally:
        agent.kill()
    stderr = (tmp_path / "output.log").read_text(errors="replace")
    assert "most recent call first" in stderr and "Thread 0x" in stderr, stderr[-2000:]
    assert "in run_forever" in stderr or "in _run_once" in stderr, stderr[-2000:]  # the loop's thread


def test_as_pid_1_sigquit_writes_the_stacks_and_ends_the_agent(tmp_path):
    # the kernel drops the default action of a signal PID 1 has no handler for: the stacks were
    # written and the agent ran on; a Go program exits 2 after its dump
    unshare = require("unshare", "apt-get install -y util-linux")
    if os.geteuid() != 0:
        pytest.skip("a PID namespace needs root (CI runs as root)")
    agent = _agent(tmp_path)
    agent.command = [unshare, "--pid", "--fork", "--mount-proc", "--kill-child", *agent.command]
    try:
        agent.start()
        (first,) = Path(f"/proc/{agent.process.pid}/task/{agent.process.pid}/children").read_text().split()
        os.kill(int(first), signal.SIGQUIT)
        assert agent.process.wait(10) == 2
    finally:
        agent.kill()
    assert "most recent call first" in (tmp_path / "output.log").read_text(errors="replace")


def test_a_state_directory_too_deep_for_a_socket_address_still_has_its_control_socket(tmp_path):
    # a unix socket's address holds 107 bytes: under a deeper state directory the agent failed to
    # start ("listen unix .../control.sock: None")
    state = tmp_path / ("deep-" * 20) / "state"
    assert len(str(state / "control.sock")) > 108
    agent = _agent(tmp_path)
    agent.env["STATE_DIRECTORY"] = str(state)
    try:
        agent.start()
        status = subprocess.run([sys.executable, "-m", "edgeagent", "status", "--json", "--state-dir", str(state)],
                                capture_output=True, text=True, timeout=30)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["running"] is True, status.stdout
        assert agent.terminate() == 0
    finally:
        agent.kill()
    assert not (state / "control.sock").exists()


# every mount read-only, /proc, /sys and /dev aside, but the directory $1 (bound onto itself first)
READ_ONLY_ROOT = r"""
set -e
mount --make-rprivate /
mount --bind "$1" "$1"
awk '{print $2}' /proc/self/mounts | while read -r target; do
  case "$target" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*|"$1") continue;; esac
  mount -o remount,bind,ro "$target" 2>/dev/null || true
done
if touch /tmp/.edgeagent-write-test 2>/dev/null; then echo "/tmp is writable" >&2; exit 9; fi
cd /
shift
exec "$@"
"""


def test_on_a_read_only_root_the_agent_writes_only_its_state_and_queue(tmp_path, certs: Certs):
    # a receiver's inline key (key_pem) was written to a temporary directory for OpenSSL to read: with
    # no writable /tmp the agent failed at start ("No usable temporary directory found")
    unshare = require("unshare", "apt-get install -y util-linux")
    if os.geteuid() != 0:
        pytest.skip("a mount namespace needs root (CI runs as root)")
    agent = _agent(tmp_path)
    agent.command = [unshare, "-m", "sh", "-c", READ_ONLY_ROOT, "sh", str(tmp_path), *agent.command]
    agent.args += ["--set", "receivers::otlp::protocols::grpc::tls=" + json.dumps(
        {"cert_pem": Path(certs.server_cert).read_text(), "key_pem": Path(certs.server_key).read_text()})]
    try:
        agent.start()
        assert post(agent.http_port, spans_request(1))[0] == 200
        assert agent.terminate() == 0
    finally:
        agent.kill()
    assert "edgeagent stopped" in _agent_log(tmp_path)


def _latin1_locale(directory: Path) -> dict[str, str]:
    """The environment of a process under an ISO-8859-1 locale built in `directory`."""
    localedef = shutil.which("localedef")
    if localedef is None:
        pytest.skip("localedef is not installed (libc-bin)")
    made = subprocess.run([localedef, "-i", "de_DE", "-f", "ISO-8859-1", str(directory / "de_DE.ISO-8859-1")],
                          capture_output=True, text=True, timeout=30)
    if made.returncode not in (0, 1):  # 1: made, with warnings
        pytest.skip(f"the locale cannot be built here: {made.stderr.strip()[-200:]}")
    return {"LOCPATH": str(directory), "LC_ALL": "de_DE.ISO-8859-1"}


def test_under_a_latin1_locale_config_text_environment_and_paths_are_utf8(tmp_path):
    # Python decoded the environment and encoded paths and stdout in the locale's charset: a value
    # `é` became `Ã©`, a file named in UTF-8 was not found, and print-config failed on a character
    # latin-1 lacks; Go takes each as the UTF-8 bytes it is
    (tmp_path / "locale").mkdir()
    env = {**os.environ, **_latin1_locale(tmp_path / "locale"), "SITE": "Zürich"}
    env.pop("LANG", None)
    named = tmp_path / "grüße.txt"
    named.write_text("日本", encoding="utf-8")
    config = tmp_path / "agent.yaml"
    config.write_text(f"""
receivers: {{otlp: {{protocols: {{http: {{endpoint: 127.0.0.1:4318}}}}}}}}
processors:
  attributes:
    actions: [{{key: site, value: "${{env:SITE}} ${{file:{named}}}", action: insert}}]
exporters: {{debug: {{}}}}
service:
  pipelines: {{traces: {{receivers: [otlp], processors: [attributes], exporters: [debug]}}}}
""", encoding="utf-8")
    printed = subprocess.run([sys.executable, "-m", "edgeagent", "print-config", "--config", str(config)], env=env,
                             capture_output=True, timeout=30)
    assert printed.returncode == 0, printed.stderr.decode(errors="replace")[-2000:]
    assert "value: Zürich 日本" in printed.stdout.decode("utf-8"), printed.stdout.decode(errors="replace")
