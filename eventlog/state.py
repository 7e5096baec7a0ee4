"""The replicated show state, its canonical encoding and its digest.

`State` holds only plain JSON values (dicts keyed by strings, lists, strings, numbers), so its
canonical encoding (sorted keys) is the same on every machine, Python version and hash seed,
and so is `digest`. The reducer that changes it lives in `eventlog.reducer`. No I/O here.
"""

from __future__ import annotations

import hashlib
from enum import IntEnum
from typing import Any, Final

from eventlog.errors import DecodeError
from eventlog.event import dumps, loads

SCHEMA: Final = 1


def empty_engine() -> dict[str, Any]:
    return {
        "running": "",
        "armed": "",
        "load": "",
        "nextcue": "",
        "timecode": 0,
        "currentcue": [],
    }


class CueStatus(IntEnum):
    """A cue's ``status`` in the state (upstream's encoding): 0 not played yet, 1-99 playing
    (its progress in percent), 100 done (it reached the end, or its node removed it), -1 an
    error on its node. A STOP sets every cue back to 0."""

    UNPLAYED = 0
    DONE = 100
    ERROR = -1

    @staticmethod
    def is_playing(status: int) -> bool:
        return 1 <= status <= 99

    @staticmethod
    def is_final(status: int) -> bool:
        """Whether a progress report ends the cue's run (done, or an error)."""
        return status in _FINAL


#: the statuses that end a cue's run, as plain ints (a set of enum members costs the reducer's
#: hot path an attribute lookup each)
_FINAL: Final = frozenset({100, -1})


class State:
    """The state after folding events 1..seq.

    Attributes are plain containers; readers may look but only the reducer writes them.

    - ``engine``: running/armed/load/nextcue/timecode and ``currentcue`` ([cue, offset] pairs).
    - ``required``: node ids that must report armed_ready since the last load.
    - ``armed_nodes``: node id -> seq of its armed_ready since the last load or stop.
    - ``cues``: cue id -> {status, offset, node, seq}; status 0 unplayed, 1-99 playing,
      100 played, -1 error.
    - ``cue_enabled``: cue id -> bool.
    - ``mixer``: "node/out/ch" -> volume (finite float).
    - ``players``: node id -> player id -> data.
    - ``nodes``: node id -> {online, seq (of the last change), pong (seq of the last pong)}.
    - ``status``: sender -> target -> {data, seq}: the latest value of every status target.
    - ``commands``: target -> {data, seq, sender, accepted}: the latest of every command.
    - ``ignored``: how many events were recorded no-ops (stale, refused).
    """

    __slots__ = (
        "armed_nodes",
        "commands",
        "cue_enabled",
        "cues",
        "engine",
        "ignored",
        "mixer",
        "nodes",
        "players",
        "required",
        "seq",
        "status",
    )

    def __init__(self) -> None:
        self.seq = 0
        self.engine: dict[str, Any] = empty_engine()
        self.required: list[str] = []
        self.armed_nodes: dict[str, int] = {}
        self.cues: dict[str, dict[str, Any]] = {}
        self.cue_enabled: dict[str, bool] = {}
        self.mixer: dict[str, float] = {}
        self.players: dict[str, dict[str, Any]] = {}
        self.nodes: dict[str, dict[str, Any]] = {}
        self.status: dict[str, dict[str, dict[str, Any]]] = {}
        self.commands: dict[str, dict[str, Any]] = {}
        self.ignored = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "seq": self.seq,
            "engine": self.engine,
            "required": self.required,
            "armed_nodes": self.armed_nodes,
            "cues": self.cues,
            "cue_enabled": self.cue_enabled,
            "mixer": self.mixer,
            "players": self.players,
            "nodes": self.nodes,
            "status": self.status,
            "commands": self.commands,
            "ignored": self.ignored,
        }

    def encode(self) -> bytes:
        """Canonical bytes of the whole state."""
        return dumps(self.to_dict())

    @classmethod
    def from_dict(cls, raw: Any) -> State:
        """Rebuild a state from `to_dict` output (decoded JSON). Raises `DecodeError`."""
        if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
            raise DecodeError("not an encoded cuelog state (missing or unknown schema)")
        state = cls()
        try:
            seq = raw["seq"]
            if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
                raise DecodeError("state seq must be a non-negative integer")
            state.seq = seq
            for name in (
                "engine",
                "armed_nodes",
                "cues",
                "cue_enabled",
                "mixer",
                "players",
                "nodes",
                "status",
                "commands",
            ):
                value = raw[name]
                if not isinstance(value, dict):
                    raise DecodeError(f"state field {name!r} must be an object")
                setattr(state, name, value)
            if not isinstance(raw["required"], list):
                raise DecodeError("state field 'required' must be a list")
            state.required = raw["required"]
            ignored = raw["ignored"]
            if isinstance(ignored, bool) or not isinstance(ignored, int) or ignored < 0:
                raise DecodeError("state field 'ignored' must be a non-negative integer")
            state.ignored = ignored
        except KeyError as exc:
            raise DecodeError(f"encoded state is missing {exc}") from None
        return state

    @classmethod
    def decode(cls, raw: bytes | str) -> State:
        return cls.from_dict(loads(raw))

    def copy(self) -> State:
        """A deep, independent copy."""
        return State.decode(self.encode())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, State) and self.encode() == other.encode()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<State seq={self.seq} cues={len(self.cues)} nodes={len(self.nodes)}>"


def digest_bytes(encoded: bytes) -> str:
    return hashlib.sha256(encoded).hexdigest()


def digest(state: State) -> str:
    """A stable hash of the canonical encoding: equal states, equal digests, everywhere."""
    return digest_bytes(state.encode())
