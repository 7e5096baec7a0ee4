"""The gateway over real sockets: websockets clients speaking python-osc, a real controller."""

from __future__ import annotations

from pathlib import Path

from gateway.view import DUMP_END
from tests.cluster import ipc_address
from tests.gateway_rig import command, expected_view, gateway_thread, open_client


async def test_a_client_gets_the_dump_then_a_command_reply(tmp_path: Path) -> None:
    with gateway_thread(tmp_path / "c.db", ipc_address(tmp_path)) as rig:
        rig.append(command("load", "show", cues=["c1", "c2"]))
        client = await open_client(rig.url)
        await client.until("the dump", lambda: bool(client.dump_ends))
        assert client.dump_ends[0][0] == 1
        assert client.values == expected_view(rig.get("/state"))
        await client.send("/engine/command/go")
        reply = await client.reply("/engine/command/go")
        assert reply["status"] == "error" and "not armed" in reply["error"]
        await client.conn.close()
        assert DUMP_END
