"""A simulated node engine for demos and tests: it reacts to commands like a real one.

On ``load`` it adds its players and reports ``armed_ready`` (the node owning the first cue
also reports ``nextcue``); on ``go`` it takes the cue at its pointer (skipping disabled cues),
and the node that owns it announces the following cue at once, as upstream's engine does,
then plays it (``cue/add``, progress at 4 Hz coalesced to 2 Hz, ``cue/remove``);
``setnextcue`` moves the pointer; on ``stop`` it stops playing and re-arms. The first node the
load names reports the show's ``timecode`` once a second while it runs. The cue list comes
with the load: ``{"value": "<project>", "cues": [{"id", "node", "seconds"}...], "nodes": [...]}``.
After a start, a restart or a resync (`on_restore`, the node's restore callback) it reloads
a loaded show from the replica, puts its pointer back on the show's ``nextcue`` and re-arms.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from eventlog import State
from eventlog.logctx import ComponentLog
from replicas import NodeCommunications

log = ComponentLog("cuelog.engine")


class SimulatedEngine:
    def __init__(self, comms: NodeCommunications) -> None:
        self.comms = comms
        self.node_id = comms.node_id
        self.log = log.for_node(self.node_id)
        self.cues: list[dict[str, Any]] = []
        self.pointer = 0
        self._stop_playing = threading.Event()
        self._lock = threading.Lock()
        #: when the show started running (monotonic), while this node keeps the timecode
        self._started: float | None = None
        self._clock_stop = threading.Event()

    def on_restore(self, state: State, why: str) -> None:
        """The restore callback (after a start, a restart or a resync, once caught up, before
        any live command): with a show loaded, reload it (cue list, players), put the pointer
        back on the show's next cue and report armed again (a node that left must re-arm
        before the next GO is accepted; the show goes on from its pointer)."""
        if not state.engine.get("load"):
            return
        with self._lock:
            self._restore(state)
            mine = [c["id"] for c in self.cues if c.get("node") == self.node_id]
        players = state.players.get(self.node_id, {})
        for player in ["audiomixer_0", *(f"audioplayer_{cue}" for cue in mine)]:
            if player not in players:
                self.comms.add_player(player)
        self.log.info(
            "%s with show %r loaded: reloaded %d cues, next %r; re-arming",
            why,
            state.engine.get("load"),
            len(self.cues),
            self.cues[self.pointer]["id"] if self.pointer < len(self.cues) else "",
            seq=self.comms.applied_seq,
        )
        self.comms.send_status("armed_ready", {"armed": "yes"})

    def _restore(self, state: State) -> None:
        """The cue list and the pointer, rebuilt from `state` (call with the lock)."""
        self.cues = self._project_cues(state)
        nextcue = state.engine.get("nextcue", "")
        ids = [c["id"] for c in self.cues]
        self.pointer = ids.index(nextcue) if nextcue in ids else 0

    def on_command(self, name: str, value: Any, address: str) -> None:
        if name == "load":
            self._load()
        elif name == "go":
            self._go()
        elif name == "stop":
            self._stop()
        elif name == "setnextcue":
            self._set_next(value)

    def _project_cues(self, state: State | None = None) -> list[dict[str, Any]]:
        cmd = (state or self.comms.state).commands.get("load", {})
        cues = (cmd.get("data") or {}).get("cues", [])
        return [c for c in cues if isinstance(c, dict) and isinstance(c.get("id"), str)]

    def _load(self) -> None:
        with self._lock:
            self.cues = self._project_cues()
            self.pointer = 0
        self.comms.add_player("audiomixer_0")
        for cue in self.cues:
            if cue.get("node") == self.node_id:
                self.comms.add_player(f"audioplayer_{cue['id']}")
        if self.cues and self.cues[0].get("node") == self.node_id:
            self._announce_next(0)
        self.comms.send_status("armed_ready", {"armed": "yes"})

    def _announce_next(self, index: int) -> None:
        """Report the cue at `index` as next ("" after the last one)."""
        self.comms.update_nextcue(self.cues[index]["id"] if index < len(self.cues) else "")

    def _go(self) -> None:
        with self._lock:
            if not self.cues:  # no restore came (a show loaded meanwhile?): from the replica
                self._restore(self.comms.state)
            enabled = self.comms.state.cue_enabled
            while (
                self.pointer < len(self.cues)
                and enabled.get(self.cues[self.pointer]["id"]) is False
            ):
                self.pointer += 1  # a disabled cue is skipped
            if self.pointer >= len(self.cues):
                self.log.info("GO: no cue left", seq=self.comms.applied_seq)
                return
            cue = self.cues[self.pointer]
            self.pointer += 1
            index = self.pointer
        self._keep_time()
        if cue.get("node") != self.node_id:
            return
        self._announce_next(index)
        self._play(cue)

    def _set_next(self, value: Any) -> None:
        with self._lock:
            ids = [c["id"] for c in self.cues]
            if value not in ids:
                return
            self.pointer = ids.index(value)
            owner = self.cues[self.pointer].get("node")
        if owner == self.node_id:
            self._announce_next(self.pointer)

    def _keeps_time(self) -> bool:
        named = (self.comms.state.commands.get("load", {}).get("data") or {}).get("nodes")
        return isinstance(named, list) and bool(named) and named[0] == self.node_id

    def _keep_time(self) -> None:
        """The first node the load names reports the show's timecode once a second."""
        if self._started is not None or not self._keeps_time():
            return
        self._started = time.monotonic()
        self._clock_stop.clear()
        threading.Thread(target=self._clock, name="cuelog-timecode", daemon=True).start()

    def _clock(self) -> None:
        while not self._clock_stop.wait(1.0):
            started = self._started
            if started is None or self.comms.state.engine.get("running") != "yes":
                continue
            ms = int((time.monotonic() - started) * 1000) // 1000 * 1000
            self.comms.send_status("timecode", {"value": ms})

    def _play(self, cue: dict[str, Any]) -> None:
        cue_id = cue["id"]
        seconds = float(cue.get("seconds", 2.0))
        self._stop_playing.clear()
        self.log.info("playing %s for %.1f s", cue_id, seconds, seq=self.comms.applied_seq)
        self.comms.add_cue(cue_id, str(int(cue.get("offset", 0))))
        steps = max(1, int(seconds * 4))
        for i in range(1, steps):
            if self._stop_playing.wait(seconds / steps):
                break
            self.comms.update_cue(cue_id, max(1, min(99, i * 100 // steps)))
        self.comms.remove_cue(cue_id)

    def _stop(self) -> None:
        self._stop_playing.set()
        self._started = None
        self._clock_stop.set()
        with self._lock:
            self.pointer = 0
        if self.cues and self.cues[0].get("node") == self.node_id:
            self._announce_next(0)
        self.comms.send_status("armed_ready", {"armed": "yes"})
