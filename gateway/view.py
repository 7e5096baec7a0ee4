"""The show state as UIs see it: one OSC address per value, kept current event by event.

`addresses(state)` is the whole picture at one seq: every address upstream's UI reads (engine
status, every cue of the loaded show, cue-enabled flags, mixer volumes) plus node liveness and
the values the controller engine broadcast (recorded as ``status`` events whose target is an
OSC address). `StatusView` folds events into its own `State` and says which addresses each
event changed, remembering the seq of every address's last change so a client that resumes
from a seq gets only what changed after it.

Rules it never breaks: the view after any sequence of events equals `addresses` of the folded
state (a hypothesis test checks it); no address appears twice; only OSC-sendable values (str,
int, finite float). No I/O, no clock.
"""

from __future__ import annotations

import re
import struct
from typing import Any, Final

from eventlog import CONTROLLER, NODE_JOINED, NODE_LEFT, Event, OperationType, State, apply
from eventlog.reducer import SHOW_CUES
from gateway.osc import INT32_MAX, INT32_MIN, fits_float32, fits_int32

Value = str | int | float

STATUS: Final = "/engine/status/"
RUNNING: Final = STATUS + "running"
ARMED: Final = STATUS + "armed"
LOAD: Final = STATUS + "load"
NEXTCUE: Final = STATUS + "nextcue"
TIMECODE: Final = STATUS + "timecode"
CUE: Final = STATUS + "cue/"
CUE_ENABLED: Final = STATUS + "cue_enabled/"
MIXER: Final = STATUS + "audio/mixer/"
NODE: Final = STATUS + "node/"
#: the dump markers and the periodic head seq (not part of the state)
DUMP_BEGIN: Final = STATUS + "dump_begin"
DUMP_END: Final = STATUS + "dump_end"
SEQ: Final = STATUS + "seq"

#: status events from the controller whose target starts with this are broadcast values
BROADCAST_PREFIX: Final = "/"
#: addresses the reducer owns: a broadcast to one of them never overrides the log's value
_OWNED_PREFIXES: Final = (CUE, CUE_ENABLED, MIXER, NODE)
_ENGINE: Final = (RUNNING, ARMED, LOAD, NEXTCUE, TIMECODE)
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _sendable(value: Any) -> Value | None:
    """A broadcast value as OSC can carry it (None: not sendable, skipped)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value if fits_int32(value) else None
    if isinstance(value, float):
        return value if fits_float32(value) else None
    if isinstance(value, str):
        return value
    return None


def _int32(value: Any) -> int:
    """An int the log holds, as an OSC ``i`` (clamped: a node may report any integer)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return 0
    return int(max(INT32_MIN, min(INT32_MAX, value)))


def _volume(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    volume = float(value)
    return volume if fits_float32(volume) else None


def _part(name: str) -> bool:
    """Whether an id from the log can be part of an address (no control characters: a NUL
    would end the address early and the rest would read as arguments)."""
    return bool(name) and not _CONTROL.search(name)


def _engine(state: State, out: dict[str, Value]) -> None:
    engine = state.engine
    out[RUNNING] = _text(engine["running"])
    out[ARMED] = _text(engine["armed"])
    out[LOAD] = _text(engine["load"])
    out[NEXTCUE] = _text(engine["nextcue"])
    out[TIMECODE] = _int32(engine["timecode"])


def _broadcasts(state: State, out: dict[str, Value]) -> None:
    for target, record in state.status.get(CONTROLLER, {}).items():
        if not target.startswith(BROADCAST_PREFIX) or owned(target) or not _part(target):
            continue
        data = record.get("data")
        value = _sendable(data.get("value") if isinstance(data, dict) else None)
        if value is not None:
            out[target] = value


def owned(address: str) -> bool:
    """Whether the log's state owns this address (a broadcast cannot set it)."""
    return (
        address in _ENGINE
        or address.startswith(_OWNED_PREFIXES)
        or address in (DUMP_BEGIN, DUMP_END, SEQ)
    )


def addresses(state: State) -> dict[str, Value]:
    """Every address and its value at ``state.seq``."""
    out: dict[str, Value] = {}
    _broadcasts(state, out)
    _engine(state, out)
    for cue, info in state.cues.items():
        if _part(cue):
            out[CUE + cue] = _int32(info["status"])
    for cue, flag in state.cue_enabled.items():
        if _part(cue):
            out[CUE_ENABLED + cue] = 1 if flag else 0
    for key, volume in state.mixer.items():
        sendable = _volume(volume)
        if sendable is not None and _part(key):
            out[MIXER + key + "/volume"] = sendable
    for node, info in state.nodes.items():
        if _part(node):
            out[NODE + node + "/online"] = 1 if info.get("online") else 0
    return out


def node_values(nodes: dict[str, dict[str, Any]], head: int) -> dict[str, Value]:
    """``/engine/status/node/<id>/lag`` for every node the controller tracks (-1: offline)."""
    out: dict[str, Value] = {}
    for node, info in nodes.items():
        applied = info.get("applied_seq", 0)
        out[f"{NODE}{node}/lag"] = max(0, head - int(applied)) if info.get("online") else -1
    return out


def as_sent(values: dict[str, Value]) -> dict[str, Value]:
    """`values` as a client reads them back: floats travel as OSC ``f`` (32 bits)."""
    return {
        a: struct.unpack(">f", struct.pack(">f", v))[0] if isinstance(v, float) else v
        for a, v in values.items()
    }


def _one(state: State, address: str) -> Value | None:
    """The current value of one address (None: the address has no value)."""
    if not _part(address):
        return None
    if address.startswith(CUE):
        info = state.cues.get(address[len(CUE) :])
        return None if info is None else _int32(info["status"])
    if address.startswith(CUE_ENABLED):
        flag = state.cue_enabled.get(address[len(CUE_ENABLED) :])
        return None if flag is None else (1 if flag else 0)
    if address.startswith(MIXER):
        volume = state.mixer.get(address[len(MIXER) : -len("/volume")])
        return None if volume is None else _volume(volume)
    if address.startswith(NODE):
        node = state.nodes.get(address[len(NODE) : -len("/online")])
        return None if node is None else (1 if node.get("online") else 0)
    record = state.status.get(CONTROLLER, {}).get(address)
    if record is None:
        return None
    data = record.get("data")
    return _sendable(data.get("value") if isinstance(data, dict) else None)


_FULL: Final = None


def _affected(event: Event) -> list[str] | None:
    """Addresses this event may change besides the engine's (None: maybe any)."""
    op = event.op
    data = op.data or {}
    if op.type is OperationType.CUE:
        return [CUE + op.target]
    if op.type is OperationType.COMMAND:
        target = op.target
        if target in ("load", "stop", "unload"):
            return _FULL
        if target == "cue_enabled":
            value = data.get("value")
            if isinstance(value, str) and len(value.split()) == 2:
                return [CUE_ENABLED + value.split()[0]]
            return []
        if target == "player_control":
            address = data.get("address")
            parts = address.strip("/").split("/") if isinstance(address, str) else []
            if len(parts) == 6:
                return [f"{MIXER}{parts[0]}/{parts[3]}/{parts[4]}/volume"]
        return []
    if op.type is OperationType.STATUS:
        target = op.target
        if target == "cue_enabled":
            cue = data.get("cue_id")
            return [CUE_ENABLED + cue] if isinstance(cue, str) else []
        if target in (NODE_JOINED, NODE_LEFT):
            node = data.get("node")
            return [NODE + node + "/online"] if isinstance(node, str) else []
        if target == "pong":
            return [NODE + op.sender + "/online"]
        if target == SHOW_CUES:
            return _FULL
        if op.sender == CONTROLLER and target.startswith(BROADCAST_PREFIX) and not owned(target):
            return [target]
    return []


class StatusView:
    """A `State` and its address map, advanced one event at a time.

    The view takes ownership of `state`. ``values`` is the address map at ``state.seq``;
    ``changed_at[address]`` is the seq of its last change (``base`` for values it started
    with); ``removed_at`` is the seq of the latest event that removed an address (a client
    resuming from before it needs a full dump).
    """

    def __init__(self, state: State) -> None:
        self.state = state
        self.base = state.seq
        self.values = addresses(state)
        self.changed_at: dict[str, int] = dict.fromkeys(self.values, state.seq)
        self.removed_at = 0

    @property
    def seq(self) -> int:
        return self.state.seq

    def apply(self, event: Event) -> tuple[str | None, list[tuple[str, Value]]]:
        """Fold one event; return the reducer's reason and the changed addresses in order."""
        reason = apply(self.state, event)
        changes: list[tuple[str, Value]] = []
        values = self.values
        affected = _affected(event)
        if affected is _FULL:
            fresh = addresses(self.state)
            for address in [a for a in values if a not in fresh]:
                del values[address]
                del self.changed_at[address]
                self.removed_at = event.seq
            for address, value in fresh.items():
                if values.get(address, _MISSING) != value or type(values[address]) is not type(
                    value
                ):
                    self._set(address, value, event.seq, changes)
            return reason, changes
        engine: dict[str, Value] = {}
        _engine(self.state, engine)
        for address, value in engine.items():
            if values[address] != value:
                self._set(address, value, event.seq, changes)
        for address in affected:
            found = _one(self.state, address)
            if found is None:
                if address in values:
                    del values[address]
                    del self.changed_at[address]
                    self.removed_at = event.seq
            elif values.get(address, _MISSING) != found or type(values[address]) is not type(found):
                self._set(address, found, event.seq, changes)
        return reason, changes

    def _set(self, address: str, value: Value, seq: int, changes: list[tuple[str, Value]]) -> None:
        self.values[address] = value
        self.changed_at[address] = seq
        changes.append((address, value))

    def since(self, seq: int) -> list[tuple[str, Value]] | None:
        """What changed after `seq`, or None if only a full dump can say (too old, removals)."""
        if seq < self.base or seq > self.state.seq or self.removed_at > seq:
            return None
        changed = self.changed_at
        return [(a, v) for a, v in self.values.items() if changed[a] > seq]


class _Missing:
    pass


_MISSING: Final = _Missing()
