"""A TCP server on 127.0.0.1 run by an event loop on a thread of its own, so that a test that
blocks (a real client, a real agent) can talk to it. Subclasses serve each connection in
`_client`; `stop` closes the listener and every connection still open."""

from __future__ import annotations

import asyncio
import threading
from typing import Self


class LoopServer:
    port: int

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for writer in self._writers:
                writer.close()
            await asyncio.sleep(0.05)  # the handlers see their connections end
        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._tracked, "127.0.0.1", self.port)

    async def _tracked(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            await self._client(reader, writer)
        finally:
            self._writers.discard(writer)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


async def pipe(source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
    """Copy `source` into `target` until it ends, then close `target` (one direction of a relay)."""
    try:
        while data := await source.read(65536):
            target.write(data)
            await target.drain()
    except ConnectionError:
        pass
    finally:
        target.close()
