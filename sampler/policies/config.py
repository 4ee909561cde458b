"""The `policies:` list of `tail_sampling`, as otelcol writes it.

Each entry has a `name`, a `type` and the block named after its type:

    - name: slow
      type: latency
      latency: {threshold_ms: 500}

`and` and `drop` take the simple types and `not` as sub-policies, `not` one of the simple
types, `composite` the simple types and `and`, exactly where otelcol allows them.

What otelcol 0.165 decodes and then never reads is accepted, as it starts with it, and
policy_warnings names each such key at load with what to write instead: a block for another type
than the policy's (its keys are still checked, as otelcol decodes it), any other key holding a
mapping (otelcol keeps those for policy extensions), values it skips (an empty string, a
tracestate member over 256 characters), `policy_order`, a `rate_allocation` entry naming no
sub-policy or overridden by a later one, `cache_max_size` without `enabled_regex_matching`.
Values otelcol takes though its policy then samples nothing or everything (bounds no value meets,
a percentage outside 0 to 100, a rate of 0, an unset key, no values or sub-policies, a block left
out, which otelcol builds from every setting's zero) are decided as otelcol decides them, with a
warning too. numeric_attribute without bounds stays an error: otelcol 0.165
starts with it and then crashes at the first trace it decides.

Where otelcol has a zero that means "not set" (numeric_attribute's bounds, latency's upper
threshold, span_count's max_spans, the burst capacities), 0 keeps that meaning. A number below 0
is taken wherever otelcol's config takes it (every numeric setting of a policy), and means what
it means there (a warning says what): a bound as written, or, where otelcol tests for "above 0"
(burst capacities, cache_max_size, a rate_allocation's percent), its "not set".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Self

from pydantic import BaseModel, Field, ModelWrapValidatorHandler, PrivateAttr, field_validator, model_validator

from otel.godecode import Int32
from otel.goregex import compile_go_regex
from sampler.policies.ottl_config import OttlConditionConfig
from sampler.settings import Settings

STATUS_CODES = ("OK", "ERROR", "UNSET")
# what and_sub_policy, drop_sub_policy and not_sub_policy may hold
SIMPLE_TYPES = ("always_sample", "latency", "numeric_attribute", "probabilistic", "status_code",
                "string_attribute", "rate_limiting", "bytes_limiting", "span_count", "trace_state",
                "boolean_attribute", "trace_flags", "ottl_condition")
BLOCKLESS_TYPES = ("always_sample", "trace_flags")
TRACE_STATE_MEMBER_MAX = 256  # otelcol skips a value whose key=value member would be longer
_NO_KEY = ("key", 'not set: the policy looks up the key "", as otelcol does, which only an attribute named "" '
                  'has; set key')


class PolicyBlock(Settings):
    """The settings block of a policy type. Where otelcol takes a value that makes the policy
    sample nothing, or everything, it is accepted as otelcol takes it, and noted here."""

    def notes(self) -> list[tuple[str, str]]:
        """(key, why) for a value written, or defaulted, that is surely not what was meant: policy_warnings."""
        return []


class LatencyConfig(PolicyBlock):
    threshold_ms: int = 0  # below 0 too, as otelcol's int64: every duration is above it
    upper_threshold_ms: int = 0  # 0: no upper bound; below 0 it bounds as written, as in otelcol

    def notes(self) -> list[tuple[str, str]]:
        if self.upper_threshold_ms < 0:
            return [("upper_threshold_ms", "below 0: the policy samples only traces whose spans end before they "
                                           "start, as otelcol compares it; raise it, or set 0 for no upper bound")]
        if not self.upper_threshold_ms:
            return [("threshold_ms", "below 0: every trace is sampled, its duration being above it, as in "
                                     "otelcol; write 0, or use always_sample")] if self.threshold_ms < 0 else []
        if self.upper_threshold_ms > self.threshold_ms:
            return []
        return [("upper_threshold_ms", f"the policy never samples a trace: no duration is above threshold_ms "
                                       f"({self.threshold_ms}) and at most upper_threshold_ms "
                                       f"({self.upper_threshold_ms}); raise it, or set 0 for no upper bound")]


class NumericAttributeConfig(PolicyBlock):
    key: str = ""
    min_value: int = 0  # 0: no lower bound, as in otelcol
    max_value: int = 0  # 0: no upper bound
    invert_match: bool = False

    @model_validator(mode="after")
    def _bounds(self) -> NumericAttributeConfig:
        if not self.min_value and not self.max_value:
            # otelcol 0.165 starts, then its nil evaluator crashes it at the first trace decided
            raise ValueError("set min_value and/or max_value (a bound of 0 means no bound, as in otelcol)")
        return self

    def notes(self) -> list[tuple[str, str]]:
        found = [] if self.key else [_NO_KEY]
        if self.min_value and self.max_value and self.min_value > self.max_value:
            found.append(("max_value", f"no value is at least min_value ({self.min_value}) and at most max_value "
                                       f"({self.max_value}), as otelcol reads them; swap them"))
        return found


class ProbabilisticConfig(PolicyBlock):
    hash_salt: str = ""  # "": otelcol's default salt, so both keep the same traces
    sampling_percentage: float = 0  # outside 0..100 it saturates, as Go's math/big does in otelcol

    def notes(self) -> list[tuple[str, str]]:
        if self.sampling_percentage > 100:
            return [("sampling_percentage", "above 100 samples every trace, as 100 does; write 100")]
        if self.sampling_percentage < 0:
            return [("sampling_percentage", "below 0 samples no trace, as 0 does; write 0")]
        if "sampling_percentage" not in self.model_fields_set:
            return [("sampling_percentage", "not set: 0, as in otelcol, so the policy samples no trace; set it")]
        return []


class StatusCodeConfig(PolicyBlock):
    status_codes: list[str] = Field(min_length=1)

    @field_validator("status_codes")
    @classmethod
    def _known(cls, codes: list[str]) -> list[str]:
        unknown = [code for code in codes if code not in STATUS_CODES]
        if unknown:
            raise ValueError(f"unknown status code {unknown[0]!r}; supported: {', '.join(STATUS_CODES)} (upper case)")
        return codes


class StringAttributeConfig(PolicyBlock):
    key: str = ""
    values: list[str] = Field(default_factory=list)
    enabled_regex_matching: bool = False
    cache_max_size: int | None = None  # 0, below or unset: otelcol's 128
    invert_match: bool = False

    @model_validator(mode="after")
    def _values(self) -> StringAttributeConfig:
        if self.enabled_regex_matching:
            for value in self.values:
                compile_go_regex(value)
        return self

    def matched_values(self) -> list[str]:
        """The exact values otelcol matches: it skips "" (a regular expression "" matches anything)."""
        return self.values if self.enabled_regex_matching else [value for value in self.values if value]

    def notes(self) -> list[tuple[str, str]]:
        return ([] if self.key else [_NO_KEY]) + _unread_values(self)


class BooleanAttributeConfig(PolicyBlock):
    key: str = ""
    value: bool = False  # otelcol's default
    invert_match: bool = False

    def notes(self) -> list[tuple[str, str]]:
        return [] if self.key else [_NO_KEY]


class SpanCountConfig(PolicyBlock):
    min_spans: Int32 = 0  # below 0 too, as otelcol takes it: every count is at least it
    max_spans: Int32 = 0  # 0: no upper bound; below 0 it bounds as written, as in otelcol

    def notes(self) -> list[tuple[str, str]]:
        if self.max_spans < 0:
            return [("max_spans", "below 0: the policy never samples a trace, none having fewer than 0 spans, as "
                                  "in otelcol; raise it, or set 0 for no upper bound")]
        if self.min_spans < 0:
            return [("min_spans", "below 0 samples as 0 does: every trace has more spans; write 0")]
        if not self.max_spans or self.max_spans >= self.min_spans:
            return []
        return [("max_spans", f"the policy never samples a trace: no span count is at least min_spans "
                              f"({self.min_spans}) and at most max_spans ({self.max_spans}); raise it, or set 0 "
                              f"for no upper bound")]


class TraceStateConfig(PolicyBlock):
    key: str = ""
    values: list[str] = Field(default_factory=list)

    def matched_values(self) -> list[str]:
        """The values otelcol matches: it skips "" and one too long for a tracestate member."""
        return [value for value in self.values if value and len(self.key) + len(value) < TRACE_STATE_MEMBER_MAX]

    def notes(self) -> list[tuple[str, str]]:
        no_key = ("key", 'not set: no tracestate member has the key "", so the policy never samples a trace, as '
                         'in otelcol; set key')
        return ([] if self.key else [no_key]) + _unread_values(self)


class RateLimitingConfig(PolicyBlock):
    spans_per_second: int = 0  # 0 (otelcol's default) or below: a bucket that never refills
    burst_capacity: int = 0  # 0 or below: twice spans_per_second, as in otelcol

    def burst(self) -> int:
        return _burst(self.spans_per_second, self.burst_capacity)

    def notes(self) -> list[tuple[str, str]]:
        return _limit_notes(self.spans_per_second, self.burst_capacity, "spans")


class BytesLimitingConfig(PolicyBlock):
    bytes_per_second: int = 0  # 0 (otelcol's default) or below: a bucket that never refills
    burst_capacity: int = 0  # 0 or below: twice bytes_per_second, as in otelcol

    def burst(self) -> int:
        return _burst(self.bytes_per_second, self.burst_capacity)

    def notes(self) -> list[tuple[str, str]]:
        return _limit_notes(self.bytes_per_second, self.burst_capacity, "bytes")


def _burst(rate: int, capacity: int) -> int:
    """otelcol takes burst_capacity only above 0, else twice the rate (below 0 with it: no trace fits)."""
    return capacity if capacity > 0 else 2 * rate


def _limit_notes(rate: int, capacity: int, unit: str) -> list[tuple[str, str]]:
    key, burst = f"{unit}_per_second", _burst(rate, capacity)
    if rate <= 0:
        grants = (f"samples traces of at most burst_capacity ({burst}) {unit} in all" if burst > 0
                  else f"never samples a trace (its burst, twice {rate}, holds no {unit})")
        return [(key, f"{rate}: the bucket never refills, so the policy {grants}, as otelcol does; set the "
                      f"{unit} a second to keep")]
    if capacity < 0:
        return [("burst_capacity", f"below 0 counts as 0: twice {key} ({burst}), as in otelcol; write 0 or "
                                   f"remove it")]
    return []


class SharedPolicyConfig(Settings):
    """A policy of one of the simple types: what `and`, `drop` and `not` may hold."""

    types: ClassVar[tuple[str, ...]] = SIMPLE_TYPES
    blocks: ClassVar[dict[str, str]] = {name: name for name in SIMPLE_TYPES if name not in BLOCKLESS_TYPES}

    name: str = ""
    type: str
    latency: LatencyConfig | None = None
    numeric_attribute: NumericAttributeConfig | None = None
    probabilistic: ProbabilisticConfig | None = None
    status_code: StatusCodeConfig | None = None
    string_attribute: StringAttributeConfig | None = None
    rate_limiting: RateLimitingConfig | None = None
    bytes_limiting: BytesLimitingConfig | None = None
    span_count: SpanCountConfig | None = None
    trace_state: TraceStateConfig | None = None
    boolean_attribute: BooleanAttributeConfig | None = None
    ottl_condition: OttlConditionConfig | None = None
    # (key, why) for each key set aside as otelcol decodes and never reads it: policy_warnings
    _unread: list[tuple[str, str]] = PrivateAttr(default_factory=list)

    @model_validator(mode="wrap")
    @classmethod
    def _type_and_block(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        """The type is checked before the blocks, so a block under the wrong key is reported as that,
        not as its contents; the keys this type does not read are set aside before validation."""
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            return handler(data)  # reported as a missing or invalid `type`
        kind = data["type"]
        if kind not in cls.types:
            raise ValueError(f"unknown policy type {kind!r} here; supported: {', '.join(cls.types)}")
        unread = cls._unread_keys(kind, data)
        kept = {key: value for key, value in data.items() if key not in unread}
        if kind in cls.blocks and kept.get(kind) is None:
            kept[kind] = {}  # otelcol decodes no block and builds the policy from the zero one
            unread[kind] = ("not set: every setting takes its zero value, as in otelcol (see the warnings that "
                            "follow); write the block")
        policy = handler(kept)
        policy._unread = list(unread.items())
        return policy

    @classmethod
    def _unread_keys(cls, kind: str, data: dict[str, Any]) -> dict[str, str]:
        """Why otelcol ignores each key of `data` it ignores. It decodes a block of another type's
        strictly (an unknown key in it is refused) and takes any other key holding a mapping or
        nothing as settings of a policy extension, which no type reads."""
        fields = _keys_of(cls)
        unread = {}
        for key, value in data.items():
            if key == kind or (key in fields and key not in cls.blocks):
                continue
            if key in cls.blocks:
                unknown = sorted(set(value) - _keys_of(BLOCK_MODELS[key])) if isinstance(value, dict) else []
                if unknown or not isinstance(value, dict | None):
                    what = f"unknown key {', '.join(unknown)} in a {key} block" if unknown else "not a mapping"
                    raise ValueError(f"{key}: {what}, and the policy's type is {kind}, which does not read the "
                                     f"block; remove it or set type: {key}")
                unread[key] = (f"has no effect: it configures type {key}, but the policy's type is {kind}; "
                               f"remove it, or set type: {key}")
            elif isinstance(value, dict | None):
                unread[key] = (f"has no effect: a policy of type {kind} here does not read it (otelcol keeps it "
                               f"for a policy extension of that name); remove it")
        return unread

    def block(self) -> Any:
        """The settings of this policy's type (None for always_sample and trace_flags)."""
        attribute = self.blocks.get(self.type)
        return getattr(self, attribute) if attribute else None


class NotConfig(PolicyBlock):
    not_sub_policy: SharedPolicyConfig


class AndSubPolicyConfig(SharedPolicyConfig):
    """What and_sub_policy and drop_sub_policy hold: the simple types and `not`."""

    types: ClassVar[tuple[str, ...]] = SIMPLE_TYPES + ("not",)
    blocks: ClassVar[dict[str, str]] = {**SharedPolicyConfig.blocks, "not": "not_"}

    not_: NotConfig | None = Field(None, alias="not")


class AndConfig(PolicyBlock):
    and_sub_policy: list[AndSubPolicyConfig] = Field(default_factory=list)

    def notes(self) -> list[tuple[str, str]]:
        return [] if self.and_sub_policy else [("and_sub_policy", "empty: every trace is sampled, as otelcol's and "
                                                "with no sub-policies answers; add sub-policies or use always_sample")]


class DropConfig(PolicyBlock):
    drop_sub_policy: list[AndSubPolicyConfig] = Field(default_factory=list)

    def notes(self) -> list[tuple[str, str]]:
        return [] if self.drop_sub_policy else [("drop_sub_policy", "empty: every trace is dropped, as otelcol's "
                                                 "drop with no sub-policies answers; add sub-policies")]


class CompositeSubPolicyConfig(SharedPolicyConfig):
    """What composite_sub_policy holds: the simple types and `and`."""

    types: ClassVar[tuple[str, ...]] = SIMPLE_TYPES + ("and",)
    blocks: ClassVar[dict[str, str]] = {**SharedPolicyConfig.blocks, "and": "and_"}

    and_: AndConfig | None = Field(None, alias="and")


class RateAllocationConfig(Settings):
    policy: str = Field(min_length=1)
    # of max_total_spans_per_second (a share above it is capped at it); 0 or below: an equal share, as in otelcol
    percent: int


class CompositeConfig(PolicyBlock):
    max_total_spans_per_second: int = 0  # 0 (otelcol's default) or below: nothing is sampled
    policy_order: list[str] = Field(default_factory=list)  # not read by otelcol: policy_warnings
    UNSET_STAYS_UNSET: ClassVar[frozenset[str]] = frozenset({"policy_order"})  # print-config: only when written
    # a sub-policy's name keys its rate_allocation; unnamed or repeated ones share the one share
    composite_sub_policy: list[CompositeSubPolicyConfig] = Field(default_factory=list)
    rate_allocation: list[RateAllocationConfig] = Field(default_factory=list)

    def notes(self) -> list[tuple[str, str]]:
        """(key, why) for what makes the policy sample nothing, a name given twice, policy_order,
        and each rate_allocation entry otelcol's getRateAllocationMap does not use: one naming no
        sub-policy, or one a later entry for the same sub-policy overrides."""
        names = [sub.name for sub in self.composite_sub_policy]
        found = []
        if self.max_total_spans_per_second <= 0:
            found.append(("max_total_spans_per_second", f"{self.max_total_spans_per_second}: the policy never samples "
                                                        f"a trace, as in otelcol; set the spans a second to keep"))
        if not names:
            found.append(("composite_sub_policy", "empty: the policy never samples a trace, as in otelcol; add "
                                                  "sub-policies"))
        for index, name in enumerate(names):
            if name and name in names[:index]:
                found.append((f"composite_sub_policy::{index}::name", f"{name!r} also names composite_sub_policy::"
                              f"{names.index(name)}: both get the share allocated to that name, as in otelcol; "
                              f"name them apart"))
        if "policy_order" in self.model_fields_set:
            found.append(("policy_order", "has no effect: otelcol does not read it, and evaluates sub-policies in "
                                          "composite_sub_policy's order; order them there, and remove policy_order"))
        allocated = [allocation.policy for allocation in self.rate_allocation]
        for index, policy in enumerate(allocated):
            key = f"rate_allocation::{index}"
            if self.rate_allocation[index].percent < 0 and policy in names and policy not in allocated[index + 1:]:
                found.append((f"{key}::percent", "below 0: the equal share, as 0 gives, in otelcol; write 0, or the "
                                                 "percent to allocate"))
            if policy not in names:
                found.append((key, f"has no effect: {policy!r} is not a composite_sub_policy; use one of "
                                   f"{', '.join(names)}"))
            elif policy in allocated[index + 1:]:
                later = index + 1 + allocated[index + 1:].index(policy)
                found.append((key, f"has no effect: rate_allocation::{later} allocates {policy!r} again and "
                                   f"overrides it; keep one entry"))
        return found


class PolicyConfig(CompositeSubPolicyConfig):
    """One entry of `policies:`."""

    types: ClassVar[tuple[str, ...]] = SIMPLE_TYPES + ("and", "not", "drop", "composite")
    blocks: ClassVar[dict[str, str]] = {**CompositeSubPolicyConfig.blocks, "not": "not_", "drop": "drop",
                                        "composite": "composite"}

    name: str
    not_: NotConfig | None = Field(None, alias="not")
    drop: DropConfig | None = None
    composite: CompositeConfig | None = None

    @field_validator("name")
    @classmethod
    def _named(cls, name: str) -> str:
        if not name:
            raise ValueError("a policy needs a name: it labels the policy's decisions in the metrics")
        return name


def policy_warnings(policies: Sequence[SharedPolicyConfig], path: str = "policies") -> list[str]:
    """`path::key: message` for each key written in `policies`, sub-policies included, that has no effect."""
    return [warning for index, policy in enumerate(policies) for warning in _warnings(policy, f"{path}::{index}")]


def _warnings(policy: SharedPolicyConfig, path: str) -> list[str]:
    return [f"{path}::{key}: {why}" for key, why in policy._unread] + _block_warnings(policy, path)


def _block_warnings(policy: SharedPolicyConfig, path: str) -> list[str]:
    block, at = policy.block(), f"{path}::{policy.type}"
    found = [f"{at}::{key}: {why}" for key, why in block.notes()] if isinstance(block, PolicyBlock) else []
    if isinstance(block, CompositeConfig):
        found += policy_warnings(block.composite_sub_policy, f"{at}::composite_sub_policy")
    elif isinstance(block, NotConfig):
        found += _warnings(block.not_sub_policy, f"{at}::not_sub_policy")
    elif isinstance(block, AndConfig):
        found += policy_warnings(block.and_sub_policy, f"{at}::and_sub_policy")
    elif isinstance(block, DropConfig):
        found += policy_warnings(block.drop_sub_policy, f"{at}::drop_sub_policy")
    return found


def _unread_values(block: StringAttributeConfig | TraceStateConfig) -> list[tuple[str, str]]:
    """(key, why) for each value otelcol skips, and string_attribute's cache_max_size without regex matching."""
    found = [] if block.values else [("values", "empty: the policy never samples a trace, as in otelcol; add values")]
    matched = block.matched_values()
    for index, value in enumerate(block.values):
        if value in matched:
            continue
        why = ("an empty string never matches (otelcol skips it); remove it" if not value else
               f"{block.key}={value[:16]}... is too long: a tracestate member holds fewer than "
               f"{TRACE_STATE_MEMBER_MAX} characters, so otelcol skips it; shorten or remove it")
        found.append((f"values::{index}", f"has no effect: {why}"))
    if isinstance(block, StringAttributeConfig) and block.cache_max_size is not None:
        if not block.enabled_regex_matching:
            found.append(("cache_max_size", "has no effect: it sizes the cache of regular expression matches, which "
                                            "only enabled_regex_matching: true uses; remove it or enable regex "
                                            "matching"))
        elif block.cache_max_size < 0:
            found.append(("cache_max_size", "below 0: otelcol's 128 entries, as 0 gives; write 0, or the size"))
    return found


def _keys_of(model: type[BaseModel]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


# the settings block of each type, by its key: what a block for another type is checked against
BLOCK_MODELS: dict[str, type[BaseModel]] = {
    "latency": LatencyConfig, "numeric_attribute": NumericAttributeConfig, "probabilistic": ProbabilisticConfig,
    "status_code": StatusCodeConfig, "string_attribute": StringAttributeConfig,
    "rate_limiting": RateLimitingConfig, "bytes_limiting": BytesLimitingConfig, "span_count": SpanCountConfig,
    "trace_state": TraceStateConfig, "boolean_attribute": BooleanAttributeConfig,
    "ottl_condition": OttlConditionConfig, "and": AndConfig, "not": NotConfig, "drop": DropConfig,
    "composite": CompositeConfig}
