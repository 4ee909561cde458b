"""free_port across test processes: pytest-xdist workers must never be handed the same port."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers.net import free_port

_OTHER_WORKER = """
import json, sys
from tests.helpers import net
print(json.dumps([net._reserve(int(sys.argv[1])), [net.free_port() for _ in range(50)]]))
"""


@pytest.mark.e2e  # starts a second Python process
def test_a_port_handed_out_here_is_refused_to_another_process():
    mine = [free_port() for _ in range(50)]
    result = subprocess.run([sys.executable, "-c", _OTHER_WORKER, str(mine[0])], capture_output=True, text=True,
                            timeout=30, check=True)
    reserved, theirs = json.loads(result.stdout)
    assert reserved is False
    assert not set(mine) & set(theirs)


def test_one_process_is_never_handed_one_port_twice():
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)


def test_ports_lie_below_the_kernels_ephemeral_range_where_outgoing_connections_take_theirs():
    with open("/proc/sys/net/ipv4/ip_local_port_range") as handle:
        ephemeral_low = int(handle.read().split()[0])
    if ephemeral_low < 11_000:
        pytest.skip(f"the ephemeral range starts at {ephemeral_low}: no room below it")
    assert all(port < ephemeral_low for port in (free_port() for _ in range(100)))
