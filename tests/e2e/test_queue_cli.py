"""`edgeagent status` and `edgeagent queue ...` against a running agent and against its files."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.helpers.cli import cli, cli_json
from tests.helpers.net import free_port, wait_until
from tests.helpers.sdk import send_spans


def test_queue_commands_work_while_the_agent_runs_and_after_it_stopped(agents, upstream, tmp_path):
    state = tmp_path / "state"
    upstream.status = 503  # reachable, but refusing: everything stays queued
    # one consumer, so that data sent while it is busy retrying stays unleased (the purge below takes both)
    # a short backoff: the switch to 400 below is seen at the next retry, not after the default's 5 s
    agent = agents(["run", "--state-dir", str(state), "--upstream", upstream.url,
                    "--set", "exporters::otlphttp::sending_queue::num_consumers=1",
                    "--set", "exporters::otlphttp::retry_on_failure::initial_interval=200ms",
                    "--set", "exporters::otlphttp::retry_on_failure::max_interval=500ms"])
    sent = send_spans("http", agent.http_port, 300)

    wait_until(lambda: upstream.attempts > 0, timeout=10, message="a first send attempt")
    status = cli_json(state, "status")
    assert status["backlog_items"] == 300
    assert status["exporters"]["otlphttp"]["upstream"] == "online"
    stats = cli_json(state, "queue", "stats")
    assert stats["stores"][0]["queues"]["otlphttp/traces"]["items"] == 300

    rows = cli_json(state, "queue", "peek", "2")
    assert rows and all(row["queue"] == "otlphttp/traces" and row["items"] == row["checked_items"] for row in rows)

    lines = cli(state, "queue", "export", "--format", "otlp-json").stdout.splitlines()
    exported = {bytes.fromhex(span["spanId"]) for line in lines for rs in json.loads(line)["resourceSpans"]
                for ss in rs["scopeSpans"] for span in ss["spans"]}
    assert exported == sent

    raw = cli(state, "queue", "export", "--format", "otlp-proto").stdout
    ids, offset = set(), 0
    while offset < len(raw):
        (length,) = struct.unpack_from(">I", raw, offset)
        request = ExportTraceServiceRequest.FromString(raw[offset + 4:offset + 4 + length])
        ids |= {s.span_id for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans}
        offset += 4 + length
    assert ids == sent

    # a permanent rejection moves the batch to the dead-letter store; replay sends it again
    upstream.status = 400
    wait_until(lambda: cli_json(state, "queue", "stats")["stores"][0]["dead_letters"] >= 1, timeout=60,
               interval=0.5, message="dead letters")
    letters = cli_json(state, "queue", "dead-letter", "list")
    assert sum(letter["items"] for letter in letters) == 300
    assert all(letter["status"] == 400 and "refused by test upstream" in letter["response"] for letter in letters)
    upstream.status = 200
    assert json.loads(cli(state, "queue", "dead-letter", "replay").stdout)["replayed"] == len(letters)
    wait_until(lambda: upstream.span_ids() >= sent, timeout=30, message="replayed spans upstream")
    assert cli_json(state, "queue", "dead-letter", "list") == []

    # purge needs --yes and counts what it drops
    upstream.status = 503
    attempts = upstream.attempts
    send_spans("grpc", agent.grpc_port, 20)
    wait_until(lambda: upstream.attempts > attempts, timeout=10, message="the consumer busy retrying")
    send_spans("grpc", agent.grpc_port, 50)
    assert cli(state, "queue", "purge", check=False).returncode == 1
    purged = json.loads(cli(state, "queue", "purge", "--yes").stdout)["purged_records"]
    assert purged >= 1
    # the batch the consumer was retrying too: the purge stops the senders first (a reload that would strand
    # a queue whose upstream is down tells the admin to purge it)
    wait_until(lambda: agent.metric("edgeagent_dropped_items_total", reason="purged") == 70, timeout=10)
    compacted = json.loads(cli(state, "queue", "compact").stdout)
    assert compacted[0]["bytes_after"] <= compacted[0]["bytes_before"]

    assert agent.terminate() == 0
    offline = cli(state, "status", "--json", check=False)
    assert offline.returncode == 3
    assert json.loads(offline.stdout)["running"] is False
    assert cli_json(state, "queue", "stats")["stores"][0]["queues"]["otlphttp/traces"]["items"] == 0


def _snapshot(root):
    """Owner, mode, size and mtime of every file and directory under `root`."""
    out = {}
    for directory, dirs, files in os.walk(root):
        for name in [*dirs, *files, "."]:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            out[os.path.normpath(path)] = (info.st_uid, info.st_gid, info.st_mode, info.st_size, info.st_mtime_ns)
    return out


def test_commands_run_as_root_on_another_users_queue_change_no_file(agents, tmp_path):
    state = tmp_path / "state"
    agent = agents(["run", "--state-dir", str(state), "--upstream", f"http://127.0.0.1:{free_port()}"])
    send_spans("http", agent.http_port, 50)
    agent.kill()  # as a crash would leave it: no clean shutdown
    agent.process.wait(10)
    if (state / "control.sock").exists():
        os.unlink(state / "control.sock")
    for directory, dirs, files in os.walk(state):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(directory, name), 4321, 4321)
    os.chown(state, 4321, 4321)
    before = _snapshot(state)

    assert cli_json(state, "queue", "stats")["stores"][0]["queues"]["otlphttp/traces"]["items"] == 50
    assert cli(state, "queue", "peek", "1").returncode == 0
    assert cli_json(state, "queue", "dead-letter", "list") == []
    assert json.loads(cli(state, "status", "--json", check=False).stdout)["backlog_items"] == 50
    refused = cli(state, "queue", "compact", check=False)
    assert refused.returncode != 0 and b"sudo -u 4321" in refused.stderr and b"Traceback" not in refused.stderr
    assert _snapshot(state) == before


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the state directory to another user")
def test_command_run_as_root_on_a_fresh_install_creates_no_root_owned_queue(tmp_path):
    # The service user's state directory exists, its queue not yet: a root-owned queue made
    # there would keep the agent, running as that user, from ever opening it.
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, 4321, 4321)
    refused = cli(state, "queue", "compact", check=False)
    assert refused.returncode != 0 and b"sudo -u 4321" in refused.stderr and b"Traceback" not in refused.stderr
    assert os.listdir(state) == []


def test_a_refused_command_names_the_agent_holding_the_queue(agents, tmp_path):
    state = tmp_path / "state"
    agent = agents(["run", "--state-dir", str(state), "--upstream", f"http://127.0.0.1:{free_port()}"])
    send_spans("http", agent.http_port, 10)
    os.unlink(state / "control.sock")  # the agent cannot be asked: the command must not touch its queue
    refused = cli(state, "queue", "stats", check=False)
    assert refused.returncode != 0
    assert f"process {agent.process.pid}".encode() in refused.stderr and b"Traceback" not in refused.stderr
    assert agent.terminate() == 0


def test_queue_commands_find_the_agent_through_its_lock_file(agents, tmp_path):
    """The agent runs with one state directory; the operator's shell resolves another
    (systemd's STATE_DIRECTORY is not set there): stats must still come from the agent."""
    state = tmp_path / "state"
    agent = agents(["run", "--state-dir", str(state), "--upstream", f"http://127.0.0.1:{free_port()}"])
    send_spans("http", agent.http_port, 10)
    elsewhere = tmp_path / "elsewhere"
    os.makedirs(elsewhere)
    os.symlink(state / "queue", elsewhere / "queue")  # same queue, but no control socket beside it
    stats = cli_json(elsewhere, "queue", "stats")
    assert stats["stores"][0]["queues"]["otlphttp/traces"]["items"] == 10
    assert agent.terminate() == 0


def test_reading_a_truncated_queue_beside_a_stopped_agent_refuses_cleanly(agents, tmp_path):
    state = tmp_path / "state"
    agent = agents(["run", "--state-dir", str(state), "--upstream", f"http://127.0.0.1:{free_port()}"])
    send_spans("http", agent.http_port, 500, batch=20)
    assert agent.terminate() == 0
    data = state / "queue" / "data.mdb"
    os.truncate(data, os.path.getsize(data) // 2)
    before = _snapshot(state)
    refused = cli(state, "queue", "stats", check=False)
    assert refused.returncode == 1 and b"is damaged" in refused.stderr and b"Traceback" not in refused.stderr
    assert _snapshot(state) == before  # left for the agent to salvage


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root and setpriv to give the queue to one user and read it as another")
def test_a_user_who_may_not_read_the_queue_is_told_so_not_shown_an_empty_one(agents):
    """Run by a user other than the agent's (the socket and the 0700 directory refuse them), the
    commands took the unreadable data file for a missing one: 50 queued spans read as 0."""
    probe = subprocess.run(["setpriv", "--reuid=4322", "--regid=4322", "--clear-groups", sys.executable, "-c",
                            "import edgeagent"], capture_output=True, timeout=60)
    if probe.returncode:  # the checkout or its virtualenv under a directory only its owner may enter
        pytest.skip(f"another user cannot run edgeagent from this checkout: {probe.stderr.decode().strip()[-200:]}")
    base = tempfile.mkdtemp(prefix="edgeagent-other-user-")  # not under the tests' 0700 directory
    os.chmod(base, 0o755)
    try:
        state = os.path.join(base, "state")
        agent = agents(["run", "--state-dir", state, "--upstream", f"http://127.0.0.1:{free_port()}"])
        send_spans("http", agent.http_port, 50)
        assert agent.terminate() == 0
        for directory, dirs, files in os.walk(state):
            for name in [*dirs, *files]:
                os.lchown(os.path.join(directory, name), 4321, 4321)
        os.chown(state, 4321, 4321)
        for verb in (["queue", "stats"], ["status"], ["queue", "dead-letter", "list"]):
            # setpriv, not Popen(user=...): the interpreter may live under root's home, which the
            # latter cannot reach once it has changed user
            result = subprocess.run(["setpriv", "--reuid=4322", "--regid=4322", "--clear-groups", sys.executable,
                                     "-m", "edgeagent", *verb, "--state-dir", state], capture_output=True, timeout=60)
            err = result.stderr.decode()
            assert result.returncode == 1, (verb, result.stdout.decode(), err)
            assert "sudo -u 4321" in err and "Traceback" not in err and "chown" not in err, (verb, err)
    finally:
        shutil.rmtree(base)


def test_an_agent_starting_while_a_command_reads_its_stopped_queue_waits_for_the_read(agents, tmp_path):
    """A read beside a stopped agent opens LMDB without its lock file, unseen by a writer: the agent
    (re)started by systemd meanwhile grew and reused the file under it, and the export ended in an
    MDB_MAP_RESIZED traceback with a tenth of the backlog written."""
    from tests.e2e.test_export_memory import SPANS, _post_backlog

    state = tmp_path / "state"
    args = ["run", "--state-dir", str(state), "--upstream", f"http://127.0.0.1:{free_port()}"]
    agent = agents(args)
    _post_backlog(agent.http_port, requests=30)
    assert agent.terminate() == 0
    export = subprocess.Popen([sys.executable, "-m", "edgeagent", "queue", "export", "--format", "otlp-proto",
                               "--state-dir", str(state)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: _reading(export.pid, state / "queue" / "data.mdb"), timeout=30,
                   message="the export reading, held by the pipe no one reads yet")
        with pytest.raises(RuntimeError) as refused:
            agents(args, ports=agent)
        assert "being read by an edgeagent command" in str(refused.value), str(refused.value)
        out, err = export.communicate(timeout=60)
    finally:
        if export.poll() is None:
            export.kill()
            export.wait(10)
    assert export.returncode == 0, err.decode()
    assert _spans(out) == 30 * SPANS
    assert agents(args, ports=agent).terminate() == 0  # the read done, the agent starts


def _reading(pid: int, data: Path) -> bool:
    """Whether process `pid` has the queue's data file mapped."""
    try:
        return str(data) in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def _spans(export: bytes) -> int:
    count, offset = 0, 0
    while offset < len(export):
        (length,) = struct.unpack_from(">I", export, offset)
        request = ExportTraceServiceRequest.FromString(export[offset + 4:offset + 4 + length])
        count += sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        offset += 4 + length
    return count
