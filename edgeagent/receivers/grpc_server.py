"""A gRPC server for unary calls, on asyncio and the pure-Python HTTP/2 library h2.

Why not grpcio: its HTTP/2 layer refuses every grpc-encoding but identity, gzip and deflate
while it parses headers, before any handler runs, and has no way to register a decompressor; an
otelcol exporter with `compression: zstd` or `snappy` got INTERNAL, which it treats as permanent.
Here a message is decoded by codec's bounded decoders, whatever encoding otelcol sends. This
module serves calls and owns their connections; what a handler sees of a call, and gRPC's own
headers, are grpc_call.py's.

Design note:
- One `Connection` (an asyncio.Protocol, grpc_connection.py) per client owns its h2 state machine; every frame is
  handled on the event loop, a hundred of a connection's at a time (h2_limits), and each call runs as one task
  that reads its message as it arrives.
- Memory is bounded by flow control: received DATA is acknowledged (WINDOW_UPDATE) only when the
  call's task has taken it, so a stream buffers at most its window and a connection at most the
  connection window; header lists (and their raw blocks: h2_limits), concurrent streams and the
  message size are bounded too, and the metadata a connection's calls hold while they run, by
  the connection window again (a call beyond it is answered UNAVAILABLE).
- A stream's reset or error ends that stream only, and so does a header list over the limit
  (grpc-go's RST_STREAM FRAME_SIZE_ERROR) or a header field grpc-go refuses (PROTOCOL_ERROR;
  h2's own header checks, fatal to the connection, are off); a protocol error ends its
  connection (GOAWAY).
- Connection lifetime follows grpc-go's keepalive (otelcol's `keepalive` keys): a connection
  without calls for `idle_timeout` (before the HTTP/2 preface: `handshake_timeout`) gets GOAWAY
  and is closed; one older than `max_age` (±10%) gets GOAWAY and `age_grace` later is closed;
  after `ping_after` without a byte from the peer it is pinged and closed if silent for
  `ping_timeout`; a peer pinging more often than its policy allows is told ENHANCE_YOUR_CALM.
- Shutdown: stop listening, GOAWAY every connection (calls in flight finish, new ones are
  refused with REFUSED_STREAM), then close whatever is left after the grace period.
- TLS: the listener is plain TCP and each connection's handshake runs in a task of its own
  (http1/handshake.py's TLSPort, as the HTTP receiver's), bounded by `handshake_timeout`; a
  handshake that fails leaves nothing for the cycle collector (asyncio's TLS listener did).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING

from edgeagent.http1.handshake import TLSPort
from edgeagent.receivers.grpc_call import Handler, Limits

if TYPE_CHECKING:
    from edgeagent.receivers.grpc_connection import Connection


class GrpcServer:
    """Serves `handlers` ({"/package.Service/Method": handler}) on host:port, TLS with `ssl_context`."""

    def __init__(self, handlers: dict[str, Handler], limits: Limits, ssl_context: ssl.SSLContext | None = None,
                 healthy: Callable[[], bool] | None = None):
        self.handlers = handlers
        self.healthy = healthy  # answers an HTTP/1 `GET /health` on the port (http1_probe) when given
        self.limits = limits
        self.ssl_context = ssl_context  # must offer ALPN "h2" (tls.server_ssl_context(cfg, alpn=["h2"]))
        self._server: asyncio.Server | None = None
        self.connections: set[Connection] = set()
        self._handshakes: set[asyncio.Task[None]] = set()  # TLS connections before their handshake's end

    async def start(self, host: str | None, port: int, sock: socket.socket | None = None) -> int:
        """Listen on host:port, or on `sock` (bound and listening: a unix socket); returns the TCP port
        (useful with port 0), 0 for a unix socket."""
        loop = asyncio.get_running_loop()
        accept: Callable[[], asyncio.Protocol] = self._accept
        if self.ssl_context is not None:
            accept = TLSPort(self._accept, self.ssl_context, self.limits.handshake_timeout, 0.0, self._handshakes,
                             answer_plain_http=False).accept
        if sock is not None:
            self._server = await loop.create_server(accept, sock=sock)
            return 0
        self._server = await loop.create_server(accept, host, port, reuse_address=True)
        return int(self._server.sockets[0].getsockname()[1])

    def _accept(self) -> Connection:
        """A client's connection; h2 is imported with the first one (about 13 ms of CPU and 1.9 MiB
        that an agent nobody calls over gRPC never spends)."""
        from edgeagent.receivers.grpc_connection import Connection

        return Connection(self)

    async def stop(self, grace: float) -> None:
        """Stop listening; calls in flight get `grace` seconds to finish, then everything closes."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for handshake in list(self._handshakes):  # connections not served yet
            handshake.cancel()
        connections = list(self.connections)
        for connection in connections:
            connection.go_away()
        calls = [task for connection in connections for task in connection.tasks.values()]
        if calls:
            await asyncio.wait(calls, timeout=grace)
        for connection in connections:
            connection.close()
        await server.wait_closed()
