"""`numeric_attribute`: sample a trace with an integer resource or span attribute in [min_value, max_value].

A bound of 0 is no bound, as in otelcol. A value that is not an integer (a double, a string)
reads as 0, as pdata's Value.Int() does, so it matches when 0 is in the range.
"""

from __future__ import annotations

from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from sampler.policies.attributes import AttributePolicy
from sampler.policies.config import NumericAttributeConfig

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


class NumericAttribute(AttributePolicy):
    def __init__(self, config: NumericAttributeConfig):
        super().__init__(config.key, config.invert_match)
        self.low = config.min_value or INT64_MIN
        self.high = config.max_value or INT64_MAX

    def resource_match(self, value: AnyValue) -> bool:
        return self.low <= value.int_value <= self.high
