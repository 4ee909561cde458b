"""Decisions from the hints a split reads as spans arrive are those from the parsed spans.

Requests are written by hand in protobuf forms SDKs do not write but parsers take: fields in
any order, a Status in two occurrences (merged) or with its code twice (the last wins), a code
or tag in more bytes than it needs, an attribute's key or value twice (the last key wins; the
values merge, the last one set wins), a key twice in a span (the first counts), matches in
resources, values of another type (a bytes value holding a string's bytes, a negative integer
in ten bytes, a status code over 32 bits), and one trace's spans over several resources,
scopes and requests.
"""

from __future__ import annotations

import random
import struct

import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel.wire import length_delimited, varint
from sampler.buffer import merge_hints
from sampler.policies import build_policies, byte_hints, decide
from sampler.policies.base import reads_bytes
from sampler.policies.config import PolicyConfig
from sampler.split import Facts, split_serialized
from sampler.trace import Trace

POLICIES = [
    "{name: errors, type: status_code, status_code: {status_codes: [ERROR]}}",
    "{name: set, type: status_code, status_code: {status_codes: [OK, ERROR]}}",
    "{name: vip, type: string_attribute, string_attribute: {key: customer, values: [vip, gold]}}",
    "{name: not-vip, type: string_attribute, string_attribute: {key: customer, values: [vip], invert_match: true}}",
    "{name: v-p, type: string_attribute, string_attribute: {key: customer, values: ['^v.p$'],"
    " enabled_regex_matching: true}}",
    "{name: 5xx, type: numeric_attribute, numeric_attribute: {key: code, min_value: 500, max_value: 599}}",
    "{name: not-5xx, type: numeric_attribute, numeric_attribute: {key: code, min_value: 500, max_value: 599,"
    " invert_match: true}}",
    "{name: debug, type: boolean_attribute, boolean_attribute: {key: debug, value: true}}",
    "{name: quiet, type: boolean_attribute, boolean_attribute: {key: debug, value: false}}",
    "{name: not-errors, type: not, not: {not_sub_policy: {type: status_code, status_code: {status_codes: [ERROR]}}}}",
    """{name: error-vip, type: and, and: {and_sub_policy: [
         {type: status_code, status_code: {status_codes: [ERROR]}},
         {type: string_attribute, string_attribute: {key: customer, values: [vip], invert_match: true}}]}}""",
    """{name: drop-debug, type: drop, drop: {drop_sub_policy: [
         {type: boolean_attribute, boolean_attribute: {key: debug, value: true}}]}}""",
]
VALUES = {"customer": ["vip", "gold", "vap", "vvip", "", 7, b"vip"], "code": [503, 200, 599, 600, "503", 0, -503],
          "debug": [True, False, 1, "true"]}
WIRE_VARINT, WIRE_LEN = 0, 2


def _key(number: int, wire: int, long: bool = False) -> bytes:
    tag = varint(number << 3 | wire)
    return bytes((tag[0] | 0x80, 0x00)) if long and len(tag) == 1 else tag  # the same tag in two bytes


def _varint(value: int, long: bool = False) -> bytes:
    """A varint, or with `long` one padded to three bytes more than it needs (parsers take it)."""
    if not long:
        return varint(value)
    out = bytearray(varint(value))
    out[-1] |= 0x80
    return bytes(out) + b"\x80\x80\x00"


def _any_value(rng: random.Random, value: object) -> bytes:
    if isinstance(value, bool):
        return _key(2, WIRE_VARINT) + varint(int(value))
    if isinstance(value, int):  # a negative int64 in ten bytes, as two's complement
        return _key(3, WIRE_VARINT) + _varint(value % (1 << 64), rng.random() < 0.3 and value >= 0)
    if isinstance(value, bytes):
        return length_delimited(7, value)  # bytes_value: the value's bytes, but no string
    return length_delimited(1, str(value).encode())


def _key_value(rng: random.Random, key: str, value: object) -> bytes:
    """A KeyValue, at times with a decoy key before the real one, or its value after a decoy value
    (merged: the last value set wins)."""
    fields = [length_delimited(1, key.encode())]
    if rng.random() < 0.2:
        fields.insert(0, length_delimited(1, rng.choice(["note", "customer", "code", "debug"]).encode()))
    encoded = length_delimited(2, _any_value(rng, value))
    if rng.random() < 0.2:
        decoy = rng.choice([v for values in VALUES.values() for v in values])
        encoded = length_delimited(2, _any_value(rng, decoy)) + encoded
    fields.append(encoded)
    if rng.random() < 0.3:
        fields.reverse()  # the key last
    return b"".join(fields)


def _status(rng: random.Random, codes: list[int]) -> list[bytes]:
    """Status fields of a span, each code in turn (the last one wins), in one or more occurrences."""
    occurrences = []
    for code in codes:
        body = _key(3, WIRE_VARINT, rng.random() < 0.2) + _varint(code, rng.random() < 0.2)
        if rng.random() < 0.3:
            body = length_delimited(2, b"m\x18\x02") + body if rng.random() < 0.5 else body + length_delimited(2, b"m")
        occurrences.append(body)
    if len(occurrences) > 1 and rng.random() < 0.5:
        occurrences = [b"".join(occurrences)]  # the codes in one Status message
    if rng.random() < 0.2:
        occurrences.append(length_delimited(2, b"late message"))  # merged: the code stays
    return [length_delimited(15, body) for body in occurrences]


def _span(rng: random.Random, trace_id: bytes) -> bytes:
    fields = [length_delimited(1, trace_id), length_delimited(2, rng.randbytes(8)),
              length_delimited(5, b"op"), _key(7, 1) + struct.pack("<Q", rng.randrange(1, 1 << 62)),
              _key(8, 1) + struct.pack("<Q", rng.randrange(1, 1 << 62))]
    if rng.random() < 0.3:
        fields.append(length_delimited(4, rng.randbytes(8)))
    if rng.random() < 0.4:
        # a code of more than 32 bits reads as its low 32 bits (an int32 enum)
        fields += _status(rng, [rng.choice([0, 1, 2, 2 | 1 << 32]) for _ in range(rng.choice([1, 1, 2]))])
    for _ in range(rng.choice([0, 1, 2, 3])):
        key = rng.choice([*VALUES, "note"])
        value = rng.choice(VALUES.get(key, ["vip", "\x18\x02"]))
        fields.append(length_delimited(9, _key_value(rng, key, value)))
    if rng.random() < 0.1:  # the policies' bytes where they do not look: an event's attributes
        fields.append(length_delimited(11, length_delimited(2, b"ev") + length_delimited(
            3, _key_value(rng, "customer", "vip"))))
    rng.shuffle(fields)
    return b"".join(fields)


def _request(rng: random.Random, trace_ids: list[bytes]) -> bytes:
    groups = []
    for _ in range(rng.randint(1, 3)):
        resource = b""
        if rng.random() < 0.15:
            key = rng.choice(list(VALUES))
            resource = length_delimited(1, length_delimited(1, _key_value(rng, key, rng.choice(VALUES[key]))))
        scopes = []
        for _ in range(rng.randint(1, 2)):
            spans = [length_delimited(2, _span(rng, rng.choice(trace_ids))) for _ in range(rng.randint(0, 6))]
            header = [length_delimited(1, length_delimited(1, b"lib"))]
            scopes.append(length_delimited(2, b"".join(rng.sample(header + spans, len(spans) + 1))))
        groups.append(length_delimited(1, resource + b"".join(scopes)))
    return b"".join(groups)


def _parse(body: bytes) -> list:
    return list(ExportTraceServiceRequest.FromString(body).resource_spans)


@pytest.mark.parametrize("seed", range(4))
def test_decisions_by_hints_are_those_by_the_parsed_spans(seed):
    rng = random.Random(seed)
    configs = [PolicyConfig.model_validate(yaml.safe_load(text)) for text in POLICIES]
    hinted_policies = build_policies(configs, lambda: 0.0)
    finders, confirms = byte_hints(hinted_policies)
    plain_policies = build_policies(configs, lambda: 0.0)  # no hint bits: they read every span
    compared = unread = 0
    for _ in range(60):
        trace_ids = [rng.randbytes(16) for _ in range(rng.randint(1, 4))]
        parts: dict[bytes, list[bytes]] = {}
        hints: dict[bytes, int | None] = {}
        for _ in range(rng.randint(1, 3)):  # a trace's spans over several requests
            raw = _request(rng, trace_ids)
            facts = Facts(finders=finders, confirms=confirms)
            for trace_id, part, _, _ in split_serialized(raw, ExportTraceServiceRequest.FromString(raw), facts=facts):
                known = facts.hints.get(trace_id) if facts.hints else None
                hints[trace_id] = merge_hints(hints[trace_id], known) if trace_id in parts else known
                parts.setdefault(trace_id, []).append(part)
        for trace_id, raw_parts in parts.items():
            parsed = Trace(trace_id, batches=[batch for part in raw_parts for batch in _parse(part)])
            expected = {named.name: named.policy.evaluate(parsed) for named in plain_policies}
            for named in hinted_policies:
                hinted = Trace(trace_id, raw=list(raw_parts), parse=_parse, hints=hints[trace_id])
                if not reads_bytes(named.policy, hinted):
                    hinted = Trace.unread(trace_id, 0, 0, None, hints[trace_id])
                    unread += 1
                assert named.policy.evaluate(hinted) is expected[named.name], (named.name, seed)
                compared += 1
            whole = Trace(trace_id, raw=list(raw_parts), parse=_parse, hints=hints[trace_id])
            assert decide(hinted_policies, whole) == decide(plain_policies, parsed)
    assert compared and unread
