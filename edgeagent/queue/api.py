"""What the sender and the tail-sampling stage may ask of the queue: the seams, as Protocols.

The sender drains one queue (`ConsumerQueue`). The tail-sampling stage keeps its own table of
records next to the export queues and moves decided traces into them atomically
(`StageStore`, `StageTransaction`). Neither sees LMDB: records come back as `StoredRecord`,
and records that do not decode come back as `Corrupt` for the caller to quarantine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from edgeagent.signals import Signal

T = TypeVar("T")


@dataclass(frozen=True)
class StoredRecord:
    """One record of a table: its key, header fields and (when read) its request."""

    key: bytes
    items: int
    size: int  # bytes stored
    enqueued_ms: int
    batch_key: bytes = b""
    body: bytes = b""  # the serialized request; empty when only headers were read


@dataclass(frozen=True)
class Corrupt:
    """A record that does not decode, with why; quarantine it by key."""

    key: bytes
    reason: str


class QueueLease(Protocol):
    """Records handed to one consumer, in queue order; `ack`, `release`, `dead_letter` end it."""

    seqs: list[int]
    bodies: list[bytes]
    items: int
    attempts: int
    done: bool


class ConsumerQueue(Protocol):
    """What the sender asks of the queue it drains."""

    name: str
    signal: Signal

    async def wait_available(self) -> None: ...

    async def wait_items(self, count: int, deadline: float) -> None: ...

    @property
    def available_items(self) -> int:
        """Items queued and not leased."""

    async def lease(self, max_items: int, max_entries: int = 0, max_bytes: int = 0,
                    newest_first: bool = False) -> QueueLease | None: ...

    def ack(self, lease: QueueLease) -> asyncio.Future[Any]: ...

    def release(self, lease: QueueLease, attempts: int | None = None,
                error: BaseException | None = None) -> asyncio.Future[Any] | None:
        """Give the records back; with `error` (retries ran out) those a client waits for go back to it."""
        ...

    def requeue(self, lease: QueueLease, body: bytes, items: int, attempts: int) -> asyncio.Future[Any]:
        """Give back only what was not delivered of a lease, `body`, in place of its records."""
        ...

    async def dead_letter(self, lease: QueueLease, description: dict[str, Any],
                          bodies: list[tuple[bytes, int]] | None = None) -> None: ...

    def quarantine(self, lease: QueueLease, indexes: list[int], reason: str) -> None: ...

    def waited_for(self, lease: QueueLease) -> bool:
        """Whether a client waits for (or gave up on) a record of the lease (wait_for_result)."""
        ...

    async def abandoned(self, lease: QueueLease) -> None:
        """Return once every client waiting for the lease's records gave up (wait_for_result)."""
        ...


class StageTransaction(Protocol):
    """What a stage may do inside one atomic commit: all of it is durable, or none of it."""

    def put(self, table: Any, key: bytes, signal: Signal, body: bytes, items: int, batch_key: bytes = b"",
            compress: bool = True) -> None: ...

    def append(self, queue: Any, body: bytes, items: int, batch_key: bytes = b"") -> None: ...

    def delete(self, table: Any, key: bytes) -> bytes | None: ...

    def quarantine(self, table: Any, key: bytes, reason: str) -> None: ...


class StageStore(Protocol):
    """What the tail-sampling stage asks of the store that holds its buffer and its export queues."""

    def table(self, name: str) -> Any: ...

    def scan(self, table: Any, bodies: bool = False) -> Iterator[StoredRecord | Corrupt]:
        """Every record of the table, headers only (with `bodies`, requests too), in key order
        (read it in a worker thread)."""
        ...

    def read_records(self, table: Any, keys: list[bytes]) -> tuple[dict[bytes, StoredRecord], list[Corrupt]]:
        """The records with these keys that exist, with their requests (read it in a worker thread)."""
        ...

    def atomic(self, function: Callable[[StageTransaction], T]) -> asyncio.Future[T]: ...
