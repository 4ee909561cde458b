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

from typing import Any, Literal

from pydantic import Field, model_validator

from edgeagent.component import ComponentConfig
from edgeagent.config.types import Duration, Uint32, Uint64
from sampler.cluster.config import SharedStateBackends
from sampler.compression import SpanCompressionConfig
from sampler.policies.config import PolicyConfig, policy_warnings
from sampler.relief import StressReliefConfig


class DecisionCacheConfig(ComponentConfig):
    # 0 (otelcol's default) still remembers the last `num_traces` decisions, as otelcol's trace
    # map does; a size sets the cache explicitly
    sampled_cache_size: int = Field(0, ge=0)
    non_sampled_cache_size: int = Field(0, ge=0)


class TailSamplingConfig(ComponentConfig):
    decision_wait: Duration = 30.0
    decision_wait_after_root_received: Duration = 0.0
    num_traces: Uint64 = Field(50_000, gt=0)
    # num_traces reached: wait for decisions to free room (the client waits, then gets a retryable
    # refusal after decision_wait) instead of deciding the oldest traces early
    block_on_overflow: bool = False
    expected_new_traces_per_sec: Uint64 = Field(0, ge=0)
    decision_cache: DecisionCacheConfig = Field(default_factory=DecisionCacheConfig)
    sample_on_first_match: bool = False
    # "trace-complete" only: decisions are made on whole traces from the durable buffer
    sampling_strategy: Literal["trace-complete"] = "trace-complete"
    # otelcol's shards divide num_traces and per-second limits so that the aggregate is the same
    # as with one; edgeagent decides in one loop, which is that aggregate (1 to 256, as otelcol)
    num_shards: Uint32 = Field(1, ge=0, le=256)
    # default false: pending traces stay on disk and are decided after the next start
    drop_pending_traces_on_shutdown: bool = False
    maximum_trace_size_bytes: Uint64 = Field(0, ge=0)  # a larger trace is dropped at once (0: no limit)
    policies: list[PolicyConfig] = Field(default_factory=list)
    # edgeagent
    max_buffered_spans: int = Field(0, ge=0)  # 0: only num_traces limits the buffer
    inactivity_timeout: Duration = 0.0
    max_trace_duration: Duration = 0.0
    stress_relief: StressReliefConfig = Field(default_factory=StressReliefConfig)
    span_compression: SpanCompressionConfig = Field(default_factory=SpanCompressionConfig)
    shared_state: SharedStateBackends | None = None  # decisions shared by hub replicas (Redis)

    @model_validator(mode="before")
    @classmethod
    def _unsupported(cls, data: Any) -> Any:
        if isinstance(data, dict):
            if data.get("sampling_strategy") == "span-ingest":
                raise ValueError("sampling_strategy: span-ingest decides on each batch as it arrives; edgeagent "
                                 "decides on whole traces from its durable buffer: use trace-complete (the default)")
            if "tail_storage" in data:
                raise ValueError("tail_storage: edgeagent buffers traces in its own durable queue storage "
                                 "(sending_queue::storage of the exporters); remove tail_storage")
        return data

    @model_validator(mode="after")
    def _check(self) -> TailSamplingConfig:
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
        return policy_warnings(self.policies)
