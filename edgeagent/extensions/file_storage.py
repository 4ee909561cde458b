"""The `file_storage` extension: where persistent queues live.

Queues of exporters whose `sending_queue.storage` names this extension are kept in one
LMDB environment in `directory`. Unlike otelcol, `fsync` defaults to true: an OK to a
client means the data is on disk; `create_directory` defaults to true, and directories are
created private (0700) unless `directory_permissions` names a mode; `recreate` defaults to
true: a data file that does not open is moved aside and what can be read of it is salvaged
(`recreate: false` stops the start instead, as otelcol does without it).

otelcol's `max_size` (bytes) and edgeagent's `max_size_mib` both set the disk budget of the
directory's queues (one of them). edgeagent's own keys besides: `full_policy` (`block` refuses
new data when full, `drop_oldest` evicts the oldest records) and `max_age` (records older
than this are dropped, counted; their ages survive a forward step of the wall clock while the
agent runs: queue/clocksteps.py).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from edgeagent.component import ComponentConfig, Factory
from edgeagent.config.types import Duration

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
    UNSET_STAYS_UNSET = frozenset({"max_transaction_size"})

    def config_warnings(self) -> list[str]:
        if "max_transaction_size" in self.model_fields_set:
            return ["compaction::max_transaction_size has no effect: the LMDB queue is compacted in one copy"]
        return []

    @model_validator(mode="after")
    def _check(self) -> CompactionConfig:
        if self.rebound_trigger_threshold_mib > self.rebound_needed_threshold_mib:
            raise ValueError("rebound_trigger_threshold_mib must not exceed rebound_needed_threshold_mib")
        return self


PRIVATE_MODE = 0o700  # directories edgeagent creates, unless directory_permissions says otherwise


class FileStorageConfig(ComponentConfig):
    directory: str | None = None
    timeout: Duration = 1.0
    fsync: bool = True
    create_directory: bool = True
    directory_permissions: str | None = None  # octal, as otelcol ("0750"); None: private (0700)
    recreate: bool = True
    compaction: CompactionConfig = Field(default_factory=CompactionConfig)
    max_size: int = Field(0, ge=0)  # otelcol's spelling of the budget, in bytes
    max_size_mib: int = Field(0, ge=0)
    full_policy: Literal["block", "drop_oldest"] = "block"
    max_age: Duration = 0.0

    def config_warnings(self) -> list[str]:
        return self.compaction.config_warnings()

    @field_validator("directory_permissions", mode="before")
    @classmethod
    def _octal(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):  # YAML read 0750 as a number
            raise ValueError("write the mode as a quoted octal string, e.g. directory_permissions: \"0750\"")
        if isinstance(value, str):
            try:
                mode = int(value, 8)
            except ValueError:
                raise ValueError(f"directory_permissions {value!r} must be a valid octal representation") from None
            if mode & 0o777 != mode:
                raise ValueError(f"directory_permissions {value!r} contains invalid bits for file access")
        return value

    @model_validator(mode="after")
    def _check(self) -> FileStorageConfig:
        if self.max_size and self.max_size_mib:
            raise ValueError("max_size and max_size_mib both set the disk budget; set one of them")
        budget = self.budget()
        compaction = self.compaction
        if budget and compaction.on_rebound:
            if compaction.rebound_needed_threshold_mib << 20 > budget:
                raise ValueError("compaction::rebound_needed_threshold_mib cannot be greater than the disk budget")
            if compaction.rebound_trigger_threshold_mib << 20 > budget:
                raise ValueError("compaction::rebound_trigger_threshold_mib cannot be greater than the disk budget")
        if self.directory_permissions is not None and not self.create_directory:
            raise ValueError("directory_permissions applies to directories the extension creates; "
                             "it needs create_directory: true")
        return self

    def budget(self) -> int:
        """The disk budget in bytes (max_size, or max_size_mib); 0: none."""
        return self.max_size or self.max_size_mib << 20

    def directory_mode(self) -> int:
        return int(self.directory_permissions, 8) if self.directory_permissions is not None else PRIVATE_MODE


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
