"""otelcol 0.165's sending_queue keys: accepted where the sender honours them, refused with the reason otherwise."""

from __future__ import annotations

import pytest

from edgeagent.config.loader import ConfigError, load_text
from edgeagent.exporters.sender import BatchSettings

BASE = """
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:4318
exporters:
  otlp_http:
    endpoint: http://collector:4318
    sending_queue:
{queue}
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp_http]
"""


def _queue(queue: str):
    text = BASE.format(queue="\n".join("      " + line for line in queue.strip().splitlines()))
    return load_text(text, environ={}).exporters["otlp_http"].config.sending_queue


def _refused(queue: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        _queue(queue)
    return caught.value.errors


def test_batch_key_alone_enables_otelcols_defaults():
    assert _queue("batch:").batch.settings() == BatchSettings(0.2, 8192, 0)
    assert _queue("batch: {enabled: false}").batch is None
    assert _queue("num_consumers: 2").batch is None


def test_batch_settings_map_onto_the_sender():
    queue = _queue("sizer: items\nqueue_size: 100000\nbatch:\n  flush_timeout: 1s\n  min_size: 50\n  max_size: 200")
    assert queue.batch.sizer == "items"
    assert queue.batch.settings() == BatchSettings(1.0, 50, 200)


def test_wait_for_result_and_block_on_overflow_are_accepted_on_the_agents_own_queue():
    queue = _queue("wait_for_result: true\nblock_on_overflow: true")
    assert queue.wait_for_result and queue.block_on_overflow


@pytest.mark.parametrize(("queue", "words"), [
    ("batch:\n  sizer: bytes", ["bytes", "items"]),
    ("sizer: bytes\nqueue_size: 100000000\nbatch:", ["bytes", "items"]),
    ("batch:\n  partition:\n    metadata_keys: [tenant]", ["metadata_keys", "batch processor"]),
    ("sizer: requests\nbatch:", ["batch::sizer", "items"]),
    ("batch:\n  flush_timeout: 0s", ["flush_timeout"]),
    ("batch:\n  min_size: 10\n  max_size: 5", ["max_size"]),
    ("sizer: items\nqueue_size: 10\nbatch:\n  min_size: 100", ["min_size", "queue_size"]),
])
def test_sending_queue_keys_that_cannot_be_honoured_are_refused_with_the_reason(queue, words):
    errors = _refused(queue)
    assert len(errors) == 1, errors
    path, message = errors[0]
    assert path.startswith("exporters::otlp_http::sending_queue"), errors
    for word in words:
        assert word in message, (word, message)


@pytest.mark.parametrize("exporter", ["otlp_http", "otlp_grpc"])
def test_retry_on_failure_without_a_queue_is_said_to_have_no_effect(exporter):
    """otelcol retries while the client waits when sending_queue is disabled; edgeagent makes one
    attempt and answers the client with a retryable error. The retry settings were accepted and
    ignored without a word."""
    text = BASE.replace("otlp_http", exporter).replace("sending_queue:\n{queue}", (
        "sending_queue:\n      enabled: false\n    retry_on_failure:\n      max_elapsed_time: 60s"))
    warnings = load_text(text, environ={}).warnings
    assert any(f"exporters::{exporter}: retry_on_failure has no effect" in warning for warning in warnings), warnings
    plain = BASE.replace("otlp_http", exporter).replace("sending_queue:\n{queue}",
                                                        "sending_queue:\n      enabled: false")
    assert not [warning for warning in load_text(plain, environ={}).warnings if "retry_on_failure" in warning]
