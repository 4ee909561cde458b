"""file_storage settings as otelcol 0.165 spells them: max_size, directory_permissions, recreate."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edgeagent.extensions.file_storage import FileStorageConfig


def test_max_size_in_bytes_is_the_disk_budget_as_max_size_mib_is():
    assert FileStorageConfig.model_validate({"max_size": 268435456}).budget() == 256 << 20
    assert FileStorageConfig.model_validate({"max_size_mib": 256}).budget() == 256 << 20
    assert FileStorageConfig.model_validate({}).budget() == 0


def test_rebound_thresholds_above_the_budget_are_refused_as_otelcol_does():
    with pytest.raises(ValidationError, match="rebound_needed_threshold_mib"):
        FileStorageConfig.model_validate({"max_size": 64 << 20, "compaction": {"on_rebound": True}})
    FileStorageConfig.model_validate({"max_size": 128 << 20, "compaction": {"on_rebound": True}})


@pytest.mark.parametrize(("value", "message"), [("0789", "octal"), ("1777", "invalid bits"), (488, "quoted")])
def test_directory_permissions_must_be_a_quoted_octal_mode(value, message):
    with pytest.raises(ValidationError, match=message):
        FileStorageConfig.model_validate({"directory_permissions": value})


def test_directory_permissions_need_create_directory():
    with pytest.raises(ValidationError, match="create_directory"):
        FileStorageConfig.model_validate({"directory_permissions": "0750", "create_directory": False})
    assert FileStorageConfig.model_validate({"directory_permissions": "0750"}).directory_mode() == 0o750
    assert FileStorageConfig.model_validate({}).directory_mode() == 0o700
