"""The `tail_sampling` processor: the `sampler` package under otelcol's type name (traces only)."""

from edgeagent.component import Factory, Role
from sampler.config import TailSamplingConfig
from sampler.stage import SamplingStage

FACTORY = Factory("tail_sampling", TailSamplingConfig, SamplingStage, signals=("traces",), role=Role.STAGE)
