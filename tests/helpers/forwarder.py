"""A loopback TCP forwarder whose target can be switched: each new connection is relayed to the
port `target` names when it arrives, while those already open stay where they are. This is what
a DNS name or a proxy in front of a Redis primary does after a failover: new connections reach
the new primary, pooled ones the old."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from tests.helpers.loop_server import LoopServer, pipe


@dataclass
class Forwarder(LoopServer):
    port: int
    target: int
    rate: float = 0.0  # bytes a second each way; 0: as fast as loopback

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        self._writers.add(upstream_writer)  # stop() closes both ends
        try:
            if self.rate:
                await asyncio.gather(_slow_pipe(reader, upstream_writer, self.rate),
                                     _slow_pipe(upstream_reader, writer, self.rate))
            else:
                await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        finally:
            self._writers.discard(upstream_writer)


async def _slow_pipe(source: asyncio.StreamReader, target: asyncio.StreamWriter, rate: float) -> None:
    """`pipe`, at `rate` bytes a second."""
    try:
        while data := await source.read(4096):
            target.write(data)
            await target.drain()
            await asyncio.sleep(len(data) / rate)
    except ConnectionError:
        pass
    finally:
        target.close()
