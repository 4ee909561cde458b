"""Corrupted queue files never stop the agent: the file is moved aside, a record is quarantined."""

from __future__ import annotations

import json
import os
import struct

import lmdb
import pytest
import zstandard
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from edgeagent.queue import record
from tests.helpers.net import free_port, wait_until
from tests.helpers.sdk import send_spans
from tests.helpers.upstream import Upstream


def _queue_dir(state):
    return state / "queue"


def _fill(agents, state, upstream_url: str) -> None:
    agent = agents(["run", "--state-dir", str(state), "--upstream", upstream_url])
    send_spans("http", agent.http_port, 2000, batch=100)
    assert agent.terminate() == 0


def _garble(path, keep_header: bool) -> None:
    size = os.path.getsize(path)
    with open(path, "r+b") as handle:
        handle.seek(2 * 4096 if keep_header else 0)  # past or over LMDB's two meta pages
        handle.write(os.urandom(min(size, 64 * 1024)))


@pytest.mark.parametrize("damage", ["garbage over the whole header", "garbage over the pages", "truncated"])
def test_a_data_file_that_does_not_open_is_moved_aside_and_a_fresh_queue_starts(agents, upstream, tmp_path, damage):
    state = tmp_path / "state"
    _fill(agents, state, f"http://127.0.0.1:{free_port()}")
    data = _queue_dir(state) / "data.mdb"
    if damage == "truncated":
        os.truncate(data, os.path.getsize(data) // 2)
    else:
        _garble(data, keep_header=damage == "garbage over the pages")

    agent = agents(["run", "--state-dir", str(state), "--upstream", upstream.url])
    assert agent.metric("edgeagent_queue_corruptions") == 1
    assert any(name.startswith("corrupt-") for name in os.listdir(_queue_dir(state)))
    assert "moved it to" in agent.log()
    sent = send_spans("grpc", agent.grpc_port, 100)
    wait_until(lambda: upstream.span_ids() >= sent, timeout=30, message="new data delivered")
    assert agent.terminate() == 0


def test_an_undecodable_record_is_quarantined_and_the_rest_is_delivered(agents, tmp_path):
    port = free_port()
    state = tmp_path / "state"
    agent = agents(["run", "--state-dir", str(state), "--upstream", f"http://127.0.0.1:{port}",
                    "--set", "processors::batch::send_batch_size=1"])
    first = send_spans("http", agent.http_port, 100)
    assert agent.terminate() == 0

    env = lmdb.open(str(_queue_dir(state)), max_dbs=64)
    queue_db = env.open_db(b"q:otlphttp/traces")
    with env.begin(write=True, db=queue_db) as txn:
        cursor = txn.cursor(db=queue_db)
        cursor.last()
        last = struct.unpack(">Q", cursor.key())[0]
        txn.put(struct.pack(">Q", last + 1), b"\x01\x01\x01\x00garbage that is no record", db=queue_db)
    env.close()

    upstream = Upstream(port).start()
    try:
        agent = agents(["run", "--state-dir", str(state), "--upstream", upstream.url], ports=agent)
        second = send_spans("http", agent.http_port, 100)
        wait_until(lambda: upstream.span_ids() >= first | second, timeout=30, message="records around it delivered")
        wait_until(lambda: agent.metric("edgeagent_corrupt_records") == 1, timeout=10, message="quarantine counted")
        # counted when the record is set aside; in the dead-letter store once that write commits
        wait_until(lambda: agent.health()[1]["dead_letters"] == 1, timeout=10, message="the record dead-lettered")
    finally:
        upstream.stop()
    assert agent.terminate() == 0


def test_a_record_whose_request_does_not_parse_is_quarantined_and_later_spans_are_delivered(agents, tmp_path):
    """A bit flip in a record written without a checksum: zstd still decompresses it, but the
    request does not parse. It used to kill every sender worker, after every restart."""
    port = free_port()
    state = tmp_path / "state"
    agent = agents(["run", "--state-dir", str(state), "--upstream", f"http://127.0.0.1:{port}"])
    first = send_spans("http", agent.http_port, 400, batch=20)
    agent.kill()  # SIGKILL: everything acknowledged is on disk
    agent.process.wait(10)

    env = lmdb.open(str(_queue_dir(state)), max_dbs=64)
    queue_db = env.open_db(b"q:otlphttp/traces")
    with env.begin(write=True, db=queue_db) as txn:
        keys = [bytes(key) for key, _ in txn.cursor()]
        key = keys[len(keys) // 2]
        value = bytes(txn.get(key))
        header = record.decode_header(value)
        request = zstandard.ZstdDecompressor().decompress(value[header.body_offset:])
        lost = {s.span_id for rs in ExportTraceServiceRequest.FromString(request).resource_spans
                for ss in rs.scope_spans for s in ss.spans}
        damaged = b"\x0f" + request  # field 1 with wire type 7: no protobuf parser accepts it
        txn.put(key, value[:header.body_offset] + zstandard.ZstdCompressor().compress(damaged))
    env.close()

    upstream = Upstream(port).start()
    try:
        agent = agents(["run", "--state-dir", str(state), "--upstream", upstream.url], ports=agent)
        second = send_spans("http", agent.http_port, 5040, batch=512)
        wait_until(lambda: upstream.span_ids() >= (first - lost) | second, timeout=60,
                   message="every span but the damaged record's delivered")
        wait_until(lambda: agent.metric("edgeagent_corrupt_records") == 1, timeout=10, message="quarantine counted")
        letters = [line for line in agent.log().splitlines() if "does not decode" in line]
        assert len(letters) == 1 and agent.health()[1]["dead_letters"] == 1
        assert not upstream.span_ids() & lost
    finally:
        upstream.stop()
    assert agent.terminate() == 0


def _past_the_roots(data) -> int:
    """The file length that keeps the main tree's root and every sub-database's root page."""
    from edgeagent.queue import salvage

    with open(data, "rb") as handle:
        meta = salvage._newest_meta(handle)
        assert meta is not None
        page_size, main_root = meta
        file = salvage._File(handle, page_size, os.fstat(handle.fileno()).st_size // page_size)
        roots = [salvage._DB.unpack_from(descriptor)[7] for _, descriptor in salvage._walk(file, main_root, set())
                 if len(descriptor) >= salvage._DB.size]
    return (max(root for root in (main_root, *roots) if root != salvage._INVALID) + 1) * page_size  # not empty


def test_a_truncated_data_file_is_salvaged_into_the_fresh_queue(agents, tmp_path):
    port = free_port()
    state = tmp_path / "state"
    agent = agents(["run", "--state-dir", str(state), "--upstream", f"http://127.0.0.1:{port}"])
    first = send_spans("http", agent.http_port, 3000, batch=50)
    assert agent.terminate() == 0
    data = _queue_dir(state) / "data.mdb"
    env = lmdb.open(str(_queue_dir(state)), max_dbs=64, readonly=True)
    with env.begin() as txn:
        records = txn.stat(env.open_db(b"q:otlphttp/traces", txn=txn, create=False))["entries"]
    env.close()
    # cut off the last quarter, but not the trees' roots: where LMDB put them depends on how the
    # requests were grouped into commits, and with a root gone nothing below it can be found
    os.truncate(data, max(os.path.getsize(data) * 3 // 4, _past_the_roots(data)))

    upstream = Upstream(port).start()
    try:
        agent = agents(["run", "--state-dir", str(state), "--upstream", upstream.url], ports=agent)
        salvaged = agent.metric("edgeagent_queue_salvaged_records")
        assert salvaged > 0
        assert salvaged + agent.metric("edgeagent_queue_lost_records") == records
        wait_until(lambda: agent.metric("otelcol_exporter_queue_size") == 0 and upstream.span_ids(), timeout=30,
                   message="salvaged spans delivered")
        assert upstream.span_ids() <= first
        assert "records that could still be read" in agent.log()
    finally:
        upstream.stop()
    assert agent.terminate() == 0


def test_the_queue_commands_show_damaged_records_instead_of_failing_on_them(agents, tmp_path):
    """One record that does not decode made `queue peek` and `queue export` fail for the whole queue
    (the agent quarantines it only when a lease reaches it: behind a backlog, during an outage, it
    waits there), and one quarantined record made `queue dead-letter list` or `export` fail for
    every dead letter: the commands an operator rescues data with."""
    from edgeagent.queue import deadletter
    from tests.helpers.cli import cli, cli_json

    state = tmp_path / "state"
    agent = agents(["run", "--state-dir", str(state), "--upstream", f"http://127.0.0.1:{free_port()}"])
    sent = send_spans("http", agent.http_port, 300, batch=100)
    assert agent.terminate() == 0

    env = lmdb.open(str(_queue_dir(state)), max_dbs=64)
    queue_db, letters_db = env.open_db(b"q:otlphttp/traces"), env.open_db(b"deadletter")
    with env.begin(write=True) as txn:
        cursor = txn.cursor(db=queue_db)
        cursor.last()
        last = struct.unpack(">Q", cursor.key())[0]
        txn.put(struct.pack(">Q", last + 1), b"\x01\x01\x01\x00garbage that is no record", db=queue_db)
        for damaged in (b"short", b"\x01\x01\x01\x00garbage that is no record"):
            deadletter.put(txn, letters_db, {"queue": "otlphttp/traces", "reason": "corrupt"}, damaged, 0)
    env.close()

    rows = cli_json(state, "queue", "peek", "10")
    assert [row["seq"] for row in rows] == [*range(1, last + 1), last + 1]
    assert "error" in rows[-1] and all(row["items"] == row["checked_items"] for row in rows[:-1])
    assert "does not decode" in cli(state, "queue", "peek", "10").stdout.decode()
    lines = cli(state, "queue", "export", "--format", "otlp-json").stdout.splitlines()
    assert {bytes.fromhex(span["spanId"]) for line in lines for rs in json.loads(line)["resourceSpans"]
            for ss in rs["scopeSpans"] for span in ss["spans"]} == sent
    assert len(cli(state, "queue", "export", "--format", "otlp-proto").stdout) > 0

    letters = cli_json(state, "queue", "dead-letter", "list")
    assert [letter["reason"] for letter in letters] == ["corrupt", "corrupt"]
    assert cli(state, "queue", "dead-letter", "list").stdout.decode().count("corrupt") == 2
    exported = [json.loads(line) for line in cli(state, "queue", "dead-letter", "export").stdout.splitlines()]
    assert [line["description"]["reason"] for line in exported] == ["corrupt", "corrupt"]


def _leaves(data, name: bytes) -> list[int]:
    """The leaf pages of sub-database `name`, in key order."""
    from edgeagent.queue import salvage

    leaves: list[int] = []
    with open(data, "rb") as handle:
        meta = salvage._newest_meta(handle)
        assert meta is not None
        page_size, main_root = meta
        file = salvage._File(handle, page_size, os.fstat(handle.fileno()).st_size // page_size)
        root = salvage._DB.unpack_from(dict(salvage._walk(file, main_root, set()))[name])[7]

        def down(pgno: int) -> None:
            page = file.page(pgno)
            assert page is not None
            flags, lower = salvage._HEADER.unpack_from(page)[2:4]
            if flags & salvage._P_LEAF:
                leaves.append(pgno)
                return
            for pointer in struct.unpack_from(f"<{(lower - salvage._HEADER.size) // 2}H", page, salvage._HEADER.size):
                lo, hi, high = salvage._NODE.unpack_from(page, pointer)[:3]
                down(lo | hi << 16 | high << 32)

        down(root)
    return leaves


def test_a_page_zeroed_deep_in_the_queue_is_salvaged_by_the_start_after_the_run_that_met_it(agents, tmp_path):
    """An SD card that loses a write leaves a page of zeros in the middle of a queue's B-tree.
    LMDB opens the file and reads both ends of every tree; the lease read that steps onto the page
    aborts the process in LMDB's C code. Every start aborted again at the same page, for good."""
    port = free_port()
    state = tmp_path / "state"
    args = ["run", "--state-dir", str(state), "--upstream", f"http://127.0.0.1:{port}",
            "--set", "processors::batch::send_batch_size=5"]
    agent = agents(args)
    first = send_spans("http", agent.http_port, 750, batch=5)  # small records: many leaf pages
    assert agent.terminate() == 0
    data = _queue_dir(state) / "data.mdb"
    leaves = _leaves(data, b"q:otlphttp/traces")
    assert len(leaves) >= 5
    with open(data, "r+b") as handle:
        handle.seek(leaves[len(leaves) // 2] * 4096)
        handle.write(bytes(4096))

    upstream = Upstream(port).start()
    try:
        try:  # the run that meets the page ends, before it is ready or soon after
            assert agents(args, ports=agent).process.wait(30) != 0
        except RuntimeError as exc:
            assert "agent exited" in str(exc)
        agent = agents(args, ports=agent)  # as systemd's Restart=on-failure starts it again
        assert agent.metric("edgeagent_queue_corruptions") == 1
        lost = agent.metric("edgeagent_queue_lost_records")
        assert 0 < lost <= 100
        assert "is damaged (page" in agent.log()
        wait_until(lambda: agent.metric("otelcol_exporter_queue_size") == 0, timeout=30, message="the rest delivered")
        delivered = upstream.span_ids()
        assert 0 < len(first - delivered) <= 5 * lost and delivered <= first
        second = send_spans("http", agent.http_port, 200)
        wait_until(lambda: upstream.span_ids() >= second, timeout=30, message="new data delivered")
    finally:
        upstream.stop()
    assert agent.terminate() == 0
    assert not (_queue_dir(state) / "edgeagent.running").exists()


def test_a_page_lost_under_the_running_agent_stops_it_once_and_the_next_start_salvages_the_file(agents, tmp_path):
    """A commit that reaches a damaged page fails with MDB_CORRUPTED, and so does every later one
    that reaches it: acks failed for good, and the same data went out again and again."""
    from tests.helpers.hostile import spans_request
    from tests.helpers.otlp_post import post

    port = free_port()
    state = tmp_path / "state"
    args = ["run", "--state-dir", str(state), "--upstream", f"http://127.0.0.1:{port}",
            "--set", "processors::batch::send_batch_size=5"]
    agent = agents(args)
    first = send_spans("http", agent.http_port, 750, batch=5)
    data = _queue_dir(state) / "data.mdb"
    fd = os.open(data, os.O_WRONLY)  # the map is shared: the running agent reads the zeros at once
    try:
        os.pwrite(fd, bytes(4096), _leaves(data, b"q:otlphttp/traces")[-1] * 4096)  # where the next put goes
    finally:
        os.close(fd)
    status, headers = post(agent.http_port, spans_request(5))
    assert status == 503 and headers["Retry-After"]
    assert agent.process.wait(15) == 1
    assert "is damaged (mdb_put: MDB_CORRUPTED" in agent.log()
    assert (_queue_dir(state) / "edgeagent.damaged").exists()

    upstream = Upstream(port).start()
    try:
        agent = agents(args, ports=agent)  # as its supervisor starts it again
        assert agent.metric("edgeagent_queue_corruptions") == 1
        lost = agent.metric("edgeagent_queue_lost_records")
        assert 0 < lost <= 100
        wait_until(lambda: agent.metric("otelcol_exporter_queue_size") == 0, timeout=30, message="the rest delivered")
        assert len(first - upstream.span_ids()) <= 5 * lost
        assert not (_queue_dir(state) / "edgeagent.damaged").exists()
    finally:
        upstream.stop()
    assert agent.terminate() == 0
