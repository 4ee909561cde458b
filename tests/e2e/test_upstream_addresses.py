"""Upstreams whose name resolves to several addresses, moves to another address, or does not
resolve while the resolver hangs.

Each agent runs in a private mount namespace with an /etc/hosts and an /etc/resolv.conf of the
test's own bound over the system's, so a name points where the test says (::1, 127.0.0.x) and DNS
goes to a loopback port the test holds. That takes root (skipped without). An address that drops
SYNs is made honestly on loopback: a listener whose accept queue is full, which the kernel answers
with silence, as a host gone from the network does.
"""

from __future__ import annotations

import contextlib
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.helpers.agent import AgentProcess
from tests.helpers.configs import FAST_RETRY, grpc_exporter, http_exporter, traces_config
from tests.helpers.grpc_upstream import GrpcUpstream
from tests.helpers.kafka import edge_config, wait_for_spans
from tests.helpers.net import free_port, wait_until
from tests.helpers.sdk import send_logs, send_spans
from tests.helpers.upstream import Upstream

NAME = "upstream.test"
SLOW_RETRY = {"initial_interval": "20s", "max_interval": "60s", "randomization_factor": 0}
# bind our files over the system's, then become the agent: same pid, so it is ended by its pid
_ENTER = 'mount --bind "$0" /etc/hosts && mount --bind "$1" /etc/resolv.conf && shift && exec "$@"'


def _namespaces_refused() -> str:
    """Why an agent cannot run with files of its own over /etc/hosts; "" when it can."""
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                            "mount --bind /dev/null /etc/hosts && test ! -s /etc/hosts"],
                           capture_output=True, text=True, timeout=10)
    return "" if probe.returncode == 0 else (probe.stderr.strip() or f"exit {probe.returncode}")


@pytest.fixture(scope="module")
def namespaces() -> None:
    try:
        why = _namespaces_refused()
    except (OSError, subprocess.SubprocessError) as exc:
        why = str(exc)
    if why:
        pytest.skip(f"a private mount namespace with its own /etc/hosts needs root (unshare, mount): {why}")


class Names:
    """The hosts file and resolver of the agents a test starts."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.hosts = directory / "hosts"
        self.resolv = directory / "resolv.conf"
        # the loopback address the agents' resolver asks: nothing answers there unless the test holds
        # it (a DNS server that never answers); a test's own, so tests run side by side never share one
        self.dns = f"127.83.{random.randint(0, 255)}.{random.randint(1, 254)}"
        self.resolv.write_text(f"nameserver {self.dns}\noptions timeout:6 attempts:1\n")
        self.agents: list[AgentProcess] = []

    @contextlib.contextmanager
    def silent_dns(self) -> Iterator[None]:
        """A DNS server that never answers, at the resolver's address, while the block runs."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as dns:
            try:
                dns.bind((self.dns, 53))
            except OSError as exc:
                pytest.skip(f"cannot hold the DNS port {self.dns}:53: {exc}")
            yield

    def point(self, *addresses: str) -> None:
        """NAME resolves to `addresses`, in that order; rewritten in place, where the bind mount sees it."""
        with open(self.hosts, "w") as handle:
            handle.write("127.0.0.1 localhost\n" + "".join(f"{address} {NAME}\n" for address in addresses))

    def agent(self, config: str) -> AgentProcess:
        index = len(self.agents)
        agent = AgentProcess(args=["run", "--config", config, "--state-dir", str(self.directory / f"state-{index}")],
                             log_path=str(self.directory / f"agent-{index}.log"),
                             command=["unshare", "-m", "--propagation", "private", "sh", "-c", _ENTER,
                                      str(self.hosts), str(self.resolv), sys.executable, "-m", "edgeagent"])
        agent.args += agent.ports_overrides()
        self.agents.append(agent)
        return agent.start()


@pytest.fixture
def names(namespaces, tmp_path) -> Iterator[Names]:
    found = Names(tmp_path)
    found.point()
    yield found
    for agent in found.agents:
        agent.kill()


@contextlib.contextmanager
def black_hole(host: str, port: int) -> Iterator[None]:
    """`host`:`port` drops SYNs: a listener with an accept queue of one, filled and never accepted."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as listener, socket.socket(family) as filler:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(0)
        filler.connect((host, port))
        yield


def _delivered_within(upstream: Upstream | GrpcUpstream, agent: AgentProcess, spans: int, bound: float) -> None:
    before = len(upstream.spans())
    send_spans("http", agent.http_port, spans)
    wait_until(lambda: len(upstream.spans()) >= before + spans, timeout=bound, message=f"{spans} spans within {bound}s")


# ---- a name with an address that drops SYNs first ------------------------------------------------


@pytest.mark.parametrize("balancer", ["round_robin", "pick_first"])
def test_grpc_does_not_wait_on_an_address_that_drops_syns_while_the_next_one_answers(names, tmp_path, balancer):
    # grpc-go starts the next address 250 ms into a connect (happy eyeballs) and round_robin
    # picks only connected addresses: an address that swallows SYNs once cost each burst 20 s
    port = free_port()
    names.point("::1", "127.0.0.1")
    upstream = GrpcUpstream(port).start()
    try:
        with black_hole("::1", port):
            agent = names.agent(traces_config(tmp_path / "agent.yaml", {"otlp": grpc_exporter(
                f"{NAME}:{port}", balancer_name=balancer)}))
            for _ in range(3):
                _delivered_within(upstream, agent, 10, 5.0)
                time.sleep(1.5)  # round_robin tried the silent address again after a second
    finally:
        upstream.stop()


def test_http_falls_back_to_ipv4_300ms_into_an_ipv6_connect_that_hangs(names, tmp_path):
    # Go's dialer races the other family 300 ms after the first (happy eyeballs); a sequential dial
    # spent half the 30 s timeout on the silent ::1 for every new connection
    port = free_port()
    names.point("::1", "127.0.0.1")
    upstream = Upstream(port).start()
    try:
        with black_hole("::1", port):
            agent = names.agent(traces_config(tmp_path / "agent.yaml", {"otlphttp": http_exporter(
                f"http://{NAME}:{port}")}))
            _delivered_within(upstream, agent, 10, 5.0)
    finally:
        upstream.stop()


def test_the_watch_sees_the_upstream_listen_past_an_address_that_drops_syns(names, tmp_path):
    # while the upstream is away the exporter watches its addresses to send again within a second of
    # it listening; the silent ::1 took the watch's whole second, 127.0.0.1 was never looked at, and
    # the backlog waited out the 20 s backoff
    port = free_port()
    names.point("::1", "127.0.0.1")
    upstream = Upstream(port)
    try:
        with black_hole("::1", port):
            agent = names.agent(traces_config(tmp_path / "agent.yaml", {"otlphttp": http_exporter(
                f"http://{NAME}:{port}", timeout="2s", retry_on_failure=SLOW_RETRY)}))
            send_spans("http", agent.http_port, 10)
            time.sleep(3.5)  # the first attempt timed out, nothing accepted: the backoff runs, the watch looks
            upstream.start()
            listening = time.monotonic()
            wait_until(lambda: upstream.spans(), timeout=30, message="the spans delivered")
            assert upstream.calls[0].at - listening < 6.0
    finally:
        upstream.stop()


def test_kafka_reaches_a_broker_past_an_address_that_drops_syns(names, kafka, tmp_path):
    # the Kafka client connected to a broker name's addresses one after the other, each until the
    # request timeout: the silent ::1 was the only one ever tried, and no span was ever delivered
    kafka.create_topic("otlp_spans", 1)
    names.point("::1", "127.0.0.1")
    with black_hole("::1", kafka.port):
        agent = names.agent(edge_config(tmp_path / "edge.yaml", f"{NAME}:{kafka.port}"))
        sent = send_spans("grpc", agent.grpc_port, 10)
        wait_for_spans(kafka, sent, agent, timeout=15)


# ---- a name whose address changes ----------------------------------------------------------------


def test_grpc_resolves_the_name_again_when_its_connection_is_lost(names, tmp_path):
    # the old address goes silent (a Service re-created: its old IP leads nowhere): reconnecting to
    # the address resolved at start cost the connect timeout (20 s) before the name was looked up
    port = free_port()
    names.point("127.0.0.2")
    old = GrpcUpstream(port, listen=f"127.0.0.2:{port}").start()
    new = GrpcUpstream(port, listen=f"127.0.0.3:{port}")
    try:
        agent = names.agent(traces_config(tmp_path / "agent.yaml", {"otlp": grpc_exporter(f"{NAME}:{port}")}))
        _delivered_within(old, agent, 10, 5.0)
        old.stop()
        names.point("127.0.0.3")
        new.start()
        with black_hole("127.0.0.2", port):
            _delivered_within(new, agent, 10, 6.0)
    finally:
        old.stop()
        new.stop()


# ---- a name that does not resolve for a while ----------------------------------------------------


@pytest.mark.parametrize("exporter", ["otlphttp", "otlp"])
def test_a_name_that_does_not_resolve_is_logged_once_and_followed_once_it_does(names, tmp_path, exporter):
    # DNS is down (its server refuses) while the exporter starts: it once said only "backlog waiting
    # for upstream", never why, since an upstream never reached was not "unreachable"
    port = free_port()
    grpc = exporter == "otlp"
    upstream = GrpcUpstream(port) if grpc else Upstream(port)
    settings = grpc_exporter(f"{NAME}:{port}") if grpc else http_exporter(f"http://{NAME}:{port}")
    try:
        agent = names.agent(traces_config(tmp_path / "agent.yaml", {exporter: settings}))
        send_spans("http", agent.http_port, 10)

        def told() -> list[str]:
            return [line for line in agent.log().splitlines() if "unreachable" in line and NAME in line]

        wait_until(told, timeout=10, message="the upstream logged unreachable, naming the name")
        time.sleep(2)  # more failed attempts, each its own lookup: no more lines
        assert len(told()) == 1 and "resolve" in told()[0], told()
        names.point("127.0.0.1")
        upstream.start()
        wait_until(lambda: len(upstream.spans()) == 10, timeout=10, message="the spans, once the name resolves")
    finally:
        upstream.stop()


def test_grpc_reconnects_to_the_address_it_had_while_the_resolver_hangs(names, tmp_path):
    # the upstream restarts while DNS hangs: the name, looked up again for the new connection, held
    # the calls until the resolver gave up (6 s here, 10 s per server with glibc's defaults); grpc-go
    # goes on with the addresses it had while its resolver works
    with names.silent_dns():
        port = free_port()
        names.point("127.0.0.1")
        first, second = GrpcUpstream(port).start(), GrpcUpstream(port)
        try:
            agent = names.agent(traces_config(tmp_path / "agent.yaml", {"otlp": grpc_exporter(f"{NAME}:{port}")}))
            _delivered_within(first, agent, 10, 5.0)
            names.point()  # looked up now, the name goes to the DNS server that never answers
            first.stop()
            second.start()
            _delivered_within(second, agent, 10, 3.5)
        finally:
            first.stop()
            second.stop()


# ---- a resolver that hangs ----------------------------------------------------------------------


def _two_pipelines(path: Path, far: str, near: str) -> str:
    """traces to `far` with ten consumers; logs to `near`, a pipeline of its own."""
    config = {
        "receivers": {"otlp": {"protocols": {"grpc": {}, "http": {}}}},
        "exporters": {"otlphttp/far": http_exporter(far, sending_queue={"num_consumers": 10}),
                      "otlphttp/near": http_exporter(near, retry_on_failure=FAST_RETRY)},
        "extensions": {"health_check": {}},
        "service": {"extensions": ["health_check"], "pipelines": {
            "traces": {"receivers": ["otlp"], "exporters": ["otlphttp/far"]},
            "logs": {"receivers": ["otlp"], "exporters": ["otlphttp/near"]}}},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


def test_a_resolver_that_hangs_holds_up_no_other_pipeline(names, tmp_path):
    # a lookup of a name that is not in the hosts file goes to a DNS server that never answers
    # (6 s each): the exporter's ten consumers once took every thread of the default executor with
    # it, and the queue reads of every other pipeline waited for them
    with names.silent_dns():
        port = free_port()
        near, far = Upstream(free_port()).start(), Upstream(port)
        try:
            agent = names.agent(_two_pipelines(tmp_path / "agent.yaml", f"http://{NAME}:{port}", near.url))
            send_spans("http", agent.http_port, 500, batch=50)  # ten requests: a lease for each consumer
            for expected in (5, 10, 15):
                started = time.monotonic()
                send_logs("http", agent.http_port, 5)
                wait_until(lambda wanted=expected: len(near.log_records()) >= wanted, timeout=15,
                           message="the logs delivered")
                assert time.monotonic() - started < 3.0, f"the logs took {time.monotonic() - started:.1f}s"
                time.sleep(0.5)
            names.point("127.0.0.1")  # the name resolves again: the traces follow
            far.start()
            wait_until(lambda: len(far.spans()) == 500, timeout=20, message="the traces, once the name resolves")
        finally:
            near.stop()
            far.stop()
