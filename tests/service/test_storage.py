"""The agent's own queue store always has a disk budget."""

from __future__ import annotations

import os

import pytest

from edgeagent.service.storage import DEFAULT_BUDGET_MIB, default_budget_mib


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
