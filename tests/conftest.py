import os
import sys
from pathlib import Path

import pytest

# Write bytecode caches even where the environment says not to (PYTHONDONTWRITEBYTECODE): every
# xdist worker imports every test module, rewriting its asserts, and the suite starts hundreds of
# agent processes; without caches each of them compiles everything again (a third of the fast
# loop's CPU time). Git ignores the caches.
sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.helpers.agent import AgentProcess  # noqa: E402
from tests.helpers.certs import make_certs  # noqa: E402
from tests.helpers.kafka import Broker  # noqa: E402
from tests.helpers.net import free_port  # noqa: E402
from tests.helpers.otelcol import otelcol, otelcol_binary  # noqa: E402,F401  (fixtures)
from tests.helpers.redis_server import RedisServer  # noqa: E402
from tests.helpers.upstream import Upstream  # noqa: E402
from tests.packaging.tools import require  # noqa: E402

TESTS = Path(__file__).resolve().parent
# Tests here start whole processes (edgeagent, redis-server, tansu, otelcol, package builds).
E2E_DIRECTORIES = {"e2e", "packaging", "interop"}
# Fixtures that start a process, or run a whole command (`validate`): a test asking for one is
# end-to-end wherever it lives.
PROCESS_FIXTURES = {"agents", "redis_server", "kafka", "otelcol", "validate"}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _directory(item) in E2E_DIRECTORIES or PROCESS_FIXTURES.intersection(item.fixturenames):
            item.add_marker(pytest.mark.e2e)
    items.sort(key=_start_order)
    # The first test on the installed wheel (made once per run, a quarter of a minute) comes next, so
    # the second worker makes it at the start instead of several workers waiting for it later.
    first = next((index for index, item in enumerate(items) if "installed" in item.fixturenames), None)
    if first is not None:
        items.insert(sum(1 for item in items if _start_order(item)[0] == 0), items.pop(first))


# The two .deb tests that take minutes after the build, in the order they lead the suite: the install
# test first, so that its Debian root downloads while the package builds.
LEADING = ("test_package_installs_upgrades_keeping_queue_and_config_removes_and_purges_in_a_debian_root",
           "test_lintian_reports_no_errors")


def _start_order(item: pytest.Item) -> tuple[int, int]:
    """Longest first, so the unit tests fill the workers' tails when the suite runs on pytest-xdist
    workers. The long .deb tests lead together: the first worker takes the first two tests, so one
    worker builds the package (minutes) and one Debian root for both, instead of another worker
    waiting for the package, idle, with a root of its own downloading. The .deb's short test comes
    with the other end-to-end ones, by when the package is built."""
    if Path(item.path).resolve() == TESTS / "packaging" / "test_debian_package.py":
        name = getattr(item, "originalname", item.name)
        if name in LEADING:
            return 0, LEADING.index(name)
    return (1 if item.get_closest_marker("e2e") else 2), 0


def _directory(item: pytest.Item) -> str:
    return Path(item.path).resolve().relative_to(TESTS).parts[0]


@pytest.fixture
def upstream():
    server = Upstream(free_port()).start()
    yield server
    server.stop()


@pytest.fixture
def agents(tmp_path):
    """Start agents with `agents(args, env)`; every one still running is killed at the end."""
    started: list[AgentProcess] = []

    def start(args: list[str], env: dict[str, str] | None = None, ports: AgentProcess | None = None,
              port_overrides: bool = True, wait: float = 30.0) -> AgentProcess:
        env = dict(env or {})
        if "--state-dir" not in args and not any(arg.startswith("--state-dir=") for arg in args):
            # the test's own state directory unless it names one: as root the default is /var/lib/edgeagent,
            # which tests running side by side would share (and take each other's queue lock in)
            env.setdefault("STATE_DIRECTORY", str(tmp_path / "default-state"))
        agent = AgentProcess(args=list(args), env=env, log_path=str(tmp_path / f"agent-{len(started)}.log"))
        if ports is not None:  # reuse the ports of an earlier run (restart)
            agent.grpc_port, agent.http_port = ports.grpc_port, ports.http_port
            agent.health_port, agent.metrics_port = ports.health_port, ports.metrics_port
        if port_overrides:
            agent.args += agent.ports_overrides()
        started.append(agent)
        return agent.start(wait)

    yield start
    for agent in started:
        agent.kill()


@pytest.fixture
def redis_server(tmp_path):
    """A real redis-server on a free loopback port (no persistence), killed by PID at the end."""
    require("redis-server", "apt-get install -y redis-server")
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(str(directory)).start()
    yield server
    server.kill()


@pytest.fixture
def certs(tmp_path):
    """A test CA with a server certificate (127.0.0.1, ::1, localhost) and a client certificate, as PEM files."""
    directory = tmp_path / "certs"
    directory.mkdir()
    return make_certs(str(directory))


@pytest.fixture
def kafka(tmp_path):
    """A tansu Kafka broker on a free loopback port, memory storage; killed by its PID at the end."""
    broker = Broker(tmp_path / "kafka").start()
    yield broker
    broker.kill()
