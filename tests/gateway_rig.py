"""Helpers for gateway tests: a controller with its gateway on a thread, and an OSC client.

`GatewayThread` runs a real `Controller` and `Gateway` (real SQLite file, real NNG sockets,
real websockets server on port 0) on their own event loop. `OscClient` is a real websockets
client speaking python-osc bytes that keeps the latest value of every address it was sent.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from websockets.asyncio.client import ClientConnection, connect

from eventlog import ActionType, Operation, OperationType, State
from gateway.server import Gateway
from gateway.session import Policy
from gateway.view import DUMP_BEGIN, DUMP_END, SEQ, addresses, as_sent
from replicas import Controller
from tests.cluster import wait_for


class GatewayThread:
    """A controller and its gateway on one event loop in a daemon thread."""

    def __init__(
        self, db: str | Path, address: str, policy: Policy | None = None, **options: Any
    ) -> None:
        self.controller = Controller(db, address, **options)
        self.gateway = Gateway(self.controller, "127.0.0.1", 0, policy=policy)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)

    async def _main(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.controller.run())
            tasks.create_task(self.gateway.run())

    def _run(self) -> None:
        loop = self.loop
        try:
            loop.run_until_complete(self._main())
        finally:
            # connections still in their handshake: cancel and finish them, then close
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.wait(pending, timeout=5))
            loop.close()

    def start(self) -> GatewayThread:
        self.thread.start()
        wait_for("gateway ready", self.gateway.ready.is_set, 10)
        return self

    @property
    def port(self) -> int:
        assert self.gateway.bound_port is not None
        return self.gateway.bound_port

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/realtime"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def append(self, *ops: Operation) -> list[int]:
        seqs: list[int] = self.call(self.controller.append_local(list(ops)))
        return seqs

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.http + path, timeout=10) as reply:
            return json.loads(reply.read())

    def stop(self) -> None:
        def cancel() -> None:
            self.gateway.stop()
            self.controller.stop()

        self.loop.call_soon_threadsafe(cancel)
        self.thread.join(10)
        assert not self.thread.is_alive(), "controller thread did not stop"


@contextmanager
def gateway_thread(
    db: str | Path, address: str, policy: Policy | None = None, **options: Any
) -> Iterator[GatewayThread]:
    rig = GatewayThread(db, address, policy, **options).start()
    try:
        yield rig
    finally:
        rig.stop()


def command(name: str, value: Any = None, sender: str = "controller", **extra: Any) -> Operation:
    data = {"value": value, "address": f"/engine/command/{name}", **extra}
    return Operation(OperationType.COMMAND, ActionType.UPDATE, sender, name, data)


def osc(address: str, *args: Any) -> bytes:
    builder = OscMessageBuilder(address)
    for arg in args:
        builder.add_arg(arg)
    return bytes(builder.build().dgram)


def expected_view(state_json: dict[str, Any]) -> dict[str, Any]:
    """The address map a client should hold for a ``GET /state`` reply."""
    return as_sent(addresses(State.from_dict(state_json["state"])))


def _json_or_text(arg: Any) -> Any:
    try:
        return json.loads(arg)
    except (TypeError, ValueError):
        return arg


class OscClient:
    """A websockets client that folds what it receives into ``values`` (latest per address)."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.values: dict[str, Any] = {}
        #: the dump being received (between dump_begin and dump_end)
        self.dump: dict[str, Any] | None = None
        self.replies: list[tuple[str, Any]] = []
        self.dump_ends: list[tuple[Any, ...]] = []
        self.received: list[tuple[str, tuple[Any, ...]]] = []
        self.seq = -1

    async def send(self, address: str, *args: Any) -> None:
        await self.conn.send(osc(address, *args))

    async def recv_one(self, timeout: float = 5.0) -> tuple[str, tuple[Any, ...]]:
        frame = await asyncio.wait_for(self.conn.recv(), timeout)
        assert isinstance(frame, bytes), "the gateway sends binary frames only"
        msg = OscMessage(frame)
        item = (msg.address, tuple(msg.params))
        self.received.append(item)
        address, args = item
        if address == DUMP_BEGIN:
            self.dump = {}
        elif address == DUMP_END:
            self.dump_ends.append(args)
            self.seq = int(args[0])
            if self.dump is not None:
                if args[2] == "full":
                    self.values = self.dump
                else:
                    self.values.update(self.dump)
            self.dump = None
        elif address == SEQ:
            self.seq = int(args[0])
        elif address.startswith("/reply/"):
            self.replies.append((address, _json_or_text(args[0]) if args else None))
        elif not (address.startswith("/engine/status/node/") and address.endswith("/lag")):
            target = self.values if self.dump is None else self.dump
            target[address] = args[0] if len(args) == 1 else args
        return item

    async def until(self, what: str, check: Any, timeout: float = 10.0) -> None:
        """Receive until `check()` holds; fail after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not check():
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
            try:
                await self.recv_one(left)
            except TimeoutError:
                continue

    async def reply(self, address: str, timeout: float = 10.0) -> Any:
        """The next reply to `address` (``/reply`` + address), decoded."""
        want = "/reply" + address
        start = len([r for r in self.replies if r[0] == want])
        await self.until(
            f"a reply on {want}",
            lambda: len([r for r in self.replies if r[0] == want]) > start,
            timeout,
        )
        return [r for r in self.replies if r[0] == want][start][1]


async def open_client(url: str) -> OscClient:
    conn = await connect(url, max_size=2**20, open_timeout=10)
    return OscClient(conn)
