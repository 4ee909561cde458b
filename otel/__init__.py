"""What otelcol defines and both edgeagent and the sampler follow: the OTLP message shape, attribute
values as text, Go-style durations. Pure: it imports neither edgeagent nor sampler."""
