"""otelcol 0.165 keys that edgeagent does not implement, so that validation refuses each naming it
and saying why, rather than as a typo. docs/otelcol-compatibility.md lists them with the keys
refused for a reason of their own (those say it in their component's validation).

Paths are relative to the component, `[]` standing for a list index; a key below one of them is
covered too.
"""

from __future__ import annotations

_KAFKA_CLIENT = ("auth::kerberos", "auth::sasl::aws_msk", "auth::sasl::oauthbearer_token_source",
                 "dial_timeout", "metadata::retry::max", "profiles")
_DIALER_MIDDLEWARE = "dialer_middleware"

_KEYS: dict[tuple[str, str], tuple[str, ...]] = {
    ("receivers", "kafka"): (*_KAFKA_CLIENT, "partition_processing", "telemetry",
                             "traces::exclude_topics", "metrics::exclude_topics", "logs::exclude_topics"),
    ("exporters", "kafka"): (*_KAFKA_CLIENT, "include_metadata_keys", "record_partitioner::least_backup",
                             "record_partitioner::extension",
                             "producer::compression_params", "producer::max_broker_write_bytes",
                             "producer::max_inflight_requests_per_broker",
                             *(f"{signal}::{key}" for signal in ("traces", "metrics", "logs")
                               for key in ("topic_from_metadata_key", "message_key_from_metadata_key"))),
    ("exporters", "otlp_http"): (_DIALER_MIDDLEWARE,),
    ("exporters", "otlp_grpc"): (_DIALER_MIDDLEWARE,),
    ("processors", "filter"): ("metrics::include::expressions", "metrics::exclude::expressions"),
}
_ALIASES = {"otlphttp": "otlp_http", "otlp": "otlp_grpc"}
_FROM_METADATA = ("the exporter sends from its durable queue, whose records keep no request metadata (only "
                  "the batch processor's metadata_keys values, to batch by)")
_REASONS = {
    "record_partitioner::least_backup": "the Kafka client (aiokafka) shows a partitioner no buffered counts",
    "record_partitioner::extension": "edgeagent implements no partitioner extensions",
    "profiles": "edgeagent carries no profiles signal",
    "include_metadata_keys": _FROM_METADATA,
    **{f"{signal}::{key}": _FROM_METADATA for signal in ("traces", "metrics", "logs")
       for key in ("topic_from_metadata_key", "message_key_from_metadata_key")},
    **{f"{signal}::exclude_topics": "it only narrows regular-expression topics, which edgeagent does not subscribe to"
       for signal in ("traces", "metrics", "logs")},
    "dial_timeout": "the Kafka client (aiokafka) has no connect timeout of its own",
    "metadata::retry::max": "the Kafka client (aiokafka) retries requests without counting them",
    _DIALER_MIDDLEWARE: "it needs otelcol's alpha feature gate pkg.configmiddleware.CustomTCPRouting and a "
                        "middleware extension, and edgeagent has neither",
    "metrics::include::expressions": "expr-lang expressions are not implemented; use metric_conditions (OTTL)",
    "metrics::exclude::expressions": "expr-lang expressions are not implemented; use metric_conditions (OTTL)",
}


def unsupported(kind: str, type_name: str, loc: list[str]) -> str | None:
    """Why the otelcol key at `loc` (inside a component of `kind` and `type_name`) is refused, or None
    when otelcol 0.165 has no such key there either."""
    if kind == "processors" and type_name == "tail_sampling" and _is_policy_key(loc):
        return (f"{loc[-1]!r} is no policy setting edgeagent knows; otelcol 0.165 takes a mapping there as the "
                f"config of a policy extension (which only a policy of that type reads, and edgeagent implements "
                f"none), and refuses anything else")
    for path in _KEYS.get((kind, _ALIASES.get(type_name, type_name) if kind == "exporters" else type_name), ()):
        pattern = path.split("::")
        if len(loc) >= len(pattern) and all(want == got or (want == "[]" and got.isdigit())
                                            for want, got in zip(pattern, loc, strict=False)):
            reason = _REASONS.get(path, "edgeagent does not implement it")
            return f"{'::'.join(loc)!r} is an otelcol 0.165 key, but {reason}; remove it"
    return None


def _is_policy_key(loc: list[str]) -> bool:
    """A key directly inside a tail_sampling policy (`policies::N::key`)."""
    return len(loc) == 3 and loc[0] == "policies" and loc[1].isdigit()
