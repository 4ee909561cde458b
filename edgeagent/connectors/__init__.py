"""Connectors: the exporter of one pipeline and the receiver of others (otelcol's `connectors:`)."""
