"""Start-up stays lean: the agent on its embedded default config imports only what that config uses.

Each component's module is imported when its type is first looked up (`edgeagent/registry.py`),
and a few libraries only when first needed; these tests fail when a module-level import drags
one of them into every start.
"""

from __future__ import annotations

import gc
import json
import ssl
import subprocess
import sys

import pytest

from edgeagent.runtime.lean import start_up_gc, steady_gc
from tests.helpers.agent import AgentProcess

# what the default config (OTLP in, memory_limiter and batch, otlphttp out, health_check) never needs
NOT_ON_THE_DEFAULT_PATH = [
    "aiokafka", "xxhash", "redis", "sampler",
    "edgeagent.receivers.kafka", "edgeagent.exporters.kafka", "edgeagent.configkafka",
    "edgeagent.exporters.debug", "edgeagent.connectors.failover",
    "edgeagent.processors.tail_sampling", "edgeagent.processors.filter", "edgeagent.processors.attributes",
    "edgeagent.processors.resource", "edgeagent.extensions.bearertokenauth",
    "psutil",  # read on the first scrape of the process metrics, not at start
    "prometheus_client",  # the metrics text is our own (extensions/metrics.py)
]
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
    assert "edgeagent.receivers.otlp" in imported and "aiohttp" in imported  # the list is the agent's
    unwanted = sorted(name for name in imported
                      if any(name == top or name.startswith(top + ".") for top in NOT_ON_THE_DEFAULT_PATH))
    assert unwanted == []


def test_aiohttp_imported_leanly_keeps_no_roots_and_leaves_ssl_and_mimetypes_as_they_were():
    code = ("import mimetypes, ssl\n"
            "from edgeagent.runtime.lean import import_aiohttp\n"
            "import_aiohttp()\n"
            "import aiohttp.connector as c, aiohttp.web_fileresponse as f\n"
            "print(c._SSL_CONTEXT_VERIFIED.cert_store_stats()['x509_ca'],\n"
            "      c._SSL_CONTEXT_UNVERIFIED.cert_store_stats()['x509_ca'],\n"
            "      ssl.create_default_context().cert_store_stats()['x509_ca'],\n"
            "      mimetypes.inited, f.CONTENT_TYPES.guess_type('a.json')[0],\n"
            "      mimetypes.guess_type('a.html')[0], mimetypes.inited)\n")
    if ssl.create_default_context().cert_store_stats()["x509_ca"] == 0:
        pytest.skip("this system has no CA bundle to leave out")
    verified, unverified, system, read_first, served, guessed, read_then = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert (verified, unverified) == ("0", "0")
    assert int(system) > 0
    # aiohttp's table is built without reading the system's types; the module reads them when first asked
    assert (read_first, served, guessed, read_then) == ("False", "application/json", "text/html", "True")


def test_a_verb_leaves_the_collector_at_its_steady_threshold(capsys):
    from edgeagent.cli import main

    steady = gc.get_threshold()
    assert main(["components"]) == 0
    assert gc.get_threshold() == steady
    start_up_gc()
    assert gc.get_threshold()[0] > steady[0]
    steady_gc()
    assert gc.get_threshold() == steady
