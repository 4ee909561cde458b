"""The batch processor's settings: otelcol's checks of them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edgeagent.processors.batch import BatchConfig


@pytest.mark.parametrize(("settings", "words"), [
    ({"metadata_keys": ["tenant", "Tenant"]}, ["duplicate", "tenant"]),  # keys are case-insensitive
    ({"send_batch_size": 100, "send_batch_max_size": 10}, ["send_batch_max_size"]),
])
def test_settings_otelcol_refuses_are_refused(settings, words):
    with pytest.raises(ValidationError) as refused:
        BatchConfig.model_validate(settings)
    assert all(word in str(refused.value) for word in words)
