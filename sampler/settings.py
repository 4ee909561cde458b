"""The base of the sampler's config models: the YAML blocks of tail_sampling that the library reads."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, model_validator

from otel.godecode import decode_scalars, from_document


class Settings(BaseModel):
    """Unknown keys are errors, and scalar values read as otelcol reads them (the agent's
    ComponentConfig rules, kept here so the library stands alone)."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _decode_scalars(cls, data: Any, info: ValidationInfo) -> Any:
        return decode_scalars(cls, data, from_document(info))
