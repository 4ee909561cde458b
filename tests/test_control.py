"""The control socket: commands over a unix socket, answered as JSON or bytes, errors named; a
client that sends nothing or half a request is let go, and the CLI gives up on an agent that
does not answer."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import select
import socket
import stat
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from edgeagent.runtime import control
from tests.helpers.cli import cli


async def _status(params: dict[str, Any]) -> dict[str, Any]:
    return {"running": True, "asked": params}


async def _export(params: dict[str, Any]) -> bytes:
    return b"\x00" * 300_000


async def _refuse(params: dict[str, Any]) -> None:
    raise KeyError("no queue named 'x'")


def test_commands_answer_json_or_bytes_and_errors_become_exceptions(tmp_path):
    path = str(tmp_path / "state" / control.SOCKET_NAME)

    async def scenario() -> tuple[Any, Any, str, str, int]:
        server = control.ControlServer(path, {"status": _status, "export": _export, "purge": _refuse})
        await server.start()
        try:
            status = await control.call(path, "status", {"n": 1})
            exported = await control.call(path, "export")
            with pytest.raises(RuntimeError) as refused:
                await control.call(path, "purge", {"queue": "x"})
            with pytest.raises(RuntimeError) as unknown:
                await control.call(path, "nothing")
            mode = stat.S_IMODE(os.stat(path).st_mode)
        finally:
            await server.shutdown()
        return status, exported, str(refused.value), str(unknown.value), mode

    status, exported, refused, unknown, mode = asyncio.run(scenario())
    assert status == {"running": True, "asked": {"n": 1}}
    assert exported == b"\x00" * 300_000
    assert "no queue named 'x'" in refused and unknown == "unknown command"
    assert mode == 0o600
    assert not os.path.exists(path)  # removed at shutdown


def test_a_call_without_an_agent_is_a_connection_error(tmp_path):
    with pytest.raises(ConnectionError):
        asyncio.run(control.call(str(tmp_path / "control.sock"), "status"))


HEAD = b"POST /status HTTP/1.1\r\nHost: edgeagent\r\nContent-Type: application/json\r\n"


@pytest.mark.parametrize(("sent", "answer"), [
    (b"", b""),  # connects, then nothing
    (HEAD, b""),  # half a head
    (HEAD + b"Content-Length: 20\r\n\r\n{\"n\": ", b"HTTP/1.1 408 "),  # half a body
], ids=["nothing", "half-a-head", "half-a-body"])
def test_a_client_that_stops_sending_is_disconnected_within_the_timeout(tmp_path, sent, answer):
    path = str(tmp_path / control.SOCKET_NAME)

    async def scenario() -> tuple[bytes, float]:
        server = control.ControlServer(path, {"status": _status}, wait_for_request=0.5, read_timeout=0.5)
        await server.start()
        loop = asyncio.get_running_loop()
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.setblocking(False)
        try:
            await loop.sock_connect(client, path)
            await loop.sock_sendall(client, sent)
            started = time.monotonic()
            received = b""
            async with asyncio.timeout(10):  # without a server timeout: fails here, not for ever
                while chunk := await loop.sock_recv(client, 4096):
                    received += chunk
            return received, time.monotonic() - started
        finally:
            client.close()
            await server.shutdown()

    received, waited = asyncio.run(scenario())
    assert received.startswith(answer)
    assert waited < 0.5 + 1.5  # the timeout, and the linger of a refused request at most


ANSWER = 8 << 20  # far more than the socket buffers take: a client that does not read holds the rest up


async def _large(params: dict[str, Any]) -> bytes:
    return b"\x01" * ANSWER


SLOW_ANSWER = 2 << 20  # two of the server's 1 MiB slices: at 640 KiB/s each took longer than the timeout


async def _slow_answer(params: dict[str, Any]) -> bytes:
    return b"\x01" * SLOW_ANSWER


def test_clients_that_never_read_their_answer_are_cut_and_others_still_served(tmp_path):
    """A client that asks for a large answer and never reads it once held its connection, and the
    answer in memory, until the agent stopped; a few such clients piled up. Now each is cut once it
    takes nothing for the write stall timeout, and a client that reads is served meanwhile."""
    path = str(tmp_path / control.SOCKET_NAME)

    async def scenario() -> tuple[float, list[float], list[int]]:
        server = control.ControlServer(path, {"status": _status, "export": _large}, wait_for_request=30,
                                       write_stall_timeout=0.5)
        await server.start()
        loop = asyncio.get_running_loop()
        stuck = []
        try:
            for _ in range(3):
                client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                client.setblocking(False)
                await loop.sock_connect(client, path)
                await loop.sock_sendall(client, b"POST /export HTTP/1.1\r\nHost: edgeagent\r\n"
                                                b"Content-Length: 0\r\n\r\n")  # and never reads
                stuck.append(client)
            started = time.monotonic()
            assert await control.call(path, "status", timeout=5) == {"running": True, "asked": {}}
            served = time.monotonic() - started
            poller = select.poll()
            for client in stuck:
                poller.register(client, select.POLLHUP)
            cut: dict[int, float] = {}
            for _ in range(100):  # at most 5 s: the peer's close shows as a hang-up, with nothing read
                cut.update((fd, time.monotonic() - started) for fd, _ in poller.poll(0) if fd not in cut)
                if len(cut) == len(stuck):
                    break
                await asyncio.sleep(0.05)
            assert len(cut) == len(stuck), f"{len(stuck) - len(cut)} of {len(stuck)} still open after 5 s"
            taken = []
            for client in stuck:  # what each got before the cut: never the whole answer
                client.setblocking(True)
                client.settimeout(5)
                received = 0
                while chunk := client.recv(1 << 20):
                    received += len(chunk)
                taken.append(received)
            return served, sorted(cut.values()), taken
        finally:
            for client in stuck:
                client.close()
            await server.shutdown()

    served, cut, taken = asyncio.run(scenario())
    assert served < 2.0
    assert cut[-1] < 0.5 + 2.0, cut
    assert all(received < ANSWER for received in taken), taken


@pytest.mark.e2e  # waits seconds by design
def test_a_client_reading_its_answer_slowly_gets_all_of_it_and_one_that_stops_is_cut(tmp_path):
    """The stall timeout once ran per MiB of the answer (and asyncio's drain waits for the buffer
    to empty), so a client steadily reading 640 KiB/s with a 0.5 s timeout was cut in the middle.
    Only a client that takes nothing for the whole timeout is cut: within about twice it."""
    path = str(tmp_path / control.SOCKET_NAME)

    async def read(client: socket.socket, limit: int) -> int:
        """At most 32 KiB every 50 ms until `limit` bytes or the end; the bytes read."""
        received = 0
        for _ in range(400):  # at most 20 s
            await asyncio.sleep(0.05)
            taken = 0
            while taken < 32 << 10:
                try:
                    chunk = client.recv((32 << 10) - taken)
                except BlockingIOError:
                    break
                if not chunk:
                    return received + taken
                taken += len(chunk)
            received += taken
            if received >= limit:
                break
        return received

    async def scenario() -> tuple[int, float]:
        server = control.ControlServer(path, {"export": _slow_answer}, write_stall_timeout=0.5)
        await server.start()
        loop = asyncio.get_running_loop()
        clients = []
        try:
            for _ in range(2):
                client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                client.setblocking(False)
                clients.append(client)
                await loop.sock_connect(client, path)
                await loop.sock_sendall(client, b"POST /export HTTP/1.1\r\nHost: edgeagent\r\n"
                                                b"Content-Length: 0\r\n\r\n")
            slow, stopping = clients
            reading = asyncio.create_task(read(slow, SLOW_ANSWER + 1))  # the connection stays open
            await read(stopping, 256 << 10)
            stopped = time.monotonic()
            poller = select.poll()
            poller.register(stopping, select.POLLHUP)
            for _ in range(100):  # at most 5 s
                if poller.poll(0):
                    break
                await asyncio.sleep(0.02)
            cut_after = time.monotonic() - stopped
            return await reading, cut_after
        finally:
            for client in clients:
                client.close()
            await server.shutdown()

    whole, cut_after = asyncio.run(scenario())
    assert whole > SLOW_ANSWER, whole  # the head and all of the body
    assert cut_after < 2 * 0.5 + 0.5, cut_after


@pytest.fixture
def silent_agent(tmp_path) -> Iterator[str]:
    """A state directory whose control socket accepts connections and never answers."""
    state = tmp_path / "state"
    state.mkdir()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(state / control.SOCKET_NAME))
    listener.listen()
    listener.settimeout(0.2)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])  # and never read from, never answered
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield str(state)
    finally:
        stop.set()
        thread.join(5)
        for connection in accepted:
            connection.close()
        listener.close()


@pytest.mark.parametrize("verb", [["status"], ["reload"], ["queue", "stats"]])
def test_a_command_to_an_agent_that_never_answers_fails_within_its_timeout_naming_the_socket(silent_agent, verb):
    started = time.monotonic()
    result = cli(silent_agent, *verb, "--timeout", "0.2", check=False)
    took = time.monotonic() - started
    message = result.stderr.decode()
    assert result.returncode != 0 and b"Traceback" not in result.stderr
    assert os.path.join(silent_agent, control.SOCKET_NAME) in message
    assert "did not answer" in message and "--timeout" in message
    assert took < 0.2 + 8  # the bound, and the interpreter's start with the agent's imports


def test_a_second_agent_on_the_same_state_directory_leaves_the_first_ones_control_socket(tmp_path):
    """Two agents whose queues live apart may share a state directory: the second one replaced the
    first one's socket, so `status`, `reload` and `queue purge` went to the wrong agent, and once it
    stopped the first one answered nothing ("not running") until it was restarted. A socket file
    nobody listens on (left by a kill -9) is still replaced."""
    path = str(tmp_path / "state" / control.SOCKET_NAME)

    async def first(params: dict[str, Any]) -> str:
        return "first"

    async def second(params: dict[str, Any]) -> str:
        return "second"

    async def scenario() -> tuple[Any, Any, Any]:
        one = control.ControlServer(path, {"who": first})
        two = control.ControlServer(path, {"who": second})
        await one.start()
        try:
            await two.start()
            during = await control.call(path, "who")
            await two.shutdown()
            after = await control.call(path, "who")
        finally:
            await one.shutdown()
        stale = socket.socket(socket.AF_UNIX)  # bound and closed: a file nobody listens on
        stale.bind(path)
        stale.close()
        await two.start()
        try:
            replaced = await control.call(path, "who")
        finally:
            await two.shutdown()
        return during, after, replaced

    assert asyncio.run(scenario()) == ("first", "first", "second")


@pytest.mark.e2e  # runs the CLI in a process of its own
def test_a_command_that_fails_in_the_agent_is_reported_with_its_reason(tmp_path):
    """`queue compact` on a nearly full disk: the agent answered 500 with a plain-text body, and the
    CLI ended in a JSONDecodeError traceback instead of saying that the disk is full."""
    state = tmp_path / "state"

    async def compact(params: dict[str, Any]) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    loop = asyncio.new_event_loop()
    server = control.ControlServer(str(state / control.SOCKET_NAME), {"compact": compact})
    loop.run_until_complete(server.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        result = cli(state, "queue", "compact", check=False)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.run_until_complete(server.shutdown())
        loop.close()
    assert result.returncode == 1 and b"Traceback" not in result.stderr, result.stderr.decode()
    assert "compact" in result.stderr.decode() and "No space left on device" in result.stderr.decode()


def test_a_streamed_export_reaches_the_sink_piece_by_piece_and_a_failure_midway_is_raised(tmp_path):
    """The answer is chunked: the client never holds it whole, and one that breaks off (the queue
    read failed after some of it went out) is an error, never a short export taken for whole."""
    path = str(tmp_path / "state" / control.SOCKET_NAME)
    piece = b"\x01" * (control.STREAM_PIECE + 1)

    def parts(fail: bool) -> Iterator[bytes]:
        for _ in range(6):
            yield piece
        if fail:
            raise OSError("the queue file could not be read")

    async def stream(params: dict[str, Any]) -> Any:
        return control.from_thread(lambda: parts(bool(params.get("fail"))))

    async def scenario() -> tuple[list[int], Any, BaseException | None]:
        server = control.ControlServer(path, {"export": stream})
        await server.start()
        try:
            sizes: list[int] = []
            answer = await control.call(path, "export", {}, sink=lambda chunk: sizes.append(len(chunk)))
            try:
                await control.call(path, "export", {"fail": True}, sink=lambda chunk: None)
            except control.AnswerBrokenOff as exc:
                return sizes, answer, exc
            return sizes, answer, None
        finally:
            await server.shutdown()

    sizes, answer, broken = asyncio.run(scenario())
    assert answer is None
    assert sum(sizes) == 6 * len(piece)
    assert max(sizes) < 4 * len(piece)  # pieces as they came, never the whole
    assert broken is not None


def test_a_client_that_leaves_a_streamed_export_stops_its_reading_thread(tmp_path):
    path = str(tmp_path / "state" / control.SOCKET_NAME)
    produced = 0
    finished = threading.Event()

    def endless() -> Iterator[bytes]:
        nonlocal produced
        try:
            while True:
                produced += 1
                yield b"\x02" * control.STREAM_PIECE
        finally:
            finished.set()

    async def stream(params: dict[str, Any]) -> Any:
        return control.from_thread(endless)

    async def scenario() -> None:
        server = control.ControlServer(path, {"export": stream})
        await server.start()
        try:
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(b"POST /export HTTP/1.1\r\nHost: edgeagent\r\nContent-Length: 0\r\n\r\n")
            await reader.readexactly(control.STREAM_PIECE)
            writer.close()
            for _ in range(250):  # at most 5 s
                if finished.is_set():
                    break
                await asyncio.sleep(0.02)
        finally:
            await server.shutdown()

    asyncio.run(scenario())
    assert finished.is_set()
    assert produced < 4 * control.STREAM_AHEAD  # read ahead a few pieces, never on to the end


def test_a_sink_that_fails_ends_the_call_with_its_own_error(tmp_path):
    """`edgeagent queue export | head -c 10`: the closed pipe is the CLI's to handle (quietly), never
    taken for an agent that is not there (which would send the CLI on to read the files)."""
    path = str(tmp_path / "state" / control.SOCKET_NAME)

    async def stream(params: dict[str, Any]) -> Any:
        return control.from_thread(lambda: iter([b"\x03" * control.STREAM_PIECE] * 3))

    def closed_pipe(chunk: bytes) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    async def scenario() -> BaseException | None:
        server = control.ControlServer(path, {"export": stream})
        await server.start()
        try:
            await control.call(path, "export", {}, sink=closed_pipe)
        except Exception as exc:  # noqa: BLE001 - which one is what is tested
            return exc
        finally:
            await server.shutdown()
        return None

    error = asyncio.run(scenario())
    assert type(error) is BrokenPipeError


LETTERS = [{"directory": "q", "seq": 1, "signal": "traces", "items": 3, "queue": "otlphttp/traces", "status": 400,
            "reason": "refused"},
           {"directory": "q", "seq": 2, "signal": None, "items": None, "queue": "otlphttp/logs", "status": None,
            "reason": "the record does not decode"}]


@contextlib.contextmanager
def _serving(state, handlers) -> Iterator[None]:
    """A control server for `handlers` in a loop of its own, while the CLI runs in its process."""
    loop = asyncio.new_event_loop()
    server = control.ControlServer(str(state / control.SOCKET_NAME), handlers)
    loop.run_until_complete(server.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.run_until_complete(server.shutdown())
        loop.close()


@pytest.mark.e2e  # runs the CLI in a process of its own
def test_dead_letters_listed_row_by_row_read_as_an_earlier_agents_whole_answer(tmp_path):
    """The agent streams the list as JSON lines (it held every letter to answer at once); the CLI
    prints the same JSON array and text from it, and from an agent that still answers the old way."""
    async def streamed(params: dict[str, Any]) -> Any:
        return control.from_thread(lambda: (json.dumps(row).encode() + b"\n" for row in LETTERS))

    async def whole(params: dict[str, Any]) -> Any:
        return LETTERS

    async def none(params: dict[str, Any]) -> Any:
        return control.from_thread(lambda: iter(()))

    printed = {}
    for name, handler in (("streamed", streamed), ("whole", whole)):
        state = tmp_path / name
        with _serving(state, {"dead-letter-list": handler}):
            printed[name] = (cli(state, "queue", "dead-letter", "list", "--json").stdout,
                             cli(state, "queue", "dead-letter", "list").stdout)
    assert printed["streamed"] == printed["whole"]
    assert printed["streamed"][0].decode() == json.dumps(LETTERS, indent=2) + "\n"
    text = printed["streamed"][1].decode().splitlines()
    assert len(text) == 2 and "seq=1" in text[0] and "status=400 refused" in text[0] and "items=None" in text[1]
    empty = tmp_path / "empty"
    with _serving(empty, {"dead-letter-list": none}):
        assert cli(empty, "queue", "dead-letter", "list", "--json").stdout == b"[]\n"


def test_a_refusal_raised_as_a_key_error_reads_as_its_message_not_its_repr(tmp_path):
    """A running agent's `queue purge --queue typo` put the message in the quotes str(KeyError)
    adds, where a stopped one's said it plainly."""
    path = str(tmp_path / "state" / control.SOCKET_NAME)

    async def scenario() -> str:
        server = control.ControlServer(path, {"purge": _refuse})
        await server.start()
        try:
            await control.call(path, "purge", {"queue": "x"})
        except RuntimeError as refused:
            return str(refused)
        finally:
            await server.shutdown()
        return "answered"

    assert asyncio.run(scenario()) == "no queue named 'x'"
