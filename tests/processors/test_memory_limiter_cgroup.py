"""The memory the limiter's percentages are taken of: the limit of the agent's own cgroup."""

from __future__ import annotations

from pathlib import Path

from edgeagent.processors.memory_limiter import available_memory

MEMORY_MAX = 640 << 20  # the unit's MemoryMax=640M


def test_percentages_are_of_the_services_memory_max_under_systemd(tmp_path):
    """systemd gives a service no cgroup namespace: its limit is in its own cgroup's directory (cgroup v2,
    or v1's memory hierarchy), not at the hierarchy's root, which was all that was read. A config with
    limit_percentage then took 80 % of the machine's memory, far above MemoryMax, and the kernel's OOM
    killer acted before the limiter refused anything."""
    v2 = tmp_path / "v2"
    (v2 / "system.slice" / "edgeagent.service").mkdir(parents=True)
    (v2 / "system.slice" / "edgeagent.service" / "memory.max").write_text(f"{MEMORY_MAX}\n")
    (v2 / "system.slice" / "memory.max").write_text("max\n")
    own = tmp_path / "cgroup-v2"
    own.write_text("0::/system.slice/edgeagent.service\n")
    assert available_memory(str(v2), str(own)) == MEMORY_MAX

    v1 = tmp_path / "v1"
    (v1 / "memory" / "system.slice" / "edgeagent.service").mkdir(parents=True)
    (v1 / "memory" / "system.slice" / "edgeagent.service" / "memory.limit_in_bytes").write_text(f"{MEMORY_MAX}\n")
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    own = tmp_path / "cgroup-v1"
    own.write_text("12:pids:/system.slice/edgeagent.service\n"
                   "4:memory:/system.slice/edgeagent.service\n"
                   "0::/system.slice/edgeagent.service\n")
    assert available_memory(str(v1), str(own)) == MEMORY_MAX


def test_a_limit_on_an_enclosing_slice_bounds_the_service(tmp_path):
    root = tmp_path / "v2"
    (root / "edge.slice" / "edgeagent.service").mkdir(parents=True)
    (root / "edge.slice" / "memory.max").write_text(f"{MEMORY_MAX}\n")
    (root / "edge.slice" / "edgeagent.service" / "memory.max").write_text("max\n")
    own = tmp_path / "cgroup"
    own.write_text("0::/edge.slice/edgeagent.service\n")
    assert available_memory(str(root), str(own)) == MEMORY_MAX


def test_a_container_sees_its_limit_at_the_root_of_its_namespace(tmp_path):
    (tmp_path / "memory.max").write_text(f"{MEMORY_MAX}\n")
    own = tmp_path / "cgroup"
    own.write_text("0::/\n")
    assert available_memory(str(tmp_path), str(own)) == MEMORY_MAX
    assert available_memory(str(tmp_path / "nothing"), str(tmp_path / "none")) > 0  # no cgroup: the machine's
    assert not Path(tmp_path / "nothing").exists()


def test_a_limit_above_the_memory_the_agent_may_use_is_named_at_start(caplog):
    """A config written for a bigger host (the guides' hub collector: limit_mib 2048) under the unit's
    MemoryMax=640M or a container's limit: the kernel's OOM killer ended the agent long before the
    limiter refused anything, and nothing said why."""
    import asyncio
    import logging

    from edgeagent.processors.memory_limiter import MemoryLimiter, MemoryLimiterConfig

    available = available_memory()
    limit_mib = (available >> 20) + 1024
    limiter = MemoryLimiter("memory_limiter", MemoryLimiterConfig(limit_mib=limit_mib, check_interval=1.0), host=None)

    async def start_and_stop() -> None:
        await limiter.start()
        await limiter.shutdown()

    with caplog.at_level(logging.WARNING, logger="edgeagent"):
        asyncio.run(start_and_stop())
    warned = [record for record in caplog.records if "limit_mib" in record.getMessage()]
    assert warned, [record.getMessage() for record in caplog.records]
    assert getattr(warned[0], "limit_mib", None) == limit_mib
    assert getattr(warned[0], "available_mib", None) == available >> 20


def test_a_limit_within_the_memory_the_agent_may_use_draws_no_warning(caplog, tmp_path):
    import asyncio
    import logging

    from edgeagent.processors.memory_limiter import MemoryLimiter, MemoryLimiterConfig

    status = tmp_path / "status"  # an agent's own memory at start, below the limit (not this test process's)
    status.write_text("Name:\tedgeagent\nRssAnon:\t   30720 kB\n")
    limiter = MemoryLimiter("memory_limiter", MemoryLimiterConfig(limit_mib=64, check_interval=1.0), host=None,
                            status=str(status))

    async def start_and_stop() -> None:
        await limiter.start()
        await limiter.shutdown()

    with caplog.at_level(logging.WARNING, logger="edgeagent"):
        asyncio.run(start_and_stop())
    assert not [record for record in caplog.records if "limit_mib" in record.getMessage()]
