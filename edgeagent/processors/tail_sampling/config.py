"""`processors: tail_sampling:` exactly as otelcol writes it, plus edgeagent's own keys.

| seed (tail-sampling-selector)      | here                                                         |
|------------------------------------|--------------------------------------------------------------|
| `app.maxBufferSpans`               | `max_buffered_spans` (edgeagent)                             |
| `app.maxBufferTraces`              | `num_traces`                                                 |
| `app.inactivityTimeoutSecs`        | `inactivity_timeout` (edgeagent; replaces `decision_wait`)   |
| `app.maxTraceDurationSecs`         | `max_trace_duration` (edgeagent; bounds `inactivity_timeout`)|
| `app.evaluationWorkers`            | no key: decisions run on the agent's event loop; scale out   |
|                                    | with hub replicas                                            |
| `sampling.alwaysSampleErrors`      | a `status_code` policy with `[ERROR]`                        |
| `sampling.errorSampleRate`         | `and`: `status_code` ERROR + `probabilistic`                 |
| `sampling.sampleLatency`,          | `and`: `latency` (`threshold_ms`) + `probabilistic`          |
| `latencyThresholdMs`,              | (`sampling_percentage` = rate × 100)                         |
| `latencySampleRate`                |                                                              |
| `spanCompression.*`                | `span_compression` (see sampler.compression)                 |
| `redis.url`, `redis.password`,     | `shared_state: redis:` `url`, `password`, `pool_size`,       |
| `redis.poolSize`,                  | `connection_timeout` (edgeagent; decisions shared by hub     |
| `redis.connectionTimeoutSecs`      | replicas, see sampler.cluster.config)                        |
"""

from __future__ import annotations

from pydantic import Field, model_validator

from edgeagent.component import ComponentConfig
from edgeagent.config.types import Duration
from sampler.cluster.config import SharedStateBackends
from sampler.compression import SpanCompressionConfig
from sampler.policies.config import PolicyConfig
from sampler.relief import StressReliefConfig


class DecisionCacheConfig(ComponentConfig):
    # 0 (otelcol's default) still remembers the last `num_traces` decisions, as otelcol's trace
    # map does; a size sets the cache explicitly
    sampled_cache_size: int = Field(0, ge=0)
    non_sampled_cache_size: int = Field(0, ge=0)


class TailSamplingConfig(ComponentConfig):
    decision_wait: Duration = 30.0
    decision_wait_after_root_received: Duration = 0.0
    num_traces: int = Field(50_000, gt=0)
    expected_new_traces_per_sec: int = Field(0, ge=0)
    decision_cache: DecisionCacheConfig = Field(default_factory=DecisionCacheConfig)
    sample_on_first_match: bool = False
    policies: list[PolicyConfig] = Field(default_factory=list)
    # edgeagent
    max_buffered_spans: int = Field(0, ge=0)  # 0: only num_traces limits the buffer
    inactivity_timeout: Duration = 0.0
    max_trace_duration: Duration = 0.0
    stress_relief: StressReliefConfig = Field(default_factory=StressReliefConfig)
    span_compression: SpanCompressionConfig = Field(default_factory=SpanCompressionConfig)
    shared_state: SharedStateBackends | None = None  # decisions shared by hub replicas (Redis)

    @model_validator(mode="after")
    def _check(self) -> "TailSamplingConfig":
        if self.decision_wait <= 0:
            raise ValueError("decision_wait must be greater than zero (e.g. 10s)")
        if self.max_trace_duration and not self.inactivity_timeout:
            raise ValueError("max_trace_duration bounds inactivity_timeout: set inactivity_timeout too, or remove it")
        names = [policy.name for policy in self.policies]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"policy names must be unique; repeated: {', '.join(duplicates)}")
        return self

    def config_warnings(self) -> list[str]:
        if not self.policies:
            return ["no policies: every trace is dropped; add e.g. {name: all, type: always_sample}"]
        return []
