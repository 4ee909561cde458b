"""A listener out of descriptors says so once, not once per accept() asyncio tries."""

from __future__ import annotations

import asyncio
import logging
import socket

from edgeagent.http1.server import Request, Response, Server
from edgeagent.runtime import loop_errors
from tests.helpers.descriptors import no_free_descriptors


async def _hello(request: Request) -> Response:
    return Response(text="hello")


def test_a_listener_at_the_descriptor_limit_logs_once_not_a_traceback_per_accept_it_tries(caplog):
    """Each connection accepted with the last descriptor made asyncio log its backlog's worth of
    tracebacks (1,024 for the agent's listeners)."""
    async def run() -> list[bytes]:
        loop = asyncio.get_running_loop()
        loop_errors.install(loop)
        server = Server()
        server.get("/page", _hello)
        port = await server.listen(host="127.0.0.1", port=0)
        clients = [socket.socket() for _ in range(2)]
        answers = []
        try:
            with no_free_descriptors(spare=1):
                for client in clients:  # one after the other: the second gets the descriptor the first freed
                    client.setblocking(False)
                    await loop.sock_connect(client, ("127.0.0.1", port))
                    await loop.sock_sendall(client, b"GET /page HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    answer = b""
                    while chunk := await asyncio.wait_for(loop.sock_recv(client, 65536), 5):
                        answer += chunk
                    answers.append(answer)
                    client.close()
        finally:
            for client in clients:
                client.close()
            await server.stop(1.0)
        return answers

    with caplog.at_level(logging.WARNING):
        answers = asyncio.run(run())
    assert all(answer.endswith(b"hello") for answer in answers), answers
    logged = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert [record.name for record in logged] == ["edgeagent.runtime.loop_errors"], len(logged)


def test_a_listener_closed_before_asyncio_retries_it_logs_no_traceback_per_retry(caplog):
    """asyncio retries a listener a second after each accept() that failed for want of a descriptor,
    a backlog's worth of retries; a listener closed (a stop, a reload) before they ran made each of
    them log a traceback ("Invalid file descriptor: -1")."""
    async def run() -> None:
        loop = asyncio.get_running_loop()
        loop_errors.install(loop)
        server = Server()
        server.get("/page", _hello)
        port = await server.listen(host="127.0.0.1", port=0)
        client = socket.socket()
        try:
            with no_free_descriptors(spare=1):
                client.setblocking(False)
                await loop.sock_connect(client, ("127.0.0.1", port))
                await asyncio.sleep(0.2)  # accepted with the last descriptor; the next accepts failed
        finally:
            client.close()
            await server.stop(0.1)
        await asyncio.sleep(1.3)  # the retries run, the listener closed

    with caplog.at_level(logging.WARNING):
        asyncio.run(run())
    logged = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert [record.name for record in logged] == ["edgeagent.runtime.loop_errors"], len(logged)
