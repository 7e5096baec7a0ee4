"""The reducer: ``apply(state, event)``, total and deterministic.

Every valid event yields a state. An event that makes no sense at its place (a remove for a cue
that is not playing, a GO while not armed) is a *recorded no-op*: the state only counts it
(``ignored``) and, for commands, records it as not accepted; `apply` returns the reason so a
post-mortem can say why, and replicas know not to fire a refused command. The reducer reads no
clock and does no I/O: the same events give the same state on every machine.

`apply` changes the state in place and returns the reason (``None`` when applied). Use
`State.copy` first if you need the state before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final

from eventlog.errors import UsageError
from eventlog.event import Event
from eventlog.operation import ActionType, OperationType
from eventlog.state import CueStatus, State

# the cue-status encoding (`CueStatus`) bound once as plain names: looking attributes up on
# an enum class costs the fold a fifth of its speed
_is_playing: Final = CueStatus.is_playing
_is_final: Final = CueStatus.is_final
_DONE: Final = int(CueStatus.DONE)
_UNPLAYED: Final = int(CueStatus.UNPLAYED)

#: status targets the controller appends itself for liveness.
NODE_JOINED: Final = "node_joined"
NODE_LEFT: Final = "node_left"
#: the first event of a controller's leadership: its epoch, its name and why it leads
LEADER: Final = "leader"
CONTROLLER: Final = "controller"
#: status target listing more cues of the loaded show (for shows too large for one load)
SHOW_CUES: Final = "show_cues"

_Handler = Callable[[State, Event], "str | None"]


def _data(event: Event) -> dict[str, Any]:
    return event.op.data or {}


def _remove_current(state: State, cue: str) -> None:
    current = state.engine["currentcue"]
    state.engine["currentcue"] = [pair for pair in current if pair[0] != cue]


def _cue_add(state: State, event: Event) -> str | None:
    cue = event.op.target
    known = state.cues.get(cue)
    if known is not None and _is_playing(known["status"]):
        return f"cue {cue} is already playing"
    offset = str(_data(event).get("offset", ""))
    state.cues[cue] = {"status": 1, "offset": offset, "node": event.op.sender, "seq": event.seq}
    state.engine["currentcue"].append([cue, offset])
    return None


def _cue_update(state: State, event: Event) -> str | None:
    cue = event.op.target
    known = state.cues.get(cue)
    if known is None or not _is_playing(known["status"]):
        return f"progress for cue {cue}, which is not playing"
    pct = _data(event).get("percentage")
    if not isinstance(pct, int) or pct == 0:
        return f"progress {pct!r} for cue {cue} is not a playing status"
    known["status"] = pct
    known["seq"] = event.seq
    if _is_final(pct):
        _remove_current(state, cue)
    return None


def _cue_remove(state: State, event: Event) -> str | None:
    cue = event.op.target
    known = state.cues.get(cue)
    if known is None or not _is_playing(known["status"]):
        return f"stale remove: cue {cue} is not playing"
    known["status"] = _DONE
    known["seq"] = event.seq
    _remove_current(state, cue)
    return None


def _player_set(state: State, event: Event) -> str | None:
    state.players.setdefault(event.op.sender, {})[event.op.target] = event.op.data
    return None


def _player_remove(state: State, event: Event) -> str | None:
    node = state.players.get(event.op.sender)
    if node is None or event.op.target not in node:
        return f"player {event.op.target} of {event.op.sender} is not known"
    del node[event.op.target]
    if not node:
        del state.players[event.op.sender]
    return None


def _recompute_armed(state: State) -> None:
    engine = state.engine
    ready = (
        bool(engine["load"])
        and bool(state.armed_nodes)
        and all(node in state.armed_nodes for node in state.required)
    )
    engine["armed"] = "yes" if ready else "no"


def _status(state: State, event: Event) -> str | None:
    op = event.op
    data = _data(event)
    reason: str | None = None
    target = op.target
    if target == "nextcue":
        state.engine["nextcue"] = data.get("nextcue", "")
    elif target == "armed_ready":
        if not state.engine["load"]:
            return "armed_ready before any load"
        if data.get("armed", "yes") == "yes":
            state.armed_nodes[op.sender] = event.seq
        else:
            state.armed_nodes.pop(op.sender, None)
        _recompute_armed(state)
    elif target == "cue_enabled":
        cue = data.get("cue_id")
        if isinstance(cue, str):
            state.cue_enabled[cue] = bool(data.get("enabled"))
    elif target == "pong":
        node = state.nodes.setdefault(op.sender, {"online": False, "seq": event.seq, "pong": 0})
        node["pong"] = event.seq
    elif target == SHOW_CUES:
        if op.sender != CONTROLLER or not state.engine["load"]:
            return "show_cues comes from the controller, after a load"
        _list_cues(state, data.get("cues"), event.seq)
    elif target == "timecode":
        state.engine["timecode"] = data.get("value", 0)
    elif target in (NODE_JOINED, NODE_LEFT):
        node_id = data.get("node")
        if op.sender != CONTROLLER or not isinstance(node_id, str):
            return f"{target} is appended by the controller only"
        else:
            online = target == NODE_JOINED
            node = state.nodes.setdefault(node_id, {"online": online, "seq": event.seq, "pong": 0})
            node["online"] = online
            node["seq"] = event.seq
            if not online and node_id in state.armed_nodes:
                del state.armed_nodes[node_id]
                _recompute_armed(state)
    state.status.setdefault(op.sender, {})[target] = {"data": op.data, "seq": event.seq}
    return reason


#: how many cues one load (or one ``show_cues`` status) may list
MAX_LISTED_CUES: Final = 4096


def _list_cues(state: State, listed: Any, seq: int) -> None:
    """Add the cues a show lists, unplayed (status 0), as upstream does on load.

    Items are cue ids or ``{"id", "node"?, "enabled"?}``; anything else is skipped. A show
    larger than one operation allows lists the rest in ``show_cues`` status events.
    """
    if not isinstance(listed, list):
        return
    for item in listed[:MAX_LISTED_CUES]:
        info = item if isinstance(item, dict) else {"id": item}
        cue = info.get("id")
        if not isinstance(cue, str) or not cue or cue in state.cues:
            continue
        node = info.get("node")
        state.cues[cue] = {
            "status": _UNPLAYED,
            "offset": "",
            "node": node if isinstance(node, str) else "",
            "seq": seq,
        }
        enabled = info.get("enabled", True)
        state.cue_enabled[cue] = enabled is not False


def _reset_show(state: State) -> None:
    engine = state.engine
    engine["running"] = "no"
    engine["armed"] = "no"
    engine["nextcue"] = ""
    engine["timecode"] = 0
    engine["currentcue"] = []
    state.armed_nodes = {}


def _command(state: State, event: Event) -> str | None:
    op = event.op
    data = _data(event)
    value = data.get("value")
    target = op.target
    reason: str | None = None
    engine = state.engine
    if target == "load":
        if engine["running"] == "yes":
            reason = "load refused while running"
        else:
            _reset_show(state)
            engine["load"] = "" if value is None else str(value)
            state.cues = {}
            _list_cues(state, data.get("cues"), event.seq)
            named = data.get("nodes")
            if isinstance(named, list) and all(isinstance(n, str) for n in named):
                state.required = sorted(set(named))
            else:
                state.required = sorted(n for n, info in state.nodes.items() if info["online"])
    elif target == "go":
        if engine["armed"] != "yes":
            reason = "go refused: not armed"
        else:
            engine["running"] = "yes"
    elif target == "stop":
        _reset_show(state)
        for cue in state.cues.values():
            cue["status"] = _UNPLAYED
    elif target == "unload":
        if engine["running"] == "yes":
            reason = "unload refused while running"
        else:
            _reset_show(state)
            # no show at all: upstream's empty string ("no show"), where a stop of a loaded
            # show says "no" (the UI reads only "yes" as true; the status page tells them apart)
            engine["load"] = ""
            engine["armed"] = ""
            engine["running"] = ""
            state.cues = {}
            state.required = []
    elif target == "cue_enabled":
        if isinstance(value, str) and len(value.split()) == 2:
            cue_id, bit = value.split()
            state.cue_enabled[cue_id] = bit == "1"
        else:
            reason = "cue_enabled without '<cue> <0|1>'"
    elif target == "player_control":
        address = data.get("address")
        parts = address.strip("/").split("/") if isinstance(address, str) else []
        if (
            len(parts) == 6
            and parts[1:3] == ["audio", "mixer"]
            and parts[5] == "volume"
            and isinstance(value, int | float)
            and not isinstance(value, bool)
        ):
            state.mixer[f"{parts[0]}/{parts[3]}/{parts[4]}"] = float(value)
    state.commands[target] = {
        "data": op.data,
        "seq": event.seq,
        "sender": op.sender,
        "accepted": reason is None,
    }
    return reason


_HANDLERS: Final[dict[tuple[OperationType, ActionType], _Handler]] = {
    (OperationType.CUE, ActionType.ADD): _cue_add,
    (OperationType.CUE, ActionType.UPDATE): _cue_update,
    (OperationType.CUE, ActionType.REMOVE): _cue_remove,
    (OperationType.PLAYER, ActionType.ADD): _player_set,
    (OperationType.PLAYER, ActionType.UPDATE): _player_set,
    (OperationType.PLAYER, ActionType.REMOVE): _player_remove,
    (OperationType.STATUS, ActionType.UPDATE): _status,
    (OperationType.COMMAND, ActionType.UPDATE): _command,
}


def _unknown(state: State, event: Event) -> str | None:
    return f"{event.op.type.value}/{event.op.action.value} has no effect"


def apply(state: State, event: Event) -> str | None:
    """Fold one event into `state` (in place). Return why it was a no-op, or ``None``.

    Raises `UsageError` if ``event.seq`` is not ``state.seq + 1``: events must be applied in
    order, exactly once.
    """
    if event.seq != state.seq + 1:
        raise UsageError(
            f"event seq {event.seq} applied to a state at seq {state.seq}; expected {state.seq + 1}"
        )
    op = event.op
    reason = _HANDLERS.get((op.type, op.action), _unknown)(state, event)
    state.seq = event.seq
    if reason is not None:
        state.ignored += 1
    return reason


def fold(events: Iterable[Event], state: State | None = None) -> State:
    """Apply `events` in order to `state` (or to an empty state) and return it."""
    result = State() if state is None else state
    for event in events:
        apply(result, event)
    return result


def fires(event: Event, reason: str | None) -> bool:
    """Whether a node should fire this event's command: a command the reducer accepted."""
    return event.op.type is OperationType.COMMAND and reason is None
