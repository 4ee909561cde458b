"""How long a start may take before its supervisor kills it, against the longest start a shipped
config asks for: file_storage's `compaction.on_start` copies the whole live queue before the
receivers listen (measured: 2.1 GiB in 5.75 s on the CI machine's disk). The copy runs on the
queue's writer thread, so the health check answers meanwhile: `/health/live` 200, `/health/ready`
503 until the copy has ended and the agent is ready. The probes' windows are still held to the
slowest copy, the margin should a probe go unanswered during it."""

from __future__ import annotations

COMPACTION_MIB_PER_S = 10  # a slow SD card or network disk copying the queue file


def slowest_start(config: dict) -> float:
    """Seconds a start may take compacting a full queue; 0 without compaction at start."""
    storage = config.get("extensions", {}).get("file_storage", {})
    if not storage.get("compaction", {}).get("on_start"):
        return 0.0
    return storage.get("max_size_mib", 8192) / COMPACTION_MIB_PER_S


def probe_window(container: dict) -> float:
    """Seconds from the container's start until its liveness probe can kill it: the startup probe's
    window when there is one (liveness waits for it), else the liveness probe's own."""
    probe = container.get("startupProbe") or container["livenessProbe"]
    return probe.get("initialDelaySeconds", 0) + probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)
