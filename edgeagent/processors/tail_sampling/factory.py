"""The `tail_sampling` processor under otelcol's type name (traces only)."""

from edgeagent.component import Factory, Role
from edgeagent.processors.tail_sampling.config import TailSamplingConfig
from edgeagent.processors.tail_sampling.stage import SamplingStage

FACTORY = Factory("tail_sampling", TailSamplingConfig, SamplingStage, signals=("traces",), role=Role.STAGE)
