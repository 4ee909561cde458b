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
