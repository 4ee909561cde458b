"""`probabilistic`: sample `sampling_percentage` percent of traces by a hash of the trace id.

The same decision as otelcol for every trace id:
  hash      = FNV-1a 64 over the bytes of the salt ("default-hash-seed" when `hash_salt` is
              empty), then the 16 trace id bytes in wire order;
  threshold = MaxUint64 × (sampling_percentage / 100), computed as Go's math/big does it: the
              product rounded to 64 significant bits (to nearest, ties to even), then
              truncated to an integer and capped at MaxUint64;
  sampled   when hash <= threshold.
"""

from __future__ import annotations

from fractions import Fraction

from sampler.policies.config import ProbabilisticConfig
from sampler.trace import Decision, Trace

DEFAULT_HASH_SALT = "default-hash-seed"
FNV_OFFSET_BASIS = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
MAX_UINT64 = (1 << 64) - 1


def fnv1a_64(data: bytes, state: int = FNV_OFFSET_BASIS) -> int:
    for byte in data:
        state = ((state ^ byte) * FNV_PRIME) & MAX_UINT64
    return state


def threshold(sampling_percentage: float) -> int:
    exact = Fraction(MAX_UINT64) * Fraction(sampling_percentage / 100)
    if exact <= 0:
        return 0
    exponent = exact.numerator.bit_length() - exact.denominator.bit_length()
    if Fraction(2) ** exponent > exact:  # make 2**exponent <= exact < 2**(exponent + 1)
        exponent -= 1
    scale = Fraction(2) ** (63 - exponent)  # the product's 64 significant bits, as an integer
    rounded = Fraction(round(exact * scale)) / scale
    return min(MAX_UINT64, int(rounded))


class Probabilistic:
    def __init__(self, config: ProbabilisticConfig):
        self.salted = fnv1a_64((config.hash_salt or DEFAULT_HASH_SALT).encode())
        self.threshold = threshold(config.sampling_percentage)

    def evaluate(self, trace: Trace) -> Decision:
        trace_id = trace.trace_id
        if len(trace_id) != 16:  # pdata reads a missing trace id as 16 zero bytes
            trace_id = trace_id.ljust(16, b"\0")[:16]
        if fnv1a_64(trace_id, self.salted) <= self.threshold:
            return Decision.SAMPLED
        return Decision.NOT_SAMPLED
