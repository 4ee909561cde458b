"""Processors: synchronous `process(payload) -> payload | None` steps of a pipeline."""
