"""The agent's own queue store always has a disk budget; a file_storage's limits reach its store."""

from __future__ import annotations

import asyncio
import os

import pytest

from edgeagent.config.loader import load_text
from edgeagent.queue.limits import StorageLimits
from edgeagent.service.storage import DEFAULT_BUDGET_MIB, StoreEvents, Stores, default_budget_mib


def test_own_store_without_config_gets_a_budget_below_the_whole_disk(tmp_path):
    budget = default_budget_mib(str(tmp_path / "not" / "created" / "yet"), environ={})
    stats = os.statvfs(tmp_path)
    disk_mib = stats.f_blocks * stats.f_frsize >> 20
    assert 0 < budget <= DEFAULT_BUDGET_MIB
    assert budget <= max(64, disk_mib // 4)


def test_environment_sets_the_budget_and_a_bad_value_names_the_fix(tmp_path):
    assert default_budget_mib(str(tmp_path), environ={"EDGEAGENT_QUEUE_MAX_MIB": "300"}) == 300
    with pytest.raises(ValueError, match="EDGEAGENT_QUEUE_MAX_MIB"):
        default_budget_mib(str(tmp_path), environ={"EDGEAGENT_QUEUE_MAX_MIB": "lots"})


def test_a_file_storage_budget_policy_and_max_age_reach_its_store(tmp_path):
    config = load_text(f"""
receivers: {{otlp: {{protocols: {{http: {{endpoint: 127.0.0.1:4318}}}}}}}}
exporters:
  otlphttp: {{endpoint: http://127.0.0.1:14318, sending_queue: {{storage: file_storage}}}}
extensions:
  file_storage: {{directory: {tmp_path / "queue"}, max_size: 268435456, full_policy: drop_oldest, max_age: 1h}}
service:
  extensions: [file_storage]
  pipelines: {{traces: {{receivers: [otlp], exporters: [otlphttp]}}}}
""")
    events = StoreEvents(lambda directory: None, lambda queue, reason, items, size: None,
                         lambda table, seq: None, lambda directory, found, lost: None)
    stores = Stores(config, str(tmp_path / "state"), events, control_socket=str(tmp_path / "control.sock"))
    store = stores.get("file_storage")
    try:
        assert store.limits == StorageLimits(256 << 20, "drop_oldest", 3600.0)
    finally:
        asyncio.run(store.close())
