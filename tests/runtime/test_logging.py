"""service::telemetry::logs as otelcol 0.165 reads it: where the lines go and the fields on each."""

from __future__ import annotations

import json
import logging

from edgeagent.runtime import logging as agent_logging


def test_output_paths_and_initial_fields_shape_every_line(tmp_path):
    """otelcol writes its log to every output path (files appended to) with initial_fields on each
    line; edgeagent refused both keys."""
    path = tmp_path / "agent.log"
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        agent_logging.configure("info", "json", output_paths=[str(path)], initial_fields={"site": "berlin"})
        logging.getLogger("edgeagent.test").warning("queue is full", extra={"queue": "otlp/traces"})
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:], root.level = handlers, level
    entry = json.loads(path.read_text().splitlines()[-1])
    assert (entry["msg"], entry["queue"], entry["site"]) == ("queue is full", "otlp/traces", "berlin")
