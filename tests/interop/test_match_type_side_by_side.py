"""include / exclude without match_type, side by side with otelcol 0.165: it has no default, and
refuses a block whose names or attribute values it must build a filter set for
(`unrecognized match_type: ''`), while a block of attribute keys alone or of a log severity number
alone needs none. edgeagent took strict as a default for every block."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from tests.config.conftest import REPO_ROOT, _environment

pytestmark = pytest.mark.e2e

ACTIONS = [{"key": "site", "value": "plant-7", "action": "upsert"}]
CASES = [  # (processor type, signal, settings, otelcol accepts it)
    ("attributes", "traces", {"include": {"span_names": ["checkout"]}, "actions": ACTIONS}, False),
    ("attributes", "traces", {"exclude": {"span_kinds": ["SPAN_KIND_CLIENT"]}, "actions": ACTIONS}, False),
    ("attributes", "traces", {"include": {"libraries": [{"name": "lib"}]}, "actions": ACTIONS}, False),
    ("attributes", "traces", {"include": {"attributes": [{"key": "k", "value": "v"}]}, "actions": ACTIONS}, False),
    ("attributes", "logs", {"include": {"log_bodies": ["x"]}, "actions": ACTIONS}, False),
    ("attributes", "metrics", {"include": {"metric_names": ["x"]}, "actions": ACTIONS}, False),
    ("attributes", "traces", {"include": {"attributes": [{"key": "k"}], "resources": [{"key": "r"}]},
                              "actions": ACTIONS}, True),
    ("filter", "traces", {"spans": {"exclude": {"span_names": ["x"]}}}, False),
    ("filter", "logs", {"logs": {"include": {"record_attributes": [{"key": "k", "value": "v"}]}}}, False),
    ("filter", "logs", {"logs": {"include": {"severity_number": {"min": "WARN"}}}}, True),
    ("filter", "logs", {"logs": {"exclude": {"resource_attributes": [{"key": "k"}]}}}, True),
    ("filter", "metrics", {"metrics": {"include": {"metric_names": ["x"]}}}, False),
    ("filter", "metrics", {"metrics": {"include": {"resource_attributes": [{"key": "k", "value": "v"}]}}}, False),
    ("filter", "metrics", {"metrics": {"include": {"resource_attributes": [{"key": "k"}]}}}, True),
]


@pytest.mark.parametrize("kind, signal, settings, accepted", CASES,
                         ids=[f"{number}-{case[0]}-{case[1]}" for number, case in enumerate(CASES)])
def test_a_block_without_match_type_is_taken_or_refused_as_otelcol_does(otelcol_binary, tmp_path, kind, signal,
                                                                        settings, accepted):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": "127.0.0.1:4318"}}}},
        "processors": {f"{kind}/x": settings},
        "exporters": {"debug": {}},
        "service": {"pipelines": {signal: {"receivers": ["otlp"], "processors": [f"{kind}/x"],
                                           "exporters": ["debug"]}}},
    }))
    theirs = subprocess.run([str(otelcol_binary), "validate", "--config", str(path)], capture_output=True, text=True,
                            timeout=60, check=False, stdin=subprocess.DEVNULL)
    assert (theirs.returncode == 0) == accepted, theirs.stderr[-1000:]
    ours = subprocess.run([sys.executable, "-m", "edgeagent", "validate", "--config", str(path)], capture_output=True,
                          text=True, timeout=60, check=False, env=_environment(None), cwd=REPO_ROOT,
                          stdin=subprocess.DEVNULL)
    assert (ours.returncode == 0) == accepted, ours.stdout[-1000:] + ours.stderr[-1000:]
    if not accepted:
        assert f"processors::{kind}/x::" in ours.stderr and "match_type is not set" in ours.stderr, ours.stderr
