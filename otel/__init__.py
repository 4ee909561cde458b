"""What otelcol defines and both edgeagent and the sampler follow: the OTLP message shape, attribute
values as text, Go-style durations, the OTTL condition subset, Go regular expressions. Pure: it
imports neither edgeagent nor sampler."""
