"""``replay serve``: play a recorded show to UIs through the gateway's own code path.

`Playback` stands in for the controller: it opens the log read-only, hands the gateway the
state at the starting point, then the recorded events at their recorded pace (times `speed`).
The UIs (upstream's Angular UI, the status page) see the show as they saw it live. Playback is
steered over OSC by any client allowed to control (``/replay/pause``, ``/replay/play``,
``/replay/seek <seq|time>``, ``/replay/speed <x>``); its position is published as
``/replay/position``, ``/replay/speed``, ``/replay/paused`` and ``/replay/end``. Commands from
UIs are refused: the show already happened.

`cmd_serve` is the subcommand: it finds the points to play from and to, and runs `serve` until
a stop signal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Protocol

from eventlog import CuelogError, Event, EventLog, Operation, State, UsageError
from eventlog.logctx import ComponentLog
from gateway.osc import OscMsg
from gateway.server import Gateway
from gateway.session import Session
from tools import args as types
from tools.reading import read_log, show_zone
from tools.replay_points import seq_of

log = ComponentLog("cuelog.replay", node="replay")

#: what a UI's command gets in replay mode
READ_ONLY: Final = "this is a replay of a recorded show: commands are refused"
#: events read from the file at a time
CHUNK: Final = 500


class Viewer(Protocol):
    """What playback feeds: a gateway (`Gateway` has all three)."""

    def on_open(self, log_id: str, state: State) -> None: ...

    def on_commit(self, events: list[Event], reasons: list[str | None]) -> None: ...

    def rewind(self, state: State) -> None: ...


class ReplayGateway(Gateway):
    """A gateway that refuses every command (its core is read-only from the first open)."""

    def on_open(self, log_id: str, state: State) -> None:
        super().on_open(log_id, state)
        if self.core is not None:
            self.core.read_only = READ_ONLY


class Playback:
    """A recorded log played at `speed` from seq `start` to seq `end` (a `CommitSource`)."""

    def __init__(
        self,
        path: str | Path,
        *,
        speed: float = 1.0,
        start: int = 0,
        end: int | None = None,
        seek_parser: Callable[[str, EventLog], int] | None = None,
    ) -> None:
        self.path = str(path)
        self.listeners: list[Any] = []  # `Viewer`s: the gateway adds itself
        self.ready = asyncio.Event()
        self.speed = types.check_speed(speed)
        self.start = start
        self.end = end
        self.paused = False
        #: the last seq played
        self.position = start
        self.log_id = ""
        self.finished = asyncio.Event()
        #: turns a seek argument (a time) into a seq (`tools.replay_points.seq_of`)
        self.seek_parser = seek_parser
        self._elog: EventLog | None = None
        self._wake = asyncio.Event()
        self._anchor: tuple[float, float] | None = None  # (monotonic, show ts)
        self._task: asyncio.Task[None] | None = None
        #: bumped by every control: a read or a wait that started before one is stale
        self._generation = 0
        #: each node's liveness at the position (for the gateway's node values)
        self._nodes: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------------ CommitSource

    def status(self) -> dict[str, Any]:
        elog = self._elog
        if elog is None:
            raise CuelogError("the recording is not open yet")
        state_nodes = self._nodes
        return {
            "log_id": self.log_id,
            "head_seq": self.position,
            "digest": "",
            "nodes": {
                node: {"online": bool(info.get("online")), "applied_seq": self.position}
                for node, info in state_nodes.items()
            },
            "osc": {
                "/replay/position": self.position,
                "/replay/speed": self.speed,
                "/replay/paused": 1 if self.paused else 0,
                "/replay/end": self.end_seq,
            },
            "replay": {"path": self.path, "speed": self.speed, "paused": self.paused},
        }

    async def append_local_results(self, ops: list[Operation]) -> list[tuple[int, str | None]]:
        raise CuelogError(READ_ONLY)

    # ------------------------------------------------------------------ controls

    @property
    def end_seq(self) -> int:
        elog = self._elog
        head = elog.head if elog is not None else 0
        return head if self.end is None else min(self.end, head)

    def _changed(self) -> None:
        self._generation += 1
        self._anchor = None  # re-anchored at the next event: no jump
        self._wake.set()

    def pause(self) -> None:
        self.paused = True
        self._changed()

    def play(self) -> None:
        self.paused = False
        self._changed()

    def set_speed(self, speed: float) -> None:
        self.speed = types.check_speed(speed)
        self._changed()

    def seek(self, seq: int) -> None:
        """Jump to just after `seq` (back or forward): every viewer gets the state there."""
        elog = self._elog
        if elog is None:
            raise UsageError("the recording is not open yet")
        seq = max(elog.base_seq, min(seq, self.end_seq))
        state = elog.state_at(seq)
        self.position = seq
        self._nodes = dict(state.nodes)
        for viewer in self.listeners:
            viewer.rewind(state.copy())
        self.finished.clear()
        self._changed()
        log.info("replay: seek to seq %d", seq, seq=seq)

    async def on_osc(self, session: Session, msg: OscMsg, gateway: Gateway) -> None:
        """``/replay/...`` from a UI; anything else is not an address of the replay."""
        core = gateway.core
        assert core is not None
        address, args = msg.address, msg.args
        if not address.startswith("/replay/"):
            core.answer(session, address, "error", error="unknown address")
            return
        if not session.control:
            core.answer(session, address, "denied", error="send /connect <passcode> first")
            return
        try:
            if address == "/replay/pause":
                self.pause()
            elif address == "/replay/play":
                self.play()
            elif address == "/replay/speed" and len(args) == 1:
                self.set_speed(float(args[0]))
            elif address == "/replay/seek" and len(args) == 1:
                self.seek(self._seek_target(args[0]))
            else:
                core.answer(
                    session,
                    address,
                    "error",
                    error="replay controls: /replay/pause, /replay/play, /replay/seek <seq|time>, "
                    "/replay/speed <x>",
                )
                return
        except (UsageError, ValueError, TypeError) as exc:
            core.answer(session, address, "error", error=str(exc))
            return
        core.answer(session, address, "ok", seq=self.position)

    def _seek_target(self, value: Any) -> int:
        if isinstance(value, bool):
            raise UsageError("seek to a seq or a time")
        if isinstance(value, int | float):
            if not math.isfinite(value):
                raise UsageError("seek to a seq or a time")
            return int(value)
        if isinstance(value, str) and self.seek_parser is not None and self._elog is not None:
            return self.seek_parser(value, self._elog)
        raise UsageError("seek to a seq or a time")

    # ------------------------------------------------------------------ playing

    async def run(self) -> None:
        self._task = asyncio.current_task()
        # not pinned: one read transaction held for a whole replay would keep a live log's
        # WAL from being checkpointed for hours; the seqs up to the head at open never change
        elog = await asyncio.to_thread(EventLog.open, self.path, readonly=True)
        self._elog = elog
        try:
            self.log_id = elog.log_id
            if self.end is None:
                self.end = elog.head
            start = max(elog.base_seq, min(self.start, elog.head))
            state = await asyncio.to_thread(elog.state_at, start)
            self.position = start
            self._nodes = dict(state.nodes)
            for viewer in self.listeners:
                viewer.on_open(elog.log_id, state.copy())
            self.ready.set()
            log.info(
                "replaying %s from seq %d to %d at %gx",
                self.path,
                start,
                self.end_seq,
                self.speed,
                seq=start,
            )
            await self._play(elog)
        finally:
            elog.close()

    async def _play(self, elog: EventLog) -> None:
        pending: list[Event] = []
        while True:
            if self.paused or self.position >= self.end_seq:
                if self.position >= self.end_seq and not self.finished.is_set():
                    self.finished.set()
                    log.info(
                        "replay reached seq %d (the end); seek to play again",
                        self.position,
                        seq=self.position,
                    )
                pending = []
                self._wake.clear()
                await self._wake.wait()
                continue
            if not pending or pending[0].seq != self.position + 1:
                generation = self._generation
                pending = await asyncio.to_thread(
                    elog.read, self.position, CHUNK, until=self.end_seq
                )
                if generation != self._generation:
                    pending = []  # a seek (or pause) came while it read: start over
                    continue
                if not pending:
                    self.position = self.end_seq
                    continue
            first = pending[0]
            if self._anchor is None:
                self._anchor = (time.monotonic(), first.ts)
            wall, show_ts = self._anchor
            due = wall + (first.ts - show_ts) / self.speed
            delay = due - time.monotonic()
            if delay > 0:
                self._wake.clear()
                try:
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                    continue  # a control changed something: start over from the position
                except TimeoutError:
                    pass
            if self.paused:
                continue
            now = time.monotonic()
            batch = [e for e in pending if wall + (e.ts - show_ts) / self.speed <= now + 0.001] or [
                first
            ]
            pending = pending[len(batch) :]
            self.position = batch[-1].seq
            for event in batch:
                if event.op.target in ("node_joined", "node_left") and event.op.data:
                    node = event.op.data.get("node")
                    if isinstance(node, str):
                        self._nodes[node] = {"online": event.op.target == "node_joined"}
            for viewer in self.listeners:
                viewer.on_commit(batch, [None] * len(batch))

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


async def serve(playback: Playback, host: str, port: int) -> None:
    """Run `playback` behind a read-only gateway on ``host:port`` until cancelled."""
    gateway = ReplayGateway(playback, host, port)  # registers itself as a listener

    async def on_osc(session: Session, msg: OscMsg) -> None:
        await playback.on_osc(session, msg, gateway)

    gateway.on_osc = on_osc
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(playback.run())
        tasks.create_task(gateway.run())


def cmd_serve(args: argparse.Namespace) -> int:
    """``replay serve``: play the log from ``--from`` to ``--to`` until a stop signal."""
    if args.ws is None:
        raise UsageError("replay serve needs --ws HOST:PORT")
    with read_log(args.log) as elog:
        tz, tz_name = show_zone(elog, args.utc)
        start = seq_of(args.from_, elog, tz) if args.from_ else elog.base_seq
        end = seq_of(args.to, elog, tz) if args.to else None
        if end is not None and end < start:
            raise UsageError(f"--to (seq {end}) is before --from (seq {start})")
    host, port = args.ws
    playback = Playback(
        args.log,
        speed=args.speed,
        start=start,
        end=end,
        seek_parser=lambda text, log: seq_of(text, log, tz),
    )
    print(
        f"replaying {args.log} at {args.speed:g}x (times in {tz_name}): UIs on "
        f"ws://{host}:{port}/realtime, status page http://{host}:{port}/ ; "
        "controls: /replay/pause, /replay/play, /replay/seek <seq|time>, /replay/speed <x>",
        file=sys.stderr,
    )
    task: list[asyncio.Task[None]] = []

    async def main() -> None:
        task.append(asyncio.ensure_future(serve(playback, host, port)))
        with contextlib.suppress(asyncio.CancelledError):
            await task[0]

    def stop() -> None:
        if task:
            task[0].cancel()

    return types.run_until_signal(main, stop)


__all__ = ["READ_ONLY", "Playback", "ReplayGateway", "cmd_serve", "serve"]
