"""The base of the sampler's config models: the YAML blocks of tail_sampling that the library reads."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Settings(BaseModel):
    """Unknown keys are errors, as in otelcol (the agent's ComponentConfig rule, kept here so the
    library stands alone)."""

    model_config = ConfigDict(extra="forbid", validate_default=True)
