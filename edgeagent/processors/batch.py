"""The `batch` processor: how the sender groups queued requests into upstream requests.

Batching happens where the sender reads from the durable queue, never before the commit,
so it never delays a client's OK. In the pipeline the processor only computes the batch
key: with `metadata_keys`, the values of those request metadata keys (receivers need
`include_metadata: true`), so that data of different tenants never shares a request.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from edgeagent.component import ComponentConfig, Factory, Role
from edgeagent.config.types import Duration, Uint32
from edgeagent.errors import BadRequestError
from edgeagent.queue import batchkey, record
from edgeagent.signals import metadata_values


class BatchConfig(ComponentConfig):
    timeout: Duration = 0.2
    send_batch_size: Uint32 = Field(8192, ge=0)
    send_batch_max_size: Uint32 = Field(0, ge=0)
    metadata_keys: list[str] = Field(default_factory=list)
    metadata_cardinality_limit: Uint32 = Field(1000, ge=0)

    @model_validator(mode="after")
    def _check(self) -> BatchConfig:
        if self.send_batch_max_size and self.send_batch_max_size < self.send_batch_size:
            raise ValueError("send_batch_max_size must be 0 or at least send_batch_size")
        seen: set[str] = set()
        for key in self.metadata_keys:
            if key.lower() in seen:
                raise ValueError(f"duplicate entry in metadata_keys: {key.lower()!r} (keys are case-insensitive)")
            seen.add(key.lower())
        return self


class BatchProcessor:
    def __init__(self, component_id: str, config: BatchConfig, host: Any = None):
        self.id = component_id
        self.config = config
        self._keys = [key.lower() for key in config.metadata_keys]
        self._seen: set[bytes] = set()

    def batch_key(self, metadata: dict[str, str]) -> bytes:
        """The values of `metadata_keys` for one request, each key's kept apart (empty when none are configured)."""
        if not self._keys:
            return b""
        key = batchkey.encode([metadata_values(metadata, name) for name in self._keys])
        if len(key) > record.MAX_BATCH_KEY:
            raise BadRequestError(f"the values of {', '.join(self.config.metadata_keys)} take {len(key)} bytes, "
                                  f"more than the {record.MAX_BATCH_KEY} a queue record holds", status=400)
        if key not in self._seen:
            limit = self.config.metadata_cardinality_limit
            if limit and len(self._seen) >= limit:
                raise BadRequestError(f"too many distinct combinations of {', '.join(self.config.metadata_keys)} "
                                      f"(metadata_cardinality_limit {limit})", status=400)
            self._seen.add(key)
        return key

    async def start(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    def process(self, payload: Any) -> Any:
        return payload


FACTORY = Factory("batch", BatchConfig, BatchProcessor, role=Role.BATCH)
