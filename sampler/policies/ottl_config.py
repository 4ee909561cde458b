"""The `ottl_condition` block, as otelcol writes it:

    ottl_condition:
      error_mode: ignore          # ignore | propagate | silent (any case, as otelcol reads it)
      span: ['attributes["http.status_code"] >= 500']
      spanevent: ['name == "exception"']

Every condition is parsed and compiled here, so a condition that does not parse, a path or
function otel.ottl does not support, is refused at its own YAML path
(`ottl_condition::span::0`) with the column. otelcol needs at least one condition.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from otel.ottl import ContextName, OttlSyntaxError, compile_condition
from sampler.settings import Settings


def _compiles(context: ContextName) -> AfterValidator:
    def check(text: str) -> str:
        try:
            compile_condition(text, context)
        except OttlSyntaxError as error:
            raise ValueError(f"OTTL {context} condition: {error.describe(text)}") from None
        return text
    return AfterValidator(check)


SpanCondition = Annotated[str, _compiles("span")]
SpanEventCondition = Annotated[str, _compiles("spanevent")]


class OttlConditionConfig(Settings):
    # unset: otelcol's zero value, which acts as silent
    error_mode: Literal["ignore", "propagate", "silent"] | None = None
    span: list[SpanCondition] = Field(default_factory=list)
    spanevent: list[SpanEventCondition] = Field(default_factory=list)

    @field_validator("error_mode", mode="before")
    @classmethod
    def _any_case(cls, mode: Any) -> Any:
        return mode.lower() if isinstance(mode, str) else mode

    @model_validator(mode="after")
    def _some(self) -> OttlConditionConfig:
        if not self.span and not self.spanevent:
            raise ValueError("give at least one condition under span or spanevent (otelcol refuses an empty "
                             "ottl_condition too)")
        return self
