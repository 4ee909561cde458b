"""What a queue may hold, and what happens when it is full.

* `QueueCapacity`: otelcol's `sending_queue.queue_size` in the unit of its `sizer`
  (requests, the default; items; or bytes).
* `StorageLimits`: edgeagent's disk budget for one storage directory (`max_size_mib`),
  the `full_policy` applied when either is reached, and an optional `max_age`.

`block` refuses new data (receivers answer 503 + Retry-After / RESOURCE_EXHAUSTED, so
clients retry); `drop_oldest` evicts records from the head to make room, so the newest
data survives. Under either, the disk budget is first made room in by dropping the oldest
dead letters: what the upstream refused never keeps out what it takes. Every eviction is
counted by reason.
"""

from __future__ import annotations

from dataclasses import dataclass

FULL_POLICIES = ("block", "drop_oldest")
SIZERS = ("requests", "items", "bytes")


@dataclass(frozen=True)
class QueueCapacity:
    """A queue's sending_queue::queue_size, counted in its sizer's unit."""

    size: int = 0  # 0: unlimited
    sizer: str = "requests"

    def exceeded(self, entries: int, items: int, size: int, add_items: int, add_bytes: int) -> bool:
        if not self.size:
            return False
        if self.sizer == "items":
            return items + add_items > self.size
        if self.sizer == "bytes":
            return size + add_bytes > self.size
        return entries + 1 > self.size

    def never_holds(self, entries: int, items: int, size: int) -> bool:
        """Whether this much is more than the queue holds even when empty."""
        return self.exceeded(entries - 1, items, size, 0, 0)

    def used(self, entries: int, items: int, size: int) -> int:
        return {"items": items, "bytes": size}.get(self.sizer, entries)


@dataclass(frozen=True)
class StorageLimits:
    """What a queue store may hold: its budget, what a full store does, how long records live."""

    max_size: int = 0  # bytes of LMDB pages in use; 0: unlimited
    full_policy: str = "block"
    max_age: float = 0.0  # seconds; 0: records never expire

    def map_size(self, default: int) -> int:
        """LMDB's map: headroom above the budget, so that reaching it is a refusal, never a crash."""
        if not self.max_size:
            return default
        return min(default, self.max_size + max(self.max_size // 4, 64 << 20))


def footprint(value_bytes: int, page_size: int) -> int:
    """Bytes of pages a record of `value_bytes` takes in LMDB: a share of a leaf page or overflow pages."""
    if value_bytes + 24 <= page_size // 2:
        return value_bytes + 24
    return -(-(value_bytes + 24) // page_size) * page_size
