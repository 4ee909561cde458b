"""Span compression: runs of similar, short exit spans in a kept trace become one composite span.

Elastic APM's span compression (the APM agent specification's "Compressing spans"), done on the
OTLP spans of a trace the sampler keeps, before the trace is forwarded. N+1 queries and chatty
cache or HTTP clients then cost one span instead of hundreds, with count and net duration kept.
"""

from __future__ import annotations

import re
from functools import cached_property
from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from edgeagent.component import ComponentConfig


def _valid_pattern(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{pattern!r} is not a valid regular expression: {exc}") from exc
    return pattern


class SpanCompressionConfig(ComponentConfig):
    """Span compression settings; the seed deployment guide's `spanCompression` block, renamed:

    | seed (camelCase)        | here (snake_case)         | default | meaning                                 |
    |-------------------------|---------------------------|---------|-----------------------------------------|
    | `enabled`               | `enabled`                 | false   | compress kept traces at all             |
    | `minCompressionCount`   | `min_compression_count`   | 3       | fewest spans a composite stands for     |
    | `compressionWindowSecs` | `compression_window_secs` | 60      | latest start after a run's first start  |
    | `maxSpanDurationSecs`   | `max_span_duration_secs`  | 60      | longest span that is compressed         |
    | `compressOperations`    | `compress_operations`     | []      | when not empty, only these span names   |
    | `excludeOperations`     | `exclude_operations`      | []      | never these span names                  |
    | `sqlPatterns`           | `sql_patterns`            | []      | statements one matches: one operation   |

    Off by default: a composite keeps only its first span's statement and attributes.
    """

    enabled: bool = False
    min_compression_count: int = Field(3, ge=2)  # a composite stands for at least two spans
    compression_window_secs: float = Field(60.0, gt=0)
    max_span_duration_secs: float = Field(60.0, gt=0)
    compress_operations: list[str] = Field(default_factory=list)
    exclude_operations: list[str] = Field(default_factory=list)
    sql_patterns: list[Annotated[str, AfterValidator(_valid_pattern)]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> "SpanCompressionConfig":
        both = sorted(set(self.compress_operations) & set(self.exclude_operations))
        if both:
            raise ValueError(f"{', '.join(map(repr, both))} cannot be in both compress_operations and "
                             f"exclude_operations")
        return self

    @cached_property
    def compiled_sql_patterns(self) -> tuple[re.Pattern[str], ...]:
        return tuple(re.compile(pattern) for pattern in self.sql_patterns)

    @cached_property
    def compressed_names(self) -> frozenset[str]:
        return frozenset(self.compress_operations)

    @cached_property
    def excluded_names(self) -> frozenset[str]:
        return frozenset(self.exclude_operations)
