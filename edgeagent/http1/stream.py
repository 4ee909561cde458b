"""A StreamReader that keeps what arrives as the bytes objects it came in, for the HTTP/1.1 server.

asyncio's StreamReader copies every received block into one bytearray and copies again on each
read; for a 180 KiB OTLP body that is two more large allocations per request (fresh pages the
kernel must fault in), a third of the server's CPU per request. Here a block is kept as it came:
`read` hands a whole block on without a copy, and a head is cut out of the block it is in.

Only what http1.wire uses is served (`readuntil`, `read`, `readexactly`, `at_eof`, and `give_back`
of what a reader took past its own bytes); the flow control (pause reading past twice the limit,
resume at the limit), EOF and errors are StreamReader's own, on its own fields.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable


class ChunkReader(asyncio.StreamReader):
    # StreamReader's own fields and helpers, which its stubs do not declare
    _limit: int
    _eof: bool
    _exception: BaseException | None
    _transport: asyncio.Transport | None
    _paused: bool
    _wakeup_waiter: Callable[[], None]
    _wait_for_data: Callable[[str], Awaitable[None]]

    def __init__(self, limit: int):
        super().__init__(limit=limit)
        self._chunks: deque[bytes] = deque()
        self._offset = 0  # of the first unread byte in _chunks[0]
        self._size = 0  # unread bytes

    def feed_data(self, data: bytes) -> None:  # type: ignore[override]  # transports hand on bytes
        assert not self._eof, "feed_data after feed_eof"
        if not data:
            return
        self._chunks.append(bytes(data))
        self._size += len(data)
        self._wakeup_waiter()
        if self._transport is not None and not self._paused and self._size > 2 * self._limit:
            try:
                self._transport.pause_reading()
            except NotImplementedError:
                self._transport = None
            else:
                self._paused = True

    def _maybe_resume_transport(self) -> None:
        if self._paused and self._size <= self._limit:
            self._paused = False
            assert self._transport is not None
            self._transport.resume_reading()

    @property
    def buffered(self) -> int:
        """Bytes received and not read yet."""
        return self._size

    def at_eof(self) -> bool:
        return self._eof and not self._size

    async def read(self, n: int = -1) -> bytes:
        """Up to `n` bytes (everything buffered with n < 0), b"" at EOF."""
        if self._exception is not None:
            raise self._exception
        if n == 0:
            return b""
        while not self._size and not self._eof:
            await self._wait_for_data("read")
        if not self._size:
            return b""
        chunk = self._chunks[0]
        return self._take(len(chunk) if n < 0 else min(len(chunk), self._offset + n))

    def _take(self, end: int) -> bytes:
        """The first block's bytes from the read offset to `end`, taken off the buffer."""
        chunk = self._chunks[0]
        if self._offset == 0 and end == len(chunk):
            data = self._chunks.popleft()  # the block as it came: no copy
            end = 0
        else:
            data = chunk[self._offset:end]
            if end == len(chunk):
                self._chunks.popleft()
                end = 0
        self._offset = end
        self._size -= len(data)
        self._maybe_resume_transport()
        return data

    def give_back(self, data: bytes) -> None:
        """Puts `data`, just read, back in front of the unread bytes (a reader that read past what
        was its own)."""
        if not data:
            return
        if self._offset:  # the first block's read part goes: the offset is for the block put in front
            self._chunks[0] = self._chunks[0][self._offset:]
            self._offset = 0
        self._chunks.appendleft(data)
        self._size += len(data)

    async def readexactly(self, n: int) -> bytes:
        parts: list[bytes] = []
        left = n
        while left:
            data = await self.read(left)
            if not data:
                raise asyncio.IncompleteReadError(b"".join(parts), n)
            parts.append(data)
            left -= len(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def readuntil(self, separator: bytes = b"\n") -> bytes:  # type: ignore[override]  # one separator
        """The bytes up to and with `separator`; LimitOverrunError past the limit, and
        IncompleteReadError (with what there was) at EOF, as StreamReader's."""
        while True:
            if self._exception is not None:
                raise self._exception
            if self._chunks:
                chunk = self._chunks[0]
                found = chunk.find(separator, self._offset)
                if found >= 0:
                    end = found + len(separator)
                    if end - self._offset > self._limit:
                        raise asyncio.LimitOverrunError("Separator is found, but chunk is longer than limit", 0)
                    return self._take(end)
                if len(self._chunks) > 1:  # a separator across blocks: join the first two, and look again
                    first = self._chunks.popleft()
                    self._chunks[0] = first[self._offset:] + self._chunks[0]
                    self._offset = 0
                    continue
                if self._size > self._limit:
                    raise asyncio.LimitOverrunError("Separator is not found, and chunk exceed the limit", 0)
            if self._eof:
                partial = b"".join(self._chunks)[self._offset:]
                self._chunks.clear()
                self._offset = self._size = 0
                raise asyncio.IncompleteReadError(partial, None)
            await self._wait_for_data("readuntil")
