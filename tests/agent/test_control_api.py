"""The control socket protocol: permissions, pipelining and precise errors."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path
from typing import Any

from agent.api import ControlServer, data_param, param
from agent.client import ControlClient, ControlError
from agent.errors import AgentError


def _handlers() -> dict[str, Any]:
    async def echo(params: dict[str, Any]) -> Any:
        return {"data": data_param(params).decode(errors="replace")}

    async def slow(params: dict[str, Any]) -> Any:
        await asyncio.sleep(param(params, "seconds", float))
        return "slow"

    async def fail(params: dict[str, Any]) -> Any:
        raise AgentError("not-leader", "go elsewhere", leader="node2")

    return {"echo": echo, "slow": slow, "fail": fail}


def _run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_socket_is_owner_only_and_answers_pipelined_requests_out_of_order(tmp_path: Path) -> None:
    path = tmp_path / "run" / "control.sock"

    async def story() -> None:
        server = ControlServer(path, _handlers())
        await server.start()
        try:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            client = await ControlClient.connect(str(path))
            slow = asyncio.create_task(client.call("slow", seconds=0.3))
            assert await client.call("echo", data="héllo") == {"data": "héllo"}
            assert not slow.done()  # the quick answer overtook the slow one
            assert await slow == "slow"
            await client.close()
        finally:
            await server.stop()
        assert not path.exists()

    _run(story())


def test_errors_are_structured_and_name_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"

    async def story() -> None:
        server = ControlServer(path, _handlers())
        await server.start()
        client = await ControlClient.connect(str(path))
        try:
            for method, params, code, text in [
                ("nope", {}, "unknown-method", "known: cancel, echo, fail, slow"),
                ("echo", {}, "bad-request", "missing parameter 'data'"),
                ("echo", {"data": 5}, "bad-request", "must be str"),
                ("echo", {"data_b64": "!!"}, "bad-request", "base64"),
                ("slow", {"seconds": True}, "bad-request", "must be float"),
                ("fail", {}, "not-leader", "go elsewhere"),
            ]:
                try:
                    await client.call(method, **params)
                except ControlError as exc:
                    assert exc.code == code and text in exc.message, (method, exc)
                else:
                    raise AssertionError(f"{method} should fail")
            reader, writer = await asyncio.open_unix_connection(str(path))
            writer.write(b"this is not json\n[1,2]\n")
            first = json.loads(await reader.readline())
            second = json.loads(await reader.readline())
            assert first["error"]["code"] == second["error"]["code"] == "bad-request"
            writer.close()
            assert await client.call("echo", data="still serving") == {"data": "still serving"}
        finally:
            await client.close()
            await server.stop()

    _run(story())


def test_a_second_server_on_a_live_socket_refuses_to_start(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"

    async def story() -> None:
        first = ControlServer(path, _handlers())
        await first.start()
        try:
            second = ControlServer(path, _handlers())
            try:
                await second.start()
            except AgentError as exc:
                assert "already serving" in exc.message
            else:
                raise AssertionError("second server started")
        finally:
            await first.stop()

    _run(story())
