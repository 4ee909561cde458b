"""The batch key of `metadata_keys`: one batch per distinct set of values, as otelcol's
attribute.Set of each key's values keys them (core processor/batchprocessor)."""

from __future__ import annotations

from edgeagent.processors.batch import BatchConfig, BatchProcessor
from edgeagent.queue import batchkey
from edgeagent.receivers import codec


def _key(pairs: list[tuple[str, str]], keys: tuple[str, ...] = ("x-tenant",)) -> bytes:
    processor = BatchProcessor("batch", BatchConfig.model_validate({"metadata_keys": list(keys)}))
    return processor.batch_key(codec.metadata_of(pairs))


def test_one_value_with_a_semicolon_and_two_values_are_different_batches():
    assert _key([("X-Tenant", "a;b")]) != _key([("X-Tenant", "a"), ("x-tenant", "b")])


def test_an_absent_key_and_an_empty_value_are_different_batches():
    assert _key([]) != _key([("X-Tenant", "")])


def test_values_that_hold_the_separator_of_two_keys_stay_apart():
    keys = ("x-a", "x-b")
    assert _key([("x-a", "1\x002"), ("x-b", "3")], keys) != _key([("x-a", "1"), ("x-b", "2\x003")], keys)


def test_the_same_values_give_the_same_key_across_processors():
    pairs = [("X-Tenant", "a"), ("x-tenant", "b")]
    assert _key(pairs) == _key(list(pairs))


def test_a_key_the_previous_release_stored_is_never_one_computed_now():
    """Queue and tail sampling records keep the batch key across restarts. The previous release
    stored the values joined by NUL as UTF-8 (or one NUL); a key computed now is never valid UTF-8,
    so an old record never shares a batch with another tenant's new one."""
    for pairs in ([], [("X-Tenant", "")], [("X-Tenant", "a;b")], [("X-Tenant", "a"), ("x-tenant", "b")]):
        key = _key(pairs)
        try:
            key.decode("utf-8")
        except UnicodeDecodeError:
            continue
        raise AssertionError(f"{key!r} could be a key the previous release stored")


def test_a_key_reads_back_as_each_metadata_keys_values():
    key = _key([("x-a", "1;2"), ("x-a", "3")], ("x-a", "x-b"))
    assert batchkey.describe(key) == "[1;2, 3] | []"
    assert batchkey.describe(b"acme\x00globex") == "acme\x00globex"  # a key of the earlier encoding
