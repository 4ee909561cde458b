"""The agent's event loop: asyncio's, with the name lookups and connects of every client in the
process made as Go's dialer makes them, the libraries' too (aiokafka's brokers).

- `getaddrinfo` runs on threads of its own, one lookup of a name at a time (`edgeagent.lookup`),
  never on the default executor, whose threads read the queues: a DNS server that drops queries
  holds up the exporter that asked, not every pipeline.
- `create_connection` to a host name races its addresses when the caller did not choose: the
  next address starts 250 ms into a connect (Happy Eyeballs, RFC 8305, families interleaved), as
  Go's dialer falls back to the other family after 300 ms and grpc-go's pick_first moves on after
  250 ms. asyncio tries the addresses one after the other, each until the caller's timeout: an
  address that drops SYNs (a broker's IPv6 path that leads nowhere) was the only one ever tried,
  and the connect failed every time while the next address answered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from edgeagent import lookup

T = TypeVar("T")

NEXT_ADDRESS_DELAY = 0.25  # seconds into a connect that the next address starts too


class AgentLoop(asyncio.SelectorEventLoop):
    async def getaddrinfo(self, host: lookup.Host, port: lookup.Port, *, family: int = 0, type: int = 0,
                          proto: int = 0, flags: int = 0) -> lookup.Found:
        return await lookup.getaddrinfo(host, port, family, type, proto, flags)

    async def create_connection(  # type: ignore[override]  # asyncio's keywords, passed on as they came
            self, protocol_factory: Callable[[], asyncio.BaseProtocol], host: str | None = None,
            port: int | None = None, **options: Any) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
        arguments: dict[str, Any] = {"host": host, "port": port, **options}
        if host is not None and options.get("happy_eyeballs_delay") is None:
            arguments["happy_eyeballs_delay"] = NEXT_ADDRESS_DELAY
        return await super().create_connection(protocol_factory, **arguments)


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(main) on an AgentLoop."""
    with asyncio.Runner(loop_factory=AgentLoop) as runner:
        return runner.run(main)
