"""Queue stores: one LMDB environment per directory that an exporter's `sending_queue::storage` names.

An exporter without `storage` gets the agent's own store in the state directory, with a disk
budget even when nothing configures one (EDGEAGENT_QUEUE_MAX_MIB, else a quarter of the file
system up to 8 GiB): an agent started with no config must never fill the disk. A store is
opened while the graph is built, so a locked or unwritable queue fails start-up before any port
is bound; compaction::on_start runs once it starts, on its writer thread (a stop gives it up).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from edgeagent.config.loader import AgentConfig
from edgeagent.extensions.file_storage import FileStorageConfig, resolve_directory
from edgeagent.queue.compaction import cleanup_compaction_leftovers
from edgeagent.queue.environment import private_directory
from edgeagent.queue.limits import StorageLimits
from edgeagent.queue.ops import StoreTable, WriterQueue
from edgeagent.queue.reader import DurableQueue
from edgeagent.queue.store import QueueStore
from edgeagent.signals import Signal

log = logging.getLogger(__name__)
DEFAULT_STORAGE = ""
DEFAULT_BUDGET_MIB = 8192


def default_budget_mib(directory: str, environ: dict[str, str] | None = None) -> int:
    """The disk budget of the agent's own store: EDGEAGENT_QUEUE_MAX_MIB, else min(8 GiB, ¼ of the file system)."""
    environ = dict(os.environ) if environ is None else environ
    configured = environ.get("EDGEAGENT_QUEUE_MAX_MIB", "").strip()
    if configured:
        try:
            return max(1, int(configured))
        except ValueError:
            raise ValueError(f"EDGEAGENT_QUEUE_MAX_MIB={configured!r}: give a whole number of MiB") from None
    existing = os.path.abspath(directory)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    stats = os.statvfs(existing)
    return max(64, min(DEFAULT_BUDGET_MIB, (stats.f_blocks * stats.f_frsize >> 20) // 4))


@dataclass(frozen=True)
class Rebound:
    """compaction::on_rebound thresholds of one store."""

    needed_mib: int
    trigger_mib: int
    interval: float


@dataclass
class StoreEvents:
    """Where a store reports what happens to its data."""

    corrupt_file: Callable[[str], None]
    dropped: Callable[[WriterQueue, str, int, int], None]
    quarantined: Callable[[StoreTable, int], None]  # a queue or a stage's table
    salvaged: Callable[[str, int, int], None]  # directory, records read back, records lost
    # directory, what LMDB found: a page damaged under the running agent (queue/damage.py), which stops
    damaged: Callable[[str, str], None] = lambda directory, message: None


class Stores:
    """The open queue stores by storage id (DEFAULT_STORAGE for the agent's own)."""

    def __init__(self, config: AgentConfig, state_dir: str, events: StoreEvents, control_socket: str,
                 read_only: bool = False):
        self.config = config
        self.state_dir = state_dir
        self.events = events
        self.control_socket = control_socket  # where the CLI finds the agent that holds a store's lock
        self.read_only = read_only  # commands that only read the queue beside a stopped agent
        self.by_id: dict[str, QueueStore] = {}
        self.rebound: dict[str, Rebound] = {}

    def values(self) -> list[QueueStore]:
        return list(self.by_id.values())

    def get(self, storage_id: str | None) -> QueueStore:
        """The store of `storage_id`, opened on first use."""
        key = storage_id or DEFAULT_STORAGE
        if key not in self.by_id:
            self.by_id[key] = self._open(storage_id)
        return self.by_id[key]

    def _open(self, storage_id: str | None) -> QueueStore:
        configured = self.config.extensions[storage_id].config if storage_id else None
        settings = configured if isinstance(configured, FileStorageConfig) else FileStorageConfig.model_validate({})
        directory = resolve_directory(settings, self.state_dir, storage_id or "queue")
        if not storage_id:
            settings = settings.model_copy(update={"max_size_mib": default_budget_mib(directory)})
        if not settings.create_directory and not os.path.isdir(directory):
            raise FileNotFoundError(f"file_storage directory {directory} does not exist; create it or set "
                                    f"create_directory: true")
        scratch = settings.compaction.directory
        compacts = settings.compaction.on_start or settings.compaction.on_rebound
        if scratch and compacts and settings.create_directory and not self.read_only:
            private_directory(scratch, settings.directory_mode())  # as otelcol creates it
        if settings.compaction.cleanup_on_start and not self.read_only:
            cleanup_compaction_leftovers(directory, settings.compaction.directory)
        events = self.events
        limits = StorageLimits(settings.budget(), settings.full_policy, settings.max_age)
        store = QueueStore(directory, sync=settings.fsync, limits=limits, lock_timeout=settings.timeout,
                           compact_on_start=settings.compaction.on_start,
                           compaction_scratch=settings.compaction.directory,
                           on_corrupt=lambda message: events.corrupt_file(directory),
                           on_drop=events.dropped, on_quarantine=events.quarantined,
                           on_salvage=lambda found, lost: events.salvaged(directory, found, lost),
                           control_socket=self.control_socket, read_only=self.read_only,
                           directory_mode=None if settings.directory_permissions is None else settings.directory_mode(),
                           recreate=settings.recreate,
                           on_damaged=lambda message: events.damaged(directory, message))
        store.open()
        compaction = settings.compaction
        if compaction.on_rebound:
            self.rebound[storage_id or DEFAULT_STORAGE] = Rebound(
                compaction.rebound_needed_threshold_mib, compaction.rebound_trigger_threshold_mib,
                compaction.check_interval)
        # no backlog here: the queues open later, with the graph ("edgeagent is ready" says it)
        log.info("queue storage open", extra={"directory": directory, "fsync": settings.fsync,
                                              "max_size_mib": settings.budget() >> 20})
        return store

    def open_unnamed(self) -> None:
        """Open the queues on disk that the config does not name (an exporter removed or renamed while its
        queue held data), so status reports them and `edgeagent queue purge` reaches them. Called once the
        graph is built: it opens the named ones with their capacity."""
        labels = {signal.label: signal for signal in Signal}
        for store in self.by_id.values():
            for name in store.queue_names():
                signal = labels.get(name.rpartition("/")[2])
                if name not in store.queues and signal is not None:
                    store.queue(name, signal)

    def queues(self) -> list[DurableQueue]:
        return [queue for store in self.by_id.values() for queue in store.queues.values()]
