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
            await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        finally:
            self._writers.discard(upstream_writer)
