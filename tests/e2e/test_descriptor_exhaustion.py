"""Every file descriptor the agent may open is held by idle client connections (a slowloris, a
gateway with a low LimitNOFILE): the agent keeps its promises meanwhile and recovers once they go.

The agent's own limit is lowered while it runs to what it holds plus a few, and idle connections
take those few; more wait in the listener's backlog. Its hard limit too where the test keeps the
limit low after the connections go (`lasting`); else its soft limit alone (the agent raises that
only at start), which is set back at the end, as descriptors come back when a flood ends.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import resource
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator

import pytest
import yaml

from tests.e2e.test_hostile_input import post, spans
from tests.helpers.agent import AgentProcess
from tests.helpers.configs import http_exporter, traces_config
from tests.helpers.net import free_port, wait_until
from tests.helpers.upstream import Upstream


def _descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@contextlib.contextmanager
def exhausted(agent: AgentProcess, spare: int = 2, waiting: int = 10,
              lasting: bool = False) -> Iterator[list[socket.socket]]:
    """The agent's descriptors all taken by idle connections to its HTTP port (`spare` of them
    accepted, `waiting` more in the backlog) until the end; the connections are the value. With
    `lasting`, the limit stays as low after the end (its hard limit lowered too)."""
    assert agent.process is not None
    pid = agent.process.pid
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    limit = min(_descriptors(pid) + spare, hard)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, limit if lasting else hard))
    clients: list[socket.socket] = []
    try:
        for _ in range(spare + 20):  # more than `spare` where a descriptor the agent held then was closed since
            clients.append(socket.create_connection(("127.0.0.1", agent.http_port), timeout=5))
            with contextlib.suppress(AssertionError):
                wait_until(lambda: _descriptors(pid) >= limit, timeout=0.3, message="every descriptor taken")
                break
        assert _descriptors(pid) >= limit, "every descriptor taken"
        for _ in range(waiting):
            clients.append(socket.create_connection(("127.0.0.1", agent.http_port), timeout=5))
        yield clients
    finally:
        for client in clients:
            client.close()
        if not lasting:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))


def test_a_listener_out_of_descriptors_tries_to_accept_once_a_second_not_a_backlog_at_a_time(agents, tmp_path):
    """asyncio's accept loop went on after an accept() failed with EMFILE, up to the listen backlog
    (1,024), and scheduled a retry for each failure: the retries of one second each started such a
    burst of their own, so the failed accepts grew from second to second (about 10,000 a second
    after 20 s here, and 40 % of a core, growing). Now: a retry after 5 ms, doubling to 1 s."""
    agent = agents(["run", "--state-dir", str(tmp_path / "state"), "--upstream", f"http://127.0.0.1:{free_port()}"])
    before = agent.metric("edgeagent_listener_accept_failures")
    with exhausted(agent):
        time.sleep(3.5)
    wait_until(lambda: agent.health()[0] == 200, timeout=10, message="the agent serving again")
    failures = agent.metric("edgeagent_listener_accept_failures") - before
    assert 0 < failures <= 20  # 5 ms, 10 ms ... 640 ms in 1.3 s, then one a second


def test_the_systemd_watchdog_is_pinged_while_every_descriptor_is_taken(agents, tmp_path):
    """Each notification opened a socket of its own: with no descriptor left every WATCHDOG=1 failed
    (a warning each), and systemd, its WatchdogSec (30 s in the unit) passed, killed the agent."""
    path = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    try:
        agent = agents(["run", "--state-dir", str(tmp_path / "state"), "--upstream", f"http://127.0.0.1:{free_port()}"],
                       env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})  # a ping every 0.2 s
        with exhausted(agent):
            listener.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                while listener.recv(4096):  # what came before
                    pass
            listener.settimeout(0.2)
            pings = 0
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    pings += listener.recv(4096) == b"WATCHDOG=1"
    finally:
        listener.close()
    assert pings >= 4


def _post(connection: http.client.HTTPConnection, count: int) -> int:
    connection.request("POST", "/v1/traces", body=spans(count), headers={"Content-Type": "application/x-protobuf"})
    response = connection.getresponse()
    response.read()
    return response.status


def test_a_token_file_rotated_while_no_descriptor_is_free_is_read_once_descriptors_come_back(agents, tmp_path):
    """A token (or certificate) file that changed was read again at its next change only: one that
    could not be opened for want of a descriptor kept the old token in use for good, so the
    exporter sent a revoked token long after descriptors came back."""
    token = tmp_path / "token"
    token.write_text("old-token\n")
    upstream = Upstream(free_port()).start()
    config = traces_config(tmp_path / "agent.yaml", {"otlphttp": http_exporter(
        upstream.url, auth={"authenticator": "bearertokenauth"})})
    try:
        agent = agents(["run", "--config", config, "--state-dir", str(tmp_path / "state"),
                        "--set", f"extensions::bearertokenauth={{filename: {token}}}",
                        "--set", "service::extensions=[health_check, bearertokenauth]"])
        client = http.client.HTTPConnection("127.0.0.1", agent.http_port, timeout=10)  # kept alive throughout
        assert _post(client, 1) == 200
        wait_until(lambda: len(upstream.requests) == 1, timeout=10, message="the first request delivered")
        with exhausted(agent):
            rotated = tmp_path / "token.new"
            rotated.write_text("new-token\n")
            os.replace(rotated, token)
            assert _post(client, 1) == 200  # sent on the exporter's open connection, the file unread
            wait_until(lambda: len(upstream.requests) == 2, timeout=10, message="the second request delivered")
        client.close()
        wait_until(lambda: agent.health()[0] == 200, timeout=10, message="the agent serving again")
        time.sleep(1.0)  # a file that failed to load is tried again a second later (runtime/reload.py RETRY_AFTER)
        client = http.client.HTTPConnection("127.0.0.1", agent.http_port, timeout=10)
        assert _post(client, 1) == 200
        client.close()
        wait_until(lambda: len(upstream.requests) == 3, timeout=10, message="the third request delivered")
        assert upstream.requests[-1].headers.get("Authorization") == "Bearer new-token"
    finally:
        upstream.stop()


# `python -m edgeagent`, in which the idna codec's module cannot be imported once FLAG exists: as
# a first name lookup finds it when another thread takes the last descriptor between the files the
# import opens (encodings.idna, stringprep, unicodedata's shared library): an ImportError
RUN_AND_LOSE_IDNA = ("import os, runpy, sys, threading, time\n"
                     "flag = sys.argv.pop(1)\n"
                     "def lose():\n"
                     "    for _ in range(1200):\n"
                     "        if os.path.exists(flag):\n"
                     "            sys.modules['encodings.idna'] = None\n"
                     "            return\n"
                     "        time.sleep(0.05)\n"
                     "threading.Thread(target=lose, daemon=True).start()\n"
                     "runpy.run_module('edgeagent', run_name='__main__', alter_sys=True)\n")


def test_an_idna_codec_that_fails_to_load_at_the_first_export_does_not_stop_every_export_after(tmp_path):
    """Every name lookup encodes its host with the idna codec, loaded with the first one; Python
    remembers a codec whose module failed to import as unknown, for good. A first export while no
    descriptor was free (an agent started during a flood of idle connections) could fail that
    import, and from then on every send failed with "unknown encoding: idna": nothing was
    delivered again until a restart (seen here with the descriptors taken by idle connections,
    one start in four)."""
    flag = tmp_path / "lose-idna"
    upstream = Upstream(free_port()).start()
    config = traces_config(tmp_path / "agent.yaml", {"otlphttp": http_exporter(upstream.url)})
    agent = AgentProcess([], log_path=str(tmp_path / "agent.log"),
                         command=[sys.executable, "-c", RUN_AND_LOSE_IDNA, str(flag)])
    agent.args = ["run", "--config", config, "--state-dir", str(tmp_path / "state"), *agent.ports_overrides()]
    try:
        agent.start()
        flag.touch()
        time.sleep(0.2)
        client = http.client.HTTPConnection("127.0.0.1", agent.http_port, timeout=10)
        assert _post(client, 3) == 200
        client.close()
        wait_until(lambda: len(upstream.spans()) == 3, timeout=10, message="the spans delivered")
    finally:
        agent.kill()
        upstream.stop()


PIDS_HIERARCHY = "/sys/fs/cgroup/pids"  # cgroup v1's pids controller


@contextlib.contextmanager
def thread_limit(pid: int, tmp_name: str) -> Iterator[Callable[[str], None]]:
    """`pid` in a pids cgroup of its own, limited to the threads it runs now: it can start no
    other (as a container's or a unit's pids limit lets it). The value sets another limit ("max")."""
    if os.geteuid() != 0 or not os.access(PIDS_HIERARCHY, os.W_OK):
        pytest.skip("needs a pids cgroup this user may create (root, cgroup v1's pids controller)")
    group = os.path.join(PIDS_HIERARCHY, f"edgeagent-test-{tmp_name}")
    os.mkdir(group)

    def limit(value: str) -> None:
        with open(os.path.join(group, "pids.max"), "w") as handle:
            handle.write(value)

    try:
        with open(os.path.join(group, "cgroup.procs"), "w") as handle:
            handle.write(str(pid))
        limit(str(len(os.listdir(f"/proc/{pid}/task"))))
        yield limit
    finally:
        limit("max")
        with open(os.path.join(PIDS_HIERARCHY, "cgroup.procs"), "w") as handle:
            handle.write(str(pid))  # back where the test's processes run, if it still runs
        os.rmdir(group)


def test_a_large_request_that_finds_no_thread_to_parse_it_is_refused_as_retryable(agents, tmp_path):
    """A body from 256 KiB is parsed on a worker thread: with no thread left to start (a pids limit)
    it got a 500, which OTLP clients do not retry (the data was lost), and stayed queued for that
    thread, to be parsed whenever one started, outside the memory limiter's budget."""
    upstream = Upstream(free_port()).start()
    try:
        agent = agents(["run", "--state-dir", str(tmp_path / "state"), "--upstream", upstream.url])
        assert agent.process is not None
        large = spans(8000)  # about 300 KiB
        with thread_limit(agent.process.pid, tmp_path.name) as limit:
            answers = [post(agent.http_port, large) for _ in range(3)]
            limit("max")
            assert post(agent.http_port, large) == 200
        assert answers == [503] * 3
        wait_until(lambda: len(upstream.spans()) == 8000, timeout=15, message="the large request delivered")
    finally:
        upstream.stop()


def test_an_exporter_out_of_descriptors_says_why_it_cannot_reach_its_upstream(agents, tmp_path):
    """An upstream the exporter could not connect to for want of a descriptor was logged as unreachable,
    without a word of why: the operator looked at an upstream that was up."""
    upstream = Upstream(free_port()).start()
    config = traces_config(tmp_path / "agent.yaml", {"otlphttp": http_exporter(
        upstream.url, sending_queue={"num_consumers": 2})})
    try:
        agent = agents(["run", "--config", config, "--state-dir", str(tmp_path / "state")])
        client = http.client.HTTPConnection("127.0.0.1", agent.http_port, timeout=10)  # kept alive throughout
        assert _post(client, 1) == 200
        wait_until(lambda: len(upstream.requests) == 1, timeout=10, message="the first request delivered")
        with exhausted(agent):
            upstream.hang = 3.0  # the exporter's one connection busy: a second send needs another
            assert _post(client, 1) == 200
            assert _post(client, 1) == 200
            wait_until(lambda: "upstream is unreachable" in agent.log(), timeout=10, message="the link offline")
            upstream.hang = 0.0
        client.close()
        wait_until(lambda: len(upstream.requests) == 3, timeout=15, message="every request delivered")
    finally:
        upstream.stop()
    offline = next(line for line in agent.log().splitlines() if "upstream is unreachable" in line)
    assert "Too many open files" in offline


def test_a_compaction_that_fails_for_want_of_descriptors_is_logged_once_not_at_each_try(agents, tmp_path):
    """A compaction on rebound that cannot open its copy is tried again at each check_interval (5 s by
    default): each try logged "compacting the queue" again, for as long as the descriptors were taken.
    Nothing is lost meanwhile, and the queue is compacted once they come back."""
    upstream = Upstream(free_port(), status=503).start()  # the queue fills; the exporter's connection stays open
    config = traces_config(tmp_path / "agent.yaml", {"otlphttp": http_exporter(
        upstream.url, sending_queue={"storage": "file_storage", "queue_size": 1_000_000})})
    compaction = "{on_rebound: true, rebound_needed_threshold_mib: 1, rebound_trigger_threshold_mib: 1, " \
                 "check_interval: 100ms}"
    try:
        agent = agents(["run", "--config", config, "--state-dir", str(tmp_path / "state"),
                        "--set", f"extensions::file_storage={{directory: {tmp_path / 'queue'}, "
                                 f"compaction: {compaction}}}",
                        "--set", "service::extensions=[health_check, file_storage]"])
        client = http.client.HTTPConnection("127.0.0.1", agent.http_port, timeout=10)  # kept alive throughout
        for _ in range(15):
            assert _post(client, 3000) == 200  # about 1.3 MiB of queue file
        with exhausted(agent):
            upstream.status = 200  # the queue drains: a compaction is due, and cannot open its copy
            wait_until(lambda: len(upstream.spans()) == 45_000, timeout=15, message="the queue drained")
            time.sleep(1.5)
            assert _post(client, 10) == 200
        client.close()
        wait_until(lambda: agent.metric("edgeagent_queue_compactions") >= 1, timeout=10, message="the compaction")
        wait_until(lambda: len(upstream.spans()) == 45_010, timeout=10, message="the last request delivered")
    finally:
        upstream.stop()
    assert agent.metric("edgeagent_queue_compaction_failures") >= 5
    with open(agent.log_path) as log:
        assert log.read().count("compacting the queue") <= 2


def test_connections_that_waited_for_a_descriptor_are_accepted_at_once_when_one_is_free(agents, tmp_path):
    """A listener that found no descriptor tried again a second later, however soon one was free
    again: an agent one descriptor short of its limit accepted the connections that had waited,
    and every new one behind them, one a second (Go's servers retry after 5 ms, doubling to 1 s,
    and start again at 5 ms after each accept)."""
    agent = agents(["run", "--state-dir", str(tmp_path / "state"), "--upstream", f"http://127.0.0.1:{free_port()}"])
    with exhausted(agent, spare=1, waiting=30, lasting=True):
        time.sleep(1.5)
    started = time.monotonic()  # one descriptor free now; 30 connections, closed, wait to be accepted
    client = http.client.HTTPConnection("127.0.0.1", agent.http_port, timeout=30)
    assert _post(client, 1) == 200
    client.close()
    assert time.monotonic() - started < 5


def test_a_reload_whose_new_queue_storage_finds_no_thread_is_refused_and_the_agent_stays_healthy(agents, tmp_path):
    """A reload that opened a file_storage of its own could not start that queue's writer thread
    (a pids limit): the error escaped as a half-applied reload, so /health answered 503 (unready)
    until the next reload, with nothing changed, and the new queue's files stayed open, unwritten."""
    upstream = Upstream(free_port()).start()
    config_path = tmp_path / "agent.yaml"
    traces_config(config_path, {"otlphttp": http_exporter(upstream.url)})
    second = tmp_path / "second"
    try:
        agent = agents(["run", "--config", str(config_path), "--state-dir", str(tmp_path / "state")])
        assert agent.process is not None
        pid = agent.process.pid
        config = yaml.safe_load(config_path.read_text())
        config["exporters"]["otlphttp/2"] = http_exporter(upstream.url, sending_queue={"storage": "file_storage/2"})
        config["extensions"]["file_storage/2"] = {"directory": str(second)}
        config["service"]["extensions"].append("file_storage/2")
        config["service"]["pipelines"]["logs"] = {"receivers": ["otlp"], "exporters": ["otlphttp/2"]}
        config_path.write_text(yaml.safe_dump(config))
        for attempt in ("the config's load", "the new queue's writer"):
            outcomes = 1 if attempt == "the config's load" else 2
            with thread_limit(pid, tmp_path.name):
                os.kill(pid, signal.SIGHUP)
                wait_until(lambda: agent.log().count("config reload") == outcomes,  # noqa: B023 - waited for here
                           timeout=10, message=f"the reload's outcome ({attempt})")
            assert agent.health()[0] == 200, attempt
            assert not [name for name in os.listdir(f"/proc/{pid}/fd")
                        if os.readlink(f"/proc/{pid}/fd/{name}").startswith(str(second))], attempt
            assert post(agent.http_port, spans(1)) == 200  # a lease takes a worker thread: the config loads next time
            wait_until(lambda: upstream.spans(), timeout=10, message="a span delivered")
        os.kill(pid, signal.SIGHUP)  # threads again: the same config applies
        wait_until(lambda: "otlphttp/2" in agent.health()[1].get("exporters", {}), timeout=10,
                   message="the config applied")
    finally:
        upstream.stop()


def test_a_compaction_that_finds_no_thread_for_its_copy_leaves_no_descriptor_open(agents, tmp_path):
    """The copy's pump thread that could not start (a pids limit) left the pipe between LMDB and it
    open: two descriptors each check_interval the compaction was due, until none was left."""
    upstream = Upstream(free_port(), status=503).start()  # the queue fills; the exporter's connection stays open
    config = traces_config(tmp_path / "agent.yaml", {"otlphttp": http_exporter(
        upstream.url, sending_queue={"storage": "file_storage", "queue_size": 1_000_000})})
    compaction = "{on_rebound: true, rebound_needed_threshold_mib: 1, rebound_trigger_threshold_mib: 1, " \
                 "check_interval: 100ms}"
    try:
        agent = agents(["run", "--config", config, "--state-dir", str(tmp_path / "state"),
                        "--set", f"extensions::file_storage={{directory: {tmp_path / 'queue'}, "
                                 f"compaction: {compaction}}}",
                        "--set", "service::extensions=[health_check, file_storage]"])
        assert agent.process is not None
        pid = agent.process.pid
        for _ in range(15):
            assert post(agent.http_port, spans(3000)) == 200  # about 1.3 MiB of queue file
        with thread_limit(pid, tmp_path.name):
            upstream.status = 200  # the queue drains: a compaction is due, and finds no thread for its copy
            wait_until(lambda: len(upstream.spans()) == 45_000, timeout=15, message="the queue drained")
            wait_until(lambda: agent.metric("edgeagent_queue_compaction_failures") >= 2, timeout=5,
                       message="a compaction failed")
            before = _descriptors(pid)
            failures = agent.metric("edgeagent_queue_compaction_failures")
            time.sleep(1.5)
            failed = agent.metric("edgeagent_queue_compaction_failures") - failures
            opened = _descriptors(pid) - before
        wait_until(lambda: agent.metric("edgeagent_queue_compactions") >= 1, timeout=10, message="the compaction")
    finally:
        upstream.stop()
    assert failed >= 5
    assert opened <= 1


def test_the_memory_limiter_measures_memory_while_every_descriptor_is_taken(agents, tmp_path):
    """The limiter opened /proc/self/status for each check: with every descriptor held by idle
    connections it could not measure, and refused every request (503) from the clients still
    connected, for as long as the idle connections stayed, where otelcol, reading its Go heap,
    accepts on. SDKs give a refused batch up after their retries: data lost to a slowloris."""
    upstream = Upstream(free_port()).start()
    config = traces_config(tmp_path / "agent.yaml", {"otlphttp": http_exporter(upstream.url)},
                           processors={"memory_limiter": {"check_interval": "100ms", "limit_mib": 400}})
    try:
        agent = agents(["run", "--config", config, "--state-dir", str(tmp_path / "state")])
        client = http.client.HTTPConnection("127.0.0.1", agent.http_port, timeout=10)  # kept alive throughout
        assert _post(client, 1) == 200
        with exhausted(agent):
            time.sleep(0.5)  # a few checks
            answers = [_post(client, 1) for _ in range(3)]
        client.close()
    finally:
        upstream.stop()
    assert answers == [200] * 3


def test_a_reload_that_cannot_open_its_config_file_is_not_called_invalid(agents, tmp_path):
    """A SIGHUP while every descriptor was taken: the first, before any worker thread had been
    needed, could not import what starts one, and the error escaped as a half-applied reload
    (/health 503 until the next reload); a later one could not open the config file, and was
    counted and logged as an invalid config (edgeagent_config_reloads{result="invalid"}), sending
    the operator to a config with nothing wrong in it."""
    upstream = Upstream(free_port()).start()
    config = traces_config(tmp_path / "agent.yaml", {"otlphttp": http_exporter(upstream.url)})
    try:
        agent = agents(["run", "--config", config, "--state-dir", str(tmp_path / "state")])
        assert agent.process is not None
        for reloads in (1, 2):
            with exhausted(agent):
                os.kill(agent.process.pid, signal.SIGHUP)
                wait_until(lambda: agent.log().count("config reload") == reloads,  # noqa: B023 - waited for here
                           timeout=10, message="the reload's outcome")
            wait_until(lambda: agent.health()[0] == 200, timeout=10, message="the agent serving again")
            assert post(agent.http_port, spans(1)) == 200  # a lease takes a worker thread
            wait_until(lambda: len(upstream.spans()) == reloads, timeout=10,  # noqa: B023 - waited for here
                       message="a span delivered")
        assert agent.metric("edgeagent_config_reloads", result="invalid") == 0
        assert agent.metric("edgeagent_config_reloads", result="failed") == 2
    finally:
        upstream.stop()
    assert "Too many open files" in agent.log()


def test_a_scrape_accepted_with_the_last_free_descriptor_is_answered(agents, tmp_path):
    """/metrics opened /proc/self/statm and /proc/self/status for each scrape: one whose connection
    took the agent's last free descriptor got a 500, so scrapes failed while the agent was at its
    limit, when its metrics were wanted most."""
    agent = agents(["run", "--state-dir", str(tmp_path / "state"), "--upstream", f"http://127.0.0.1:{free_port()}"])
    with exhausted(agent, spare=2, waiting=0) as clients:
        clients.pop().close()  # one descriptor free: the scrape's connection takes it
        time.sleep(0.3)
        samples = agent.metrics()
    assert samples.get("otelcol_process_memory_rss", 0) > 0
