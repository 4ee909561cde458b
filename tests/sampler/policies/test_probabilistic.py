"""probabilistic keeps exactly the traces otelcol keeps.

The reference here is written from the definitions, not taken from the product: FNV-1a 64
(offset basis 14695981039346656037, prime 1099511628211, xor then multiply, per byte) over the
salt and then the 16 trace id bytes, and `hash <= threshold`. The thresholds and hashes in the
tables were computed with Go's hash/fnv and math/big, the way otelcol computes them:
new(big.Float).SetInt(MaxUint64).Mul(…, big.NewFloat(percentage / 100)).Uint64().
"""

from __future__ import annotations

import random

import pytest

from sampler.policies import build_policy
from sampler.policies.probabilistic import fnv1a_64, fnv1a_64_of_16, fnv1a_64_of_16_many, threshold
from sampler.trace import Decision, Trace
from tests.sampler.policies.traces import decisions, policy_config

GO_THRESHOLDS = {
    0: 0,
    0.1: 18446744073709551,
    1: 184467440737095519,
    10: 1844674407370955263,
    25: 4611686018427387903,
    33.3: 6142765776545279999,
    50: 9223372036854775807,
    99.99: 18444899399302178815,
    100: 18446744073709551615,
}

# trace id -> (hash with otelcol's default salt "default-hash-seed", hash with salt "edge"), from Go
GO_HASHES = {
    "00000000000000000000000000000000": (16254958829412527165, 5222461262543830908),
    "0102030405060708090a0b0c0d0e0f10": (15838989281584434349, 5249471267122162540),
    "ffffffffffffffffffffffffffffffff": (1711019809656077869, 3653747116726105964),
    "4bf92f3577b34da6a3ce929d0e0e4736": (11908981664384643253, 9729110786463429008),
}


def reference_fnv1a_64(data: bytes, state: int = 14695981039346656037) -> int:
    for byte in data:
        state ^= byte
        state = (state * 1099511628211) % 2**64
    return state


def reference_sampled(salt: str, trace_id: bytes, percentage: float) -> bool:
    return reference_fnv1a_64((salt or "default-hash-seed").encode() + trace_id) <= GO_THRESHOLDS[percentage]


def test_the_reference_hash_is_gos_fnv1a():
    for trace_id, (default_salt, edge_salt) in GO_HASHES.items():
        assert reference_fnv1a_64(b"default-hash-seed" + bytes.fromhex(trace_id)) == default_salt
        assert reference_fnv1a_64(b"edge" + bytes.fromhex(trace_id)) == edge_salt


def test_the_hash_equals_the_definition_on_random_ids_salts_and_lengths():
    # trace ids take an unrolled path: every bit of it against the byte-by-byte definition
    rng = random.Random(64)
    salts = [b"", b"default-hash-seed", b"edge"] + [rng.randbytes(rng.randrange(1, 40)) for _ in range(50)]
    for salt in salts:
        state = reference_fnv1a_64(salt)
        for _ in range(400):
            trace_id = rng.randbytes(16)
            expected = reference_fnv1a_64(trace_id, state)
            assert fnv1a_64(trace_id, state) == fnv1a_64_of_16(trace_id, state) == expected, (salt, trace_id)
        for length in (0, 1, 8, 15, 17, 32):
            data = rng.randbytes(length)
            assert fnv1a_64(data, state) == reference_fnv1a_64(data, state), (salt, data)
    for state in (0, 2**64 - 1, *(rng.getrandbits(64) for _ in range(1000))):  # any starting state
        trace_id = rng.randbytes(16)
        assert fnv1a_64(trace_id, state) == reference_fnv1a_64(trace_id, state)


@pytest.mark.parametrize("percentage", list(GO_THRESHOLDS))
def test_threshold_is_gos_math_big_product(percentage):
    assert threshold(percentage) == GO_THRESHOLDS[percentage]


def test_known_trace_ids_get_otelcols_decision():
    traces = {trace_id: Trace(trace_id=bytes.fromhex(trace_id)) for trace_id in GO_HASHES}
    # with the default salt the hashes rank 1711…, 11908…, 15838…, 16254…: 25 % keeps the first only
    assert decisions("{name: p, type: probabilistic, probabilistic: {sampling_percentage: 25}}", traces) == {
        "00000000000000000000000000000000": "N", "0102030405060708090a0b0c0d0e0f10": "N",
        "ffffffffffffffffffffffffffffffff": "S", "4bf92f3577b34da6a3ce929d0e0e4736": "N"}
    # salted "edge", 33.3 % (6142…) keeps all four hashes below it: 5222…, 5249…, 3653…; not 9729…
    assert decisions("{name: p, type: probabilistic, probabilistic: {hash_salt: edge, sampling_percentage: 33.3}}",
                     traces) == {"00000000000000000000000000000000": "S", "0102030405060708090a0b0c0d0e0f10": "S",
                                 "ffffffffffffffffffffffffffffffff": "S", "4bf92f3577b34da6a3ce929d0e0e4736": "N"}


def test_a_missing_trace_id_hashes_as_sixteen_zero_bytes():
    traces = {"missing": Trace(trace_id=b""), "zeros": Trace(trace_id=bytes(16))}
    for percentage in (50, 90):  # the zero id hashes to 16254958829412527165: between both thresholds
        assert decisions(f"{{name: p, type: probabilistic, probabilistic: {{sampling_percentage: {percentage}}}}}",
                         traces) == dict.fromkeys(traces, "N" if percentage == 50 else "S")


@pytest.mark.parametrize("salt, percentage", [("", 10), ("edge", 33.3), ("tier-2", 0.1)])
def test_decisions_equal_the_reference_on_100000_random_trace_ids(salt, percentage):
    policy = build_policy(policy_config(
        f"{{name: p, type: probabilistic, probabilistic: {{hash_salt: '{salt}', sampling_percentage: {percentage}}}}}"),
        None)
    rng = random.Random(f"{salt}/{percentage}")
    kept = 0
    for _ in range(100_000):
        trace_id = rng.randbytes(16)
        sampled = policy.evaluate(Trace(trace_id=trace_id)) is Decision.SAMPLED
        assert sampled == reference_sampled(salt, trace_id, percentage), trace_id.hex()
        kept += sampled
    expected = 100_000 * percentage / 100
    spread = 5 * (expected * (1 - percentage / 100)) ** 0.5 + 1  # five standard deviations
    assert abs(kept - expected) <= spread


def test_a_salt_changes_which_traces_are_kept():
    rng = random.Random(7)
    ids = [rng.randbytes(16) for _ in range(10_000)]
    plain = build_policy(policy_config("{name: p, type: probabilistic, probabilistic: {sampling_percentage: 10}}"),
                         None)
    salted = build_policy(policy_config(
        "{name: p, type: probabilistic, probabilistic: {hash_salt: other, sampling_percentage: 10}}"), None)
    kept_plain = {trace_id for trace_id in ids if plain.evaluate(Trace(trace_id=trace_id)) is Decision.SAMPLED}
    kept_salted = {trace_id for trace_id in ids if salted.evaluate(Trace(trace_id=trace_id)) is Decision.SAMPLED}
    assert len(kept_plain & kept_salted) < 0.2 * len(kept_plain)  # about 10 % overlap, as independent draws


@pytest.mark.parametrize("count", [0, 1, 7, 8, 9, 64, 1000])
def test_hashes_taken_together_equal_the_definition_for_any_count_and_state(count):
    """The lanes of fnv1a_64_of_16_many must neither carry into each other nor lose a bit: ids of
    all-0xff bytes and states of all ones give the largest products."""
    rng = random.Random(count)
    ids = [rng.randbytes(16) for _ in range(count)]
    ids[: count // 4] = [b"\xff" * 16, bytes(16)] * (count // 8)
    for state in (0, 2**64 - 1, reference_fnv1a_64(b"default-hash-seed"), rng.getrandbits(64)):
        assert fnv1a_64_of_16_many(ids, state) == [reference_fnv1a_64(trace_id, state) for trace_id in ids]


def test_a_round_of_traces_gets_the_decisions_of_one_trace_at_a_time():
    rng = random.Random(9)
    policy = build_policy(policy_config("{name: p, type: probabilistic, probabilistic: {sampling_percentage: 30}}"),
                          lambda: 0.0)
    traces = [Trace(trace_id=rng.randbytes(16)) for _ in range(500)]
    traces += [Trace(trace_id=b""), Trace(trace_id=b"\x01" * 5)]  # hashed as padded to 16 bytes
    rng.shuffle(traces)
    assert policy.evaluate_many(traces) == [policy.evaluate(trace) for trace in traces]
    assert 0.25 < policy.evaluate_many(traces).count(Decision.SAMPLED) / len(traces) < 0.35


def test_a_hash_equal_to_the_threshold_samples_in_a_round_as_alone():
    rng = random.Random(10)
    policy = build_policy(policy_config("{name: p, type: probabilistic, probabilistic: {sampling_percentage: 30}}"),
                          lambda: 0.0)
    traces = [Trace(trace_id=rng.randbytes(16)) for _ in range(64)]
    policy.threshold = reference_fnv1a_64(traces[7].trace_id, policy.salted)
    assert policy.evaluate(traces[7]) is Decision.SAMPLED
    assert policy.evaluate_many(traces) == [policy.evaluate(trace) for trace in traces]
