"""`string_attribute`: sample a trace with a resource or span attribute among `values`.

Exact matching uses a set. With `enabled_regex_matching` each value is a Go regular expression
that may match anywhere in the attribute (otelcol does not anchor them), and results are kept
in an LRU cache of `cache_max_size` entries (otelcol's 128 when 0 or unset). A span attribute
must be a non-empty string to match; a resource attribute of another type is matched as "".
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from sampler.policies.attributes import AttributePolicy
from sampler.policies.config import StringAttributeConfig, compile_go_regex

DEFAULT_CACHE_SIZE = 128


class StringAttribute(AttributePolicy):
    def __init__(self, config: StringAttributeConfig):
        # a batch can only hold an exact match if it contains one of the values
        needles = () if config.enabled_regex_matching else [value.encode() for value in config.matched_values()]
        super().__init__(config.key, config.invert_match, needles)
        if config.enabled_regex_matching:
            self._patterns = [compile_go_regex(value) for value in config.values]
            self.cache: OrderedDict[str, bool] = OrderedDict()  # match results by value, least recent first
            size = config.cache_max_size or 0
            self._cache_size = size if size > 0 else DEFAULT_CACHE_SIZE
            self.match_text: Callable[[str], bool] = self._regex_matches
        else:
            values = frozenset(config.matched_values())
            self.match_text = values.__contains__

    def _regex_matches(self, text: str) -> bool:
        cache = self.cache
        known = cache.get(text)
        if known is not None:
            cache.move_to_end(text)
            return known
        matched = any(pattern.search(text) for pattern in self._patterns)
        cache[text] = matched
        if len(cache) > self._cache_size:
            cache.popitem(last=False)
        return matched

    def resource_match(self, value: AnyValue) -> bool:
        return self.match_text(value.string_value)

    def span_match(self, value: AnyValue) -> bool:
        text = value.string_value
        return bool(text) and self.match_text(text)
