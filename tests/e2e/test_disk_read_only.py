"""The queue's filesystem turns read-only under a running agent (ext4's errors=remount-ro): new data is
refused politely, the backlog still drains, nothing answered OK is lost, and writes resume by
themselves once the filesystem is writable again."""

from __future__ import annotations

import os
import struct
import subprocess
import time

import grpc
import lmdb
import pytest
from aiohttp import web
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.e2e.test_disk_full import _post
from tests.helpers import grpc_raw
from tests.helpers.configs import queue_on_disk_config
from tests.helpers.net import free_port, wait_until
from tests.helpers.upstream import Upstream, _decompress

SPANS = 50


@pytest.fixture
def card(tmp_path):
    """An ext4 filesystem on a loop device mounted with errors=remount-ro, as a gateway's SD card is;
    `_fail` makes the kernel take it for damaged, which remounts it read-only under open files."""
    if os.geteuid() != 0:
        pytest.skip("mounting a loop device needs root (CI runs as root)")
    image, mount_point = tmp_path / "card.img", tmp_path / "card"
    mount_point.mkdir()
    with open(image, "wb") as handle:
        handle.truncate(64 << 20)
    made = subprocess.run(["mkfs.ext4", "-q", "-F", "-O", "^has_journal", str(image)], capture_output=True)
    result = made if made.returncode else subprocess.run(
        ["mount", "-o", "loop,errors=remount-ro", str(image), str(mount_point)], capture_output=True)
    if result.returncode != 0:
        if os.environ.get("CI"):
            raise AssertionError(f"cannot mount an ext4 loop device in CI: {result.stderr.decode()}")
        pytest.skip(f"cannot mount an ext4 loop device here: {result.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fail(mount_point) -> None:
    """ext4's own reaction to an error it finds: remounted read-only, writes fail with EROFS."""
    device = subprocess.run(["findmnt", "-n", "-o", "SOURCE", str(mount_point)], capture_output=True, text=True,
                            check=True).stdout.strip()
    trigger = f"/sys/fs/ext4/{os.path.basename(device)}/trigger_fs_error"
    if not os.path.exists(trigger):
        pytest.skip(f"this kernel has no {trigger} to make an ext4 error with")
    with open(trigger, "w") as handle:
        handle.write("test: the card fails\n")


def _request(index: int, spans: int = SPANS) -> tuple[bytes, set[bytes]]:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "read-only"
    ss = rs.scope_spans.add()
    ids = set()
    for number in range(spans):
        span_id = index.to_bytes(4, "big") + number.to_bytes(4, "big")
        ss.spans.add(trace_id=os.urandom(16), span_id=span_id, name="op")
        ids.add(span_id)
    return request.SerializeToString(), ids


def _checked_and_mounted_again(tmp_path, card) -> None:
    """What a gateway's reboot does for a card ext4 found damaged: umount, fsck, mount again in place."""
    subprocess.run(["umount", str(card)], check=True, capture_output=True)
    subprocess.run(["fsck.ext4", "-f", "-y", str(tmp_path / "card.img")], capture_output=True)
    subprocess.run(["mount", "-o", "loop,errors=remount-ro", str(tmp_path / "card.img"), str(card)], check=True,
                   capture_output=True)


def _grpc_refusal(port: int, body: bytes) -> tuple[grpc.StatusCode, float]:
    """The code of a refused gRPC export and the delay its RetryInfo asks for."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        export = channel.unary_unary(grpc_raw.TRACE_METHOD)
        with pytest.raises(grpc.RpcError) as refused:
            export(body, timeout=10)
    details = dict(refused.value.trailing_metadata() or ())
    status = status_pb2.Status.FromString(details["grpc-status-details-bin"])
    info = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info)
    return refused.value.code(), info.retry_delay.ToTimedelta().total_seconds()


def _config(tmp_path, directory) -> str:
    return queue_on_disk_config(tmp_path / "agent.yaml", directory)


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _log_lines(agent) -> int:
    with open(agent.log_path, encoding="utf-8", errors="replace") as handle:
        return sum(1 for _ in handle)


def _queue_health(agent) -> dict:
    return agent.health()[1].get("storage", {})


def _mount_again(card, image) -> str:
    """What an operator does for a card ext4 took for damaged, with the agent still running: detach it
    (lazily: the agent holds its files), check it, mount it again. The image gets a loop device of its
    own, for the one the agent still holds keeps the failed filesystem; returns that device."""
    subprocess.run(["umount", "-l", str(card)], check=True, capture_output=True)
    device = subprocess.run(["losetup", "-f", "--show", str(image)], check=True, capture_output=True,
                            text=True).stdout.strip()
    subprocess.run(["fsck.ext4", "-f", "-y", device], capture_output=True)
    subprocess.run(["mount", "-o", "errors=remount-ro", device, str(card)], check=True, capture_output=True)
    return device


def test_a_card_mounted_again_while_the_agent_runs_takes_writes_without_a_restart(agents, tmp_path, card):
    port = free_port()
    directory = card / "queue"
    agent = agents(["run", "--config", _config(tmp_path, directory)], env={"UPSTREAM": f"http://127.0.0.1:{port}"})
    accepted: set[bytes] = set()
    for index in range(10):
        body, ids = _request(index)
        assert _post(agent.http_port, body)[0] == 200
        accepted |= ids
    _fail(card)
    body, ids = _request(100)
    assert _post(agent.http_port, body)[0] == 503
    device = _mount_again(card, tmp_path / "card.img")
    upstream = Upstream(port).start()
    try:
        body, ids = _request(200)
        wait_until(lambda: _post(agent.http_port, body)[0] == 200, timeout=30, interval=0.5,
                   message=f"ingest resumes on the card mounted again: {agent.health()[1]}")
        accepted |= ids
        wait_until(lambda: upstream.span_ids() >= accepted, timeout=60, message="every span answered OK delivered")
        wait_until(lambda: agent.metric("edgeagent_queue_items", data_type="traces") == 0, timeout=30,
                   message="the queue empties")
        assert _queue_health(agent)[str(directory)]["state"] == "ok", agent.health()[1]
        assert os.path.exists(directory / "data.mdb")
    finally:
        upstream.stop()
        assert agent.terminate() == 0, agent.log()
        if device is not None:
            subprocess.run(["umount", str(card)], check=False, capture_output=True)
            subprocess.run(["losetup", "-d", device], check=False, capture_output=True)
        subprocess.run(["umount", str(card)], check=False, capture_output=True)
        subprocess.run(["losetup", "-d", device], check=False, capture_output=True)


def test_a_card_remounted_read_only_refuses_new_data_drains_the_backlog_and_loses_nothing(agents, tmp_path, card):
    port = free_port()
    directory = card / "queue"
    config = _config(tmp_path, directory)
    agent = agents(["run", "--config", config], env={"UPSTREAM": f"http://127.0.0.1:{port}"})
    pid = agent.process.pid
    accepted: set[bytes] = set()
    for index in range(20):  # the upstream is away: a backlog
        body, ids = _request(index)
        assert _post(agent.http_port, body)[0] == 200
        accepted |= ids

    _fail(card)
    answers = []
    for index in range(20, 40):
        body, ids = _request(index)
        status, retry_after = _post(agent.http_port, body)
        answers.append((status, retry_after))
        if status == 200:
            accepted |= ids
    refused = [answer for answer in answers if answer[0] != 200]
    assert refused, "every request was answered OK on a read-only filesystem"
    assert all(status == 503 and retry_after for status, retry_after in refused), refused
    code, delay = _grpc_refusal(agent.grpc_port, _request(50)[0])
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and delay > 0, (code, delay)
    assert agent.process.poll() is None, agent.log()
    wait_until(lambda: _queue_health(agent).get(str(directory), {}).get("state") == "read_only",
               timeout=10, message=f"health says the storage is read-only: {agent.health()[1]}")
    assert agent.metric("edgeagent_queue_storage_errors_total", reason="read_only") >= 1

    # idle on a read-only filesystem: neither spinning nor logging on and on
    lines, cpu = _log_lines(agent), _cpu_seconds(pid)
    time.sleep(3)
    assert _cpu_seconds(pid) - cpu < 1.0, "the agent spins while the filesystem is read-only"
    assert _log_lines(agent) - lines < 5, agent.log()

    upstream = Upstream(port).start()  # the backlog is read and sent, though its acks cannot be written
    try:
        wait_until(lambda: upstream.span_ids() >= accepted, timeout=60, interval=0.5,
                   message=f"backlog delivered from a read-only queue: {agent.health()[1]}")
        time.sleep(1)  # the last acks refused
        attempts, cpu, lines = upstream.attempts, _cpu_seconds(pid), _log_lines(agent)
        time.sleep(3)
        assert upstream.attempts - attempts <= 6, "delivered records are sent again in a tight loop"
        assert _cpu_seconds(pid) - cpu < 1.0, "the agent spins while its acks cannot be written"
        assert _log_lines(agent) - lines < 5, agent.log()
        assert agent.process.poll() is None, agent.log()
    finally:
        upstream.stop()
    assert agent.terminate() == 0, agent.log()

    # ext4 takes a filesystem it found damaged back only through umount and fsck (a reboot, on a gateway)
    _checked_and_mounted_again(tmp_path, card)
    upstream = Upstream(port).start()
    try:
        agent = agents(["run", "--config", config], env={"UPSTREAM": f"http://127.0.0.1:{port}"}, ports=agent)
        wait_until(lambda: upstream.span_ids() >= accepted, timeout=60, message="every span answered OK delivered")
        wait_until(lambda: agent.metric("edgeagent_queue_items", data_type="traces") == 0, timeout=30,
                   message=f"the queue empties once writable: {agent.health()[1]} {agent.log()[-3000:]}")
    finally:
        upstream.stop()
    assert agent.metric("edgeagent_dropped_items_total") == 0
    assert agent.terminate() == 0


def test_data_refused_for_good_on_a_read_only_card_waits_for_the_dead_letter_store(agents, tmp_path, card):
    """The upstream refuses the backlog for good (400) while the card is read-only: the move to the
    dead-letter store waits for writes, the batches are not sent again and again, and once the card is
    writable they are all in the dead-letter store."""
    port = free_port()
    directory = card / "queue"
    agent = agents(["run", "--config", _config(tmp_path, directory)], env={"UPSTREAM": f"http://127.0.0.1:{port}"})
    pid = agent.process.pid
    for index in range(10):  # the upstream is away: a backlog
        assert _post(agent.http_port, _request(index)[0])[0] == 200
    _fail(card)
    upstream = Upstream(port, status=400).start()
    device = None
    try:
        wait_until(lambda: upstream.attempts >= 1, timeout=30, message="the backlog is sent")
        time.sleep(3)
        attempts, cpu, lines = upstream.attempts, _cpu_seconds(pid), _log_lines(agent)
        time.sleep(5)
        assert upstream.attempts - attempts <= 2, \
            f"refused data is sent again in a loop: {upstream.attempts - attempts} more requests in 5 s"
        assert _cpu_seconds(pid) - cpu < 1.0, "the agent spins while refused data cannot be dead-lettered"
        assert _log_lines(agent) - lines < 5, agent.log()
        assert agent.metric("edgeagent_queue_items", data_type="traces") == 10 * SPANS, "refused data was lost"

        device = _mount_again(card, tmp_path / "card.img")
        wait_until(lambda: agent.metric("edgeagent_queue_items", data_type="traces") == 0, timeout=60,
                   interval=0.5, message=f"the refused data leaves the queue once writable: {agent.health()[1]}")
        assert agent.metric("edgeagent_deadletter_items") == 10 * SPANS, agent.log()
        assert agent.health()[1]["dead_letters"] == 10, agent.health()[1]
        assert not upstream.requests
    finally:
        upstream.stop()
        assert agent.terminate() == 0, agent.log()
        if device is not None:
            subprocess.run(["umount", str(card)], check=False, capture_output=True)
            subprocess.run(["losetup", "-d", device], check=False, capture_output=True)
        if device is not None:
            subprocess.run(["umount", str(card)], check=False, capture_output=True)
            subprocess.run(["losetup", "-d", device], check=False, capture_output=True)


def test_a_stop_while_refused_data_waits_for_the_dead_letter_store_keeps_it_queued(agents, tmp_path, card):
    port = free_port()
    config = _config(tmp_path, card / "queue")
    agent = agents(["run", "--config", config], env={"UPSTREAM": f"http://127.0.0.1:{port}"})
    for index in range(10):
        assert _post(agent.http_port, _request(index)[0])[0] == 200
    _fail(card)
    upstream = Upstream(port, status=400).start()
    try:
        wait_until(lambda: upstream.attempts >= 10, timeout=30, message="the backlog is sent")
        assert agent.terminate() == 0, agent.log()
        log_text = agent.log()
        assert "never retrieved" not in log_text and "unexpectedly" not in log_text, log_text

        _checked_and_mounted_again(tmp_path, card)
        agent = agents(["run", "--config", config], env={"UPSTREAM": f"http://127.0.0.1:{port}"}, ports=agent)
        wait_until(lambda: agent.metric("edgeagent_deadletter_items") == 10 * SPANS, timeout=60,
                   message=f"the refused data is dead-lettered after the restart: {agent.health()[1]}")
        assert agent.metric("edgeagent_queue_items", data_type="traces") == 0
        assert agent.metric("edgeagent_dropped_items_total") == 0
    finally:
        upstream.stop()
    assert agent.terminate() == 0, agent.log()


def test_retries_running_out_on_a_read_only_card_log_no_error_per_lease(agents, tmp_path, card):
    """A lease whose retries ran out goes back with its attempts counted; on a read-only card that
    count cannot be written, which must not log an error each time (the store warned once)."""
    port = free_port()
    directory = card / "queue"
    config = _config(tmp_path, directory)
    with open(config) as handle:
        text = handle.read().replace("max_interval: 1s", "max_interval: 1s\n      max_elapsed_time: 1s")
    with open(config, "w") as handle:
        handle.write(text)
    agent = agents(["run", "--config", config], env={"UPSTREAM": f"http://127.0.0.1:{port}"})
    accepted: set[bytes] = set()
    for index in range(10):
        body, ids = _request(index)
        assert _post(agent.http_port, body)[0] == 200
        accepted |= ids
    _fail(card)
    upstream = Upstream(port, status=503).start()
    try:
        wait_until(lambda: upstream.attempts >= 30, timeout=30, message="the backlog is sent and refused")
        time.sleep(4)
        errors = [line for line in agent.log().splitlines() if '"level": "error"' in line]
        assert len(errors) < 3, "\n".join(errors[:5])
        upstream.status = 200
        wait_until(lambda: upstream.span_ids() >= accepted, timeout=60, message="every span answered OK delivered")
    finally:
        upstream.stop()
        assert agent.terminate() == 0, agent.log()


class _SecondHalfFails(Upstream):
    """Answers 503 to a request whose first span is the second half of a queued request (span
    number SPANS or more), as to the later part of a lease sent in parts: that part goes back alone."""

    halves_fail = True
    failed_parts = 0

    def _handler(self, signal: str):
        handle = super()._handler(signal)

        async def second_half_fails(request: web.Request) -> web.Response:
            body = _decompress(await request.read(), request.headers.get("Content-Encoding", ""))
            first = ExportTraceServiceRequest.FromString(body).resource_spans[0].scope_spans[0].spans[0]
            if int.from_bytes(first.span_id[4:], "big") >= SPANS and self.halves_fail:
                with self._lock:
                    self.failed_parts += 1
                return web.Response(status=503, text="the second half fails")
            return await handle(request)

        return second_half_fails


def test_a_lease_delivered_in_part_on_a_read_only_card_does_not_send_the_delivered_part_again(agents, tmp_path, card):
    port = free_port()
    config = _config(tmp_path, card / "queue")
    with open(config) as handle:
        text = handle.read().replace("max_interval: 1s", "max_interval: 1s\n      max_elapsed_time: 1s")
    text = text.replace("storage: file_storage", "storage: file_storage\n      batch:\n"
                        f"        min_size: {SPANS}\n        max_size: {SPANS}")
    with open(config, "w") as handle:
        handle.write(text)
    agent = agents(["run", "--config", config], env={"UPSTREAM": f"http://127.0.0.1:{port}"})
    accepted: set[bytes] = set()
    for index in range(4):
        body, ids = _request(index, 2 * SPANS)
        assert _post(agent.http_port, body)[0] == 200
        accepted |= ids
    _fail(card)
    upstream = _SecondHalfFails(port).start()
    device = None
    try:
        wait_until(lambda: upstream.failed_parts >= 8, timeout=30, message="second halves fail")
        time.sleep(3)
        delivered, lines = len(upstream.requests), _log_lines(agent)
        time.sleep(4)
        assert len(upstream.requests) - delivered == 0, "delivered parts are sent again while the card is read-only"
        assert _log_lines(agent) - lines < 5, agent.log()

        device = _mount_again(card, tmp_path / "card.img")
        upstream.halves_fail = False
        wait_until(lambda: upstream.span_ids() >= accepted, timeout=60, message="every span answered OK delivered")
        wait_until(lambda: agent.metric("edgeagent_queue_items", data_type="traces") == 0, timeout=60,
                   interval=0.5, message=f"the queue empties once writable: {agent.health()[1]}")
    finally:
        upstream.stop()
        assert agent.terminate() == 0, agent.log()
        if device is not None:
            subprocess.run(["umount", str(card)], check=False, capture_output=True)
            subprocess.run(["losetup", "-d", device], check=False, capture_output=True)


def test_an_undecodable_record_met_on_a_read_only_card_is_set_aside_without_spinning(agents, tmp_path, card):
    """A record that does not decode is moved to the dead-letter store; while that move cannot be
    written, the record is not read (and logged) again and again."""
    port = free_port()
    directory = card / "queue"
    config = _config(tmp_path, directory)
    agent = agents(["run", "--config", config], env={"UPSTREAM": f"http://127.0.0.1:{port}"})
    accepted: set[bytes] = set()
    for index in range(20):
        body, ids = _request(index)
        assert _post(agent.http_port, body)[0] == 200
        accepted |= ids
    assert agent.terminate() == 0
    env = lmdb.open(str(directory), max_dbs=64)
    queue_db = env.open_db(b"q:otlphttp/traces")
    with env.begin(write=True, db=queue_db) as txn:
        cursor = txn.cursor(db=queue_db)
        cursor.last()
        last = struct.unpack(">Q", cursor.key())[0]
        txn.put(struct.pack(">Q", last + 1), b"\x01\x01\x01\x00garbage that is no record", db=queue_db)
    env.close()

    agent = agents(["run", "--config", config], env={"UPSTREAM": f"http://127.0.0.1:{port}"}, ports=agent)
    pid = agent.process.pid
    _fail(card)
    upstream = Upstream(port).start()
    try:
        wait_until(lambda: upstream.span_ids() >= accepted, timeout=60, interval=0.5,
                   message=f"the backlog is delivered from a read-only queue: {agent.health()[1]}")
        time.sleep(1)  # the last acks refused
        cpu, lines = _cpu_seconds(pid), _log_lines(agent)
        time.sleep(4)
        spent, logged = _cpu_seconds(pid) - cpu, _log_lines(agent) - lines
        assert spent < 1.0, f"the agent spins on a record it cannot set aside: {spent:.1f} s of CPU in 4 s, " \
            f"{logged} lines logged"
        assert logged < 5, agent.log()[-3000:]
    finally:
        upstream.stop()
    assert agent.terminate() == 0, agent.log()[-3000:]

    _checked_and_mounted_again(tmp_path, card)
    upstream = Upstream(port).start()
    try:
        agent = agents(["run", "--config", config], env={"UPSTREAM": f"http://127.0.0.1:{port}"}, ports=agent)
        wait_until(lambda: agent.health()[1]["dead_letters"] == 1, timeout=60, interval=0.5,
                   message="the record is dead-lettered once writable")
        # (entries: the record written by hand left the queue's item count behind)
        wait_until(lambda: agent.health()[1]["queues"]["otlphttp/traces"]["entries"] == 0, timeout=30,
                   message="the queue empties once writable")
    finally:
        upstream.stop()
    assert agent.terminate() == 0
