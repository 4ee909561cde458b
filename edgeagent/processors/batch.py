"""The `batch` processor: how the sender groups queued requests into upstream requests.

Batching happens where the sender reads from the durable queue, never before the commit,
so it never delays a client's OK. In the pipeline the processor passes data through.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from edgeagent.component import ComponentConfig, Factory
from edgeagent.config.types import Duration


class BatchConfig(ComponentConfig):
    timeout: Duration = 0.2
    send_batch_size: int = Field(8192, ge=0)
    send_batch_max_size: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> "BatchConfig":
        if self.send_batch_max_size and self.send_batch_max_size < self.send_batch_size:
            raise ValueError("send_batch_max_size must be 0 or at least send_batch_size")
        return self


class BatchProcessor:
    def __init__(self, component_id: str, config: BatchConfig, host: Any = None):
        self.id = component_id
        self.config = config

    async def start(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    def process(self, payload: Any) -> Any:
        return payload


FACTORY = Factory("batch", BatchConfig, BatchProcessor)
