"""The control socket: commands over a unix socket, answered as JSON or bytes, errors named."""

from __future__ import annotations

import asyncio
import os
import stat
from typing import Any

import pytest

from edgeagent.runtime import control


async def _status(params: dict[str, Any]) -> dict[str, Any]:
    return {"running": True, "asked": params}


async def _export(params: dict[str, Any]) -> bytes:
    return b"\x00" * 300_000


async def _refuse(params: dict[str, Any]) -> None:
    raise KeyError("no queue named 'x'")


def test_commands_answer_json_or_bytes_and_errors_become_exceptions(tmp_path):
    path = str(tmp_path / "state" / control.SOCKET_NAME)

    async def scenario() -> tuple[Any, Any, str, str, int]:
        server = control.ControlServer(path, {"status": _status, "export": _export, "purge": _refuse})
        await server.start()
        try:
            status = await control.call(path, "status", {"n": 1})
            exported = await control.call(path, "export")
            with pytest.raises(RuntimeError) as refused:
                await control.call(path, "purge", {"queue": "x"})
            with pytest.raises(RuntimeError) as unknown:
                await control.call(path, "nothing")
            mode = stat.S_IMODE(os.stat(path).st_mode)
        finally:
            await server.shutdown()
        return status, exported, str(refused.value), str(unknown.value), mode

    status, exported, refused, unknown, mode = asyncio.run(scenario())
    assert status == {"running": True, "asked": {"n": 1}}
    assert exported == b"\x00" * 300_000
    assert "no queue named 'x'" in refused and unknown == "unknown command"
    assert mode == 0o600
    assert not os.path.exists(path)  # removed at shutdown


def test_a_call_without_an_agent_is_a_connection_error(tmp_path):
    with pytest.raises(ConnectionError):
        asyncio.run(control.call(str(tmp_path / "control.sock"), "status"))
