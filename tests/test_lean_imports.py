"""Start-up stays lean: the agent on its embedded default config imports only what that config uses.

Each component's module is imported when its type is first looked up (`edgeagent/registry.py`),
and a few libraries only when first needed; these tests fail when a module-level import drags
one of them into every start.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys

import pytest

from edgeagent.lean import start_up_gc, steady_gc
from tests.helpers.agent import AgentProcess

# what the default config (OTLP in, memory_limiter and batch, otlphttp out, health_check) never needs
NOT_ON_THE_DEFAULT_PATH = [
    "aiokafka", "xxhash", "redis", "sampler", "re2",
    "edgeagent.receivers.kafka", "edgeagent.exporters.kafka", "edgeagent.configkafka",
    "edgeagent.exporters.debug", "edgeagent.connectors.failover",
    "edgeagent.processors.tail_sampling", "edgeagent.processors.filter", "edgeagent.processors.attributes",
    "edgeagent.processors.resource", "edgeagent.extensions.bearertokenauth",
    "psutil",  # read on the first scrape of the process metrics, not at start
    "prometheus_client",  # the metrics text is our own (extensions/metrics.py)
    # HTTP/1.1 both ways is our own (edgeagent/http1/); the stdlib's HTTP and mail modules are not needed
    "aiohttp", "multidict", "yarl", "urllib.request", "http.client",
    "importlib.metadata",  # pydantic's plugin search (edgeagent/lean.py)
    # periodic metric readers push through the otlp exporters' clients: only with a periodic reader
    "edgeagent.service.periodic", "edgeagent.exporters.otlp", "edgeagent.exporters.grpc_client",
    "edgeagent.service.metrics_otlp",
    # HTTP/2 comes with the gRPC receiver's first connection (receivers/grpc_connection.py)
    "h2", "hpack", "hyperframe", "edgeagent.receivers.grpc_connection",
    "cramjam",  # snappy and lz4, with the first body in them
    "tempfile",  # a compaction's scratch directory
    "edgeagent.queue.admin", "edgeagent.queue.maintenance",  # the control socket's verbs, with the first one
    # (the OTLP messages, protobuf's descriptor pool and JSON mapping come just after ready: LOADED_AHEAD)
]
# what a first request needs, loaded once the agent is ready (receivers/codec.py load_ahead), so that
# a start is ready without it and a first request meets it loaded, also with no descriptor free
LOADED_AHEAD = ["opentelemetry.proto.collector.trace.v1.trace_service_pb2", "google.rpc.status_pb2",
                "google.protobuf.json_format", "edgeagent.receivers.json_parse"]
# `python -m edgeagent`, writing the names in sys.modules to a file when the process exits
RUN_AND_LIST_MODULES = ("import atexit, json, runpy, sys\n"
                        "out = sys.argv.pop(1)\n"
                        "atexit.register(lambda: open(out, 'w').write(json.dumps(sorted(sys.modules))))\n"
                        "runpy.run_module('edgeagent', run_name='__main__', alter_sys=True)\n")


@pytest.mark.e2e
def test_the_default_config_imports_nothing_it_does_not_use(tmp_path):
    modules = tmp_path / "modules.json"
    agent = AgentProcess([], log_path=str(tmp_path / "agent.log"),
                         command=[sys.executable, "-c", RUN_AND_LIST_MODULES, str(modules)])
    agent.args = ["run", "--state-dir", str(tmp_path / "state"), *agent.ports_overrides()]
    agent.start()
    try:
        agent.metrics()  # a scrape, and a second of running: the memory limiter has checked once
    finally:
        assert agent.terminate() == 0
    imported = json.loads(modules.read_text())
    assert "edgeagent.receivers.otlp" in imported  # the list is the agent's
    unwanted = sorted(name for name in imported
                      if any(name == top or name.startswith(top + ".") for top in NOT_ON_THE_DEFAULT_PATH))
    assert unwanted == []
    assert set(LOADED_AHEAD) <= set(imported)


def test_a_verb_leaves_the_collector_at_its_steady_threshold(capsys):
    from edgeagent.cli import main

    steady = gc.get_threshold()
    assert main(["components"]) == 0
    assert gc.get_threshold() == steady
    start_up_gc()
    assert gc.get_threshold()[0] > steady[0] and gc.get_threshold()[1] > steady[1]
    steady_gc()
    assert gc.get_threshold() == steady


def test_pydantic_finds_no_plugins_and_validates_as_before():
    code = ("import sys, edgeagent\n"
            "from pydantic import BaseModel, Field, ValidationError\n"
            "class M(BaseModel):\n"
            "    n: int = Field(ge=1)\n"
            "assert M(n='2').n == 2\n"
            "try:\n"
            "    M(n=0)\n"
            "except ValidationError as e:\n"
            "    assert 'greater than or equal to 1' in str(e)\n"
            "else:\n"
            "    raise SystemExit('not validated')\n"
            "print('importlib.metadata' in sys.modules)\n")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.split() == ["False"]


def test_builtin_default_factories_are_answered_as_pydantic_answers_and_a_data_factory_gets_its_data():
    from pydantic import BaseModel, Field
    from pydantic._internal import _fields

    import edgeagent.config.loader  # noqa: F401  (puts lean.py's answer for builtin factories in place)
    from edgeagent.lean import _BUILTIN_FACTORIES

    ask = _fields.takes_validated_data_argument.__wrapped__  # pydantic's own question
    assert [factory for factory in _BUILTIN_FACTORIES if ask(factory)] == []

    class Settings(BaseModel):
        first: int = 1
        items: list[int] = Field(default_factory=list)
        table: dict[str, int] = Field(default_factory=dict)
        after_first: int = Field(default_factory=lambda data: data["first"] + 1)

    settings = Settings(first=4)
    assert (settings.items, settings.table, settings.after_first) == ([], {}, 5)
    assert Settings().items is not Settings().items


def test_imports_while_the_agent_starts_are_frozen_unwalked_and_not_otherwise(tmp_path):
    for name in ("before_start", "while_starting", "serving"):
        (tmp_path / f"{name}.py").write_text("class Thing:\n    pass\n")
    code = ("import gc, sys\n"
            f"sys.path.insert(0, {str(tmp_path)!r})\n"
            "from edgeagent import lean\n"
            "def frozen(module):\n"
            "    return gc.is_tracked(module.Thing) and not any(o is module.Thing for o in gc.get_objects())\n"
            "with lean.importing():\n"
            "    import before_start\n"
            "print(frozen(before_start))\n"
            "lean.start_up_gc()\n"
            "with lean.importing():\n"
            "    import while_starting\n"
            "print(frozen(while_starting), gc.isenabled())\n"
            "lean.serving_gc()\n"
            "with lean.importing():\n"
            "    import serving\n"
            "print(frozen(serving))\n")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.split() == ["False", "True", "True", "False"]


def test_a_reload_collects_the_cyclic_garbage_that_freezing_start_up_kept():
    import weakref

    from edgeagent.lean import freeze_start_up, refreeze

    class Component:
        pass

    old = Component()
    old.self = old  # a cycle: only the collector frees it
    gone = weakref.ref(old)
    gc.collect()
    try:
        freeze_start_up()
        del old  # replaced by a reload, but frozen: no pass frees it
        gc.collect()
        assert gone() is not None
        refreeze()
        assert gone() is None
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_a_serving_agent_makes_young_passes_rarer_and_a_verb_restores_them():
    from edgeagent.lean import serving_gc

    steady = gc.get_threshold()
    try:
        serving_gc()
        assert gc.get_threshold() == (50_000, *steady[1:])
    finally:
        steady_gc()
    assert gc.get_threshold() == steady


@pytest.mark.e2e
def test_a_command_that_asks_the_running_agent_imports_no_config_models(tmp_path):
    """`status`, `reload` and the queue verbs only talk to the agent's control socket: the config
    models, their decoding and pydantic were half of such a command's CPU time."""
    state = str(tmp_path / "state")
    agent = AgentProcess([], log_path=str(tmp_path / "agent.log"))
    agent.args = ["run", "--state-dir", state, *agent.ports_overrides()]
    agent.start()
    modules = tmp_path / "modules.json"
    try:
        for verb in (["status", "--json"], ["queue", "stats", "--json"]):
            subprocess.run([sys.executable, "-c", RUN_AND_LIST_MODULES, str(modules), *verb, "--state-dir", state],
                           check=True, capture_output=True, timeout=60)
            imported = json.loads(modules.read_text())
            assert "edgeagent.runtime.control" in imported  # the list is the command's
            # (pydantic.plugin._loader is lean.py's stand-in, put in sys.modules without an import)
            unwanted = sorted(name for name in imported if name in ("pydantic", "pydantic.main", "pydantic_core")
                              or name.startswith(("edgeagent.config.loader", "edgeagent.configdecode",
                                                  "edgeagent.component")))
            assert unwanted == [], verb
    finally:
        assert agent.terminate() == 0
