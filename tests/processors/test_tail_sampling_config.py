"""tail_sampling keys of otelcol 0.165: accepted and honoured, or refused naming why."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edgeagent.processors.tail_sampling.config import TailSamplingConfig

POLICIES = [{"name": "all", "type": "always_sample"}]


def test_otelcol_keys_are_accepted():
    config = TailSamplingConfig.model_validate({
        "policies": POLICIES, "sampling_strategy": "trace-complete", "num_shards": 4, "block_on_overflow": True,
        "drop_pending_traces_on_shutdown": True, "maximum_trace_size_bytes": 1 << 20})
    assert config.block_on_overflow and config.maximum_trace_size_bytes == 1 << 20


@pytest.mark.parametrize("settings, named", [
    ({"sampling_strategy": "span-ingest"}, "use trace-complete"),
    ({"tail_storage": "file_storage"}, "remove tail_storage"),
    ({"num_shards": 257}, "num_shards"),
    ({"sampling_strategy": "eventually"}, "sampling_strategy"),
])
def test_what_cannot_be_honoured_is_refused_with_the_fix(settings, named):
    with pytest.raises(ValidationError, match=named):
        TailSamplingConfig.model_validate({"policies": POLICIES, **settings})
