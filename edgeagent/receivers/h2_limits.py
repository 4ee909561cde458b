"""Bounds the h2 library leaves to its user, for grpc_server.

h2 keeps a header block's raw frames (HEADERS, then CONTINUATION) until END_HEADERS and checks
SETTINGS_MAX_HEADER_LIST_SIZE only when HPACK decodes the finished block. SETTINGS_MAX_FRAME_SIZE
applies to every frame type, so with the 1 MiB frames DATA wants, a peer could park 64 frames of
1 MiB (h2's CONTINUATION_BACKLOG) a connection, before any call or auth exists. grpc-go decodes
headers as they arrive (x/net's readMetaFrame) and ends the connection with PROTOCOL_ERROR once
a fragment exceeds twice the header-list bytes still allowed; here the raw block is bounded to
twice the header list size, checked on each frame's 9-byte header, before its payload is buffered.
"""

from __future__ import annotations

from h2.exceptions import ProtocolError
from h2.frame_buffer import FrameBuffer
from hyperframe.frame import Frame

_HEADERS, _PUSH_PROMISE, _CONTINUATION = 0x1, 0x5, 0x9
_FRAMING = 1024  # padding and priority fields a block's frames carry beyond its HPACK bytes


class HeaderBlockBound(FrameBuffer):
    """h2's FrameBuffer, refusing a header block of more than `2 * max_header_list_size` raw bytes."""

    def __init__(self, max_header_list_size: int):
        super().__init__(server=True)
        self.max_header_block = 2 * max_header_list_size + _FRAMING

    def __next__(self) -> Frame:
        if len(self._data) >= 9:
            length, kind = int.from_bytes(self._data[:3], "big"), self._data[3]
            if kind == _CONTINUATION:
                length += sum(len(frame.data) for frame in self._headers_buffer)
            if kind in (_HEADERS, _PUSH_PROMISE, _CONTINUATION) and length > self.max_header_block:
                raise ProtocolError(f"header block larger than {self.max_header_block} bytes")
        return super().__next__()
