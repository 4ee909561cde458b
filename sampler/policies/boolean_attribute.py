"""`boolean_attribute`: sample a trace with a boolean resource or span attribute equal to `value`.

A value that is not a boolean reads as false, as pdata's Value.Bool() does.
"""

from __future__ import annotations

from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from sampler.policies.attributes import AttributePolicy
from sampler.policies.config import BooleanAttributeConfig


class BooleanAttribute(AttributePolicy):
    def __init__(self, config: BooleanAttributeConfig):
        super().__init__(config.key, config.invert_match)
        self.value = config.value

    def resource_match(self, value: AnyValue) -> bool:
        return value.bool_value == self.value
