"""The `file_storage` extension: where persistent queues live.

Queues of exporters whose `sending_queue.storage` names this extension are kept in one
LMDB environment in `directory`. Unlike otelcol, `fsync` defaults to true: an OK to a
client means the data is on disk.

edgeagent's own keys: `max_size_mib` (disk budget of the directory's queues),
`full_policy` (`block` refuses new data when full, `drop_oldest` evicts the oldest
records) and `max_age` (records older than this are dropped, counted).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Literal

from pydantic import Field, model_validator

from edgeagent.component import ComponentConfig, Factory
from edgeagent.config.types import Duration
from edgeagent.queue.limits import StorageLimits

log = logging.getLogger(__name__)


class CompactionConfig(ComponentConfig):
    directory: str | None = None
    on_start: bool = False
    on_rebound: bool = False
    rebound_needed_threshold_mib: int = Field(100, ge=0)
    rebound_trigger_threshold_mib: int = Field(10, ge=0)
    max_transaction_size: int = Field(65536, ge=0)
    check_interval: Duration = 5.0
    cleanup_on_start: bool = False

    def config_warnings(self) -> list[str]:
        if "max_transaction_size" in self.model_fields_set:
            return ["compaction::max_transaction_size has no effect: the LMDB queue is compacted in one copy"]
        return []

    @model_validator(mode="after")
    def _check(self) -> CompactionConfig:
        if self.rebound_trigger_threshold_mib > self.rebound_needed_threshold_mib:
            raise ValueError("rebound_trigger_threshold_mib must not exceed rebound_needed_threshold_mib")
        return self


class FileStorageConfig(ComponentConfig):
    directory: str | None = None
    timeout: Duration = 1.0
    fsync: bool = True
    create_directory: bool = True
    compaction: CompactionConfig = Field(default_factory=CompactionConfig)
    max_size_mib: int = Field(0, ge=0)
    full_policy: Literal["block", "drop_oldest"] = "block"
    max_age: Duration = 0.0

    def config_warnings(self) -> list[str]:
        return self.compaction.config_warnings()

    def limits(self) -> StorageLimits:
        return StorageLimits(self.max_size_mib << 20, self.full_policy, self.max_age)


class FileStorage:
    """Holds the storage settings; the agent opens one queue store per file_storage extension."""

    def __init__(self, component_id: str, config: FileStorageConfig, host: Any = None):
        self.id = component_id
        self.config = config
        self.directory = config.directory

    async def start(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None


def resolve_directory(config: FileStorageConfig, default_root: str, component_id: str) -> str:
    if config.directory:
        return config.directory
    return os.path.join(default_root, component_id.replace("/", "_"))


FACTORY = Factory("file_storage", FileStorageConfig, FileStorage)
