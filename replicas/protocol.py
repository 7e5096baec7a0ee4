"""The wire protocol between the controller and its nodes. Values in, values out; no sockets.

One controller address carries two channels:

- **requests** (NNG REQ/REP on the configured address): every message is one JSON object with a
  kind ``k``. Nodes send ``hello``, ``submit``, ``fetch`` and ``beat``; tools send ``status``.
  The controller answers each with exactly one reply (``error`` when the request is bad).
  ``state`` returns the whole current state with its seq and digest (for tools and UIs).
- **events** (NNG PUB/SUB on the derived address, see `events_address`): batched ``ev`` frames
  carrying ``(log, first, last)`` and idle ``hb`` heartbeats carrying the head seq.

Decoders check shapes strictly and raise `ProtocolError` (a peer broke the protocol); they
never trust a field they did not check.

Sizes: no valid input makes a message some peer cannot receive
----------------------------------------------------------------
Every socket (controller REP and PUB, node REQ and SUB, tools' REQ) receives at most
``NNG_MAX_BYTES`` (16 MiB): NNG drops a bigger message and closes the connection, so a message
that size would be lost every time it is sent again. Each limit below is enforced where data
enters and respected where it leaves; "envelope" is a message's own fields (kind, log id,
seqs, ts, digest), always under ``ENVELOPE_BYTES`` (4 KiB).

- **An event**: the validation caps its data at ``MAX_DATA_BYTES`` (64 KiB, encoded), sender,
  target and op-id origin at 128, 512 and 128 characters. Encoded (`compact`, or a stored row)
  it is at most ``MAX_EVENT_BYTES``: the data, 6 bytes per character of the three strings (an
  escaped control character is the worst case) and 256 for the keys and numbers: ~69 KiB.
- **A request** is read up to ``MAX_REQUEST_BYTES`` (4 MiB; bigger: an error reply).
  A node's outbox builds submits of at most ``outbox.SUBMIT_BYTES`` (1 MiB) of exactly measured
  ops (at least one op, which is at most ``MAX_EVENT_BYTES``) plus the envelope: under 4 MiB.
- **An ``ev`` frame and an ``events`` reply**: at most ``MAX_FRAME_EVENTS`` events and at most
  ``MAX_FRAME_BYTES`` (4 MiB) encoded, envelope included. A group commit (up to 16 MiB of
  concurrent submits and more) is cut into as many frames as that takes (`encode_frames`
  measures each encoded frame); a catch-up reply stops adding stored rows once their bound
  (`rows_bytes`) would pass the cap. A node that asks for more than one reply holds gets
  the first rows and asks again after the last one. One event always fits: ``MAX_EVENT_BYTES
  + ENVELOPE_BYTES`` is far under ``MAX_FRAME_BYTES``, itself a quarter of NNG's limit.
- **A snapshot** (the state at a seq, any size: a show may hold thousands of 64 KiB values)
  travels in ``snapshot`` replies of ``SNAPSHOT_CHUNK_BYTES`` (3 MiB) of its encoded bytes,
  base64 (exactly 4 MiB) plus the envelope. The node asks for each next chunk by seq and
  offset, reassembles them and installs the state only if its digest matches; the
  controller keeps the last snapshot it served in memory so chunks do not re-read the file.
  The ``state`` request (tools) answers in the same chunks when the state is over
  ``MAX_FRAME_BYTES``.
- **Replies with text**: an error may quote the input (a quoted 4 MiB field would come back
  four times larger: escapes, twice). Each refused op's error strings in an ``acks`` reply
  are clipped to ``MAX_ERROR_CHARS`` (160) characters: an ``acks`` for ``MAX_SUBMIT_OPS``
  refused ops is then at most 5000 x (3 x 160 x 6 + 256) bytes, under 16 MiB even if every
  character needed a 6-byte escape (~3.7 MB when they are ASCII). An ``error`` reply's text
  is clipped to ``MAX_ERROR_REPLY_CHARS`` (1024): at most 6 KiB.
- **The rest** (``welcome``, ``ok``, ``hb``, ``status`` for ``MAX_NODES`` nodes) are bounded by
  ids of at most 128 characters: well under 2 MiB.
"""

from __future__ import annotations

import hashlib
import operator
import secrets
from collections.abc import Sequence
from enum import StrEnum
from typing import Any, Final

import orjson

from eventlog import (
    MAX_DATA_BYTES,
    Event,
    InputError,
    dumps,
)
from eventlog.operation import MAX_ORIGIN_LEN, MAX_SENDER_LEN, MAX_TARGET_LEN

#: Largest request the controller reads (bytes); larger ones get an error reply.
MAX_REQUEST_BYTES: Final = 4 * 1024 * 1024
#: NNG-level cap: a frame larger than this is dropped by the transport before we see it.
NNG_MAX_BYTES: Final = 16 * 1024 * 1024
#: Most operations in one submit request.
MAX_SUBMIT_OPS: Final = 5000
#: Most events in one ``ev`` frame or ``events`` reply.
MAX_FRAME_EVENTS: Final = 5000
#: Room for a message's own fields besides its events or chunk (see the module docstring).
ENVELOPE_BYTES: Final = 4096
#: Most bytes one valid event takes encoded in a frame or reply (the data, 6 bytes per
#: character of sender, target and origin, 256 for the keys and numbers).
MAX_EVENT_BYTES: Final = (
    MAX_DATA_BYTES + 6 * (MAX_SENDER_LEN + MAX_TARGET_LEN + MAX_ORIGIN_LEN) + 256
)
#: Most bytes of one encoded ``ev`` frame or ``events`` reply, envelope included.
MAX_FRAME_BYTES: Final = 4 * 1024 * 1024
#: Encoded state bytes per ``snapshot`` (or chunked ``state``) reply; base64 makes it 4 MiB.
SNAPSHOT_CHUNK_BYTES: Final = 3 * 1024 * 1024
#: Longest error text (characters) of one refused op in an ``acks`` reply.
MAX_ERROR_CHARS: Final = 160
#: Longest text (characters) of an ``error`` reply.
MAX_ERROR_REPLY_CHARS: Final = 1024

if not (
    MAX_EVENT_BYTES + ENVELOPE_BYTES <= MAX_FRAME_BYTES <= NNG_MAX_BYTES
    and MAX_REQUEST_BYTES <= NNG_MAX_BYTES
    and (SNAPSHOT_CHUNK_BYTES + 2) // 3 * 4 + ENVELOPE_BYTES <= NNG_MAX_BYTES
    and MAX_SUBMIT_OPS * (3 * 6 * MAX_ERROR_CHARS + 256) + ENVELOPE_BYTES <= NNG_MAX_BYTES
):
    raise AssertionError("the size limits do not fit under NNG's receive limit")

PROTOCOL_VERSION: Final = 1


class Rule(StrEnum):
    """Why a request was refused: the ``rule`` of an ``error`` reply (a peer may act on it)."""

    #: the request itself is malformed
    BAD_REQUEST = "bad-request"
    #: the controller is stopping: send it again to the next one
    STOPPING = "stopping"
    INTERNAL_ERROR = "internal-error"
    #: the controller's log file is gone or replaced: nothing is acknowledged
    LOG_FILE = "log-file"
    #: the group commit failed: send it again
    COMMIT = "commit"
    #: a chained submit came before its predecessor: resend from the oldest unacknowledged op
    OUT_OF_ORDER = "out-of-order"
    #: this connection has not said hello (a new connection): say it, then send again
    HELLO_FIRST = "hello-first"
    #: another live process holds this node id
    ID_IN_USE = "id-in-use"
    #: another live connection holds this op-id origin
    ORIGIN_IN_USE = "origin-in-use"
    #: a hello's secret does not prove its origin
    UNPROVEN = "unproven"
    #: the request speaks for a node or origin its connection did not say hello as
    NOT_YOURS = "not-yours"
    FOREIGN_LOG = "foreign-log"
    SNAPSHOT_GONE = "snapshot-gone"
    #: a fetch after a seq past the controller's head
    AHEAD = "ahead-of-head"
    #: this controller does not lead now (its lease may have expired): nothing it holds is
    #: acknowledged; send it again (to the leader)
    NOT_LEADER = "not-leader"
    STATE_GONE = "state-gone"


#: error rules that mean the connection must say hello (again) before anything else
HELLO_RULES: Final = frozenset({Rule.ID_IN_USE, Rule.HELLO_FIRST, Rule.ORIGIN_IN_USE})


def new_origin(node: str) -> tuple[str, str]:
    """A fresh op-id origin for a process speaking as `node`, and the secret that proves it:
    ``(origin, secret)``. The origin is ``<node>/<16 hex>``, a hash of the secret: every event
    shows the origin, only its process knows the secret (it goes in ``hello`` only)."""
    secret = secrets.token_hex(16)
    return origin_of(node, secret), secret


def origin_of(node: str, secret: str) -> str:
    """The op-id origin a ``hello``'s secret proves for `node`."""
    return f"{node}/{hashlib.sha256(secret.encode()).hexdigest()[:16]}"


class ProtocolError(InputError):
    """A peer sent something that breaks the protocol. `rule` names it in the error reply."""

    def __init__(self, text: str, rule: str = Rule.BAD_REQUEST) -> None:
        super().__init__(text)
        self.rule = rule


def events_address(address: str) -> str:
    """The event stream's address, derived from the controller address.

    ``tcp://host:9093`` -> ``tcp://host:9094``; ``ipc:///tmp/x.ipc`` -> ``ipc:///tmp/x.ipc.events``;
    ``inproc://name`` -> ``inproc://name.events``; ``tls+tcp://`` (a show key) as ``tcp://``.
    """
    for scheme in ("tcp://", "tls+tcp://"):
        if address.startswith(scheme):
            break
    else:
        scheme = ""
    if scheme:
        host, sep, port = address[len(scheme) :].rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"{address!r} has no port: use tcp://HOST:PORT")
        number = int(port)
        if not 0 < number < 65535:
            raise ValueError(
                f"{address!r}: the port must be 1..65534 (the next one carries events)"
            )
        return f"{scheme}{host}:{number + 1}"
    if address.startswith(("ipc://", "inproc://")):
        return address + ".events"
    raise ValueError(f"{address!r} is not a tcp://HOST:PORT, ipc://PATH or inproc://NAME address")


def check_address(address: str) -> str:
    """Validate a controller address; return it, or raise ValueError saying what is wrong."""
    events_address(address)
    return address


def check_addresses(text: str) -> list[str]:
    """Comma-separated controller addresses (every candidate's, with a hot standby): the
    list, or ValueError saying what is wrong."""
    addresses = [check_address(part.strip()) for part in text.split(",") if part.strip()]
    if not addresses:
        raise ValueError("give at least one controller address")
    return addresses


def clip(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """`text`, cut to `limit` characters (an error may quote a huge input)."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def compact(event: Event) -> dict[str, Any]:
    """An event without its log_id (frames carry the log id once)."""
    op = event.op
    return {
        "seq": event.seq,
        "ts": event.ts,
        "type": op.type._value_,
        "action": op.action._value_,
        "sender": op.sender,
        "target": op.target,
        "data": op.data,
        "op_id": [event.op_id.origin, event.op_id.origin_seq],
    }


def rows_reply(
    log_id: str, rows: list[tuple[Any, ...]], head: int, ts: float, epoch: int = 0
) -> dict[str, Any]:
    """An ``events`` reply built straight from stored rows (`EventLog.read_rows`): the stored
    data JSON is embedded as is, without decoding and re-encoding it."""
    events = [
        {
            "seq": seq,
            "ts": ets,
            "type": type_,
            "action": action,
            "sender": sender,
            "target": target,
            "data": None if data is None else orjson.Fragment(data),
            "op_id": [origin, origin_seq],
        }
        for seq, ets, type_, action, sender, target, data, origin, origin_seq in rows
    ]
    reply: dict[str, Any] = {"k": "events", "log": log_id, "head": head, "ts": ts, "events": events}
    if rows:
        reply["first"] = rows[0][0]
        reply["last"] = rows[-1][0]
    if epoch:
        reply["epoch"] = epoch
    return reply


#: per stored row, an upper bound of what `rows_reply` adds besides the row's strings: the
#: keys, three numbers, quotes and the separating comma
_ROW_FIXED_BYTES: Final = 256
_SENDER, _TARGET, _DATA, _ORIGIN = (operator.itemgetter(i) for i in (4, 5, 6, 7))


def rows_bytes(rows: Sequence[tuple[Any, ...]]) -> int:
    """An upper bound of the bytes stored rows (`EventLog.read_rows`) take in an ``events``
    reply: their data JSON is embedded as stored; the other strings may need escapes (6 bytes
    a character at worst). Sums in C (map, len): measuring costs the catch-up ~nothing."""
    datas = list(filter(None, map(_DATA, rows)))
    if all(map(str.isascii, datas)):
        data = sum(map(len, datas))
    else:
        data = sum(map(len, map(str.encode, datas)))
    strings = sum(map(len, map(_SENDER, rows)))
    strings += sum(map(len, map(_TARGET, rows)))
    strings += sum(map(len, map(_ORIGIN, rows)))
    return _ROW_FIXED_BYTES * len(rows) + data + 6 * strings


def rows_budget(log_id: str) -> int:
    """How many bytes of rows (by `rows_bytes`) one ``events`` reply may carry."""
    return MAX_FRAME_BYTES - ENVELOPE_BYTES - 6 * len(log_id)


def events_frame(log_id: str, events: list[Event], ts: float, epoch: int = 0) -> dict[str, Any]:
    """An ``ev`` frame of `events`."""
    return _frame(log_id, events, ts, [compact(e) for e in events], epoch)


def _frame(
    log_id: str, events: Sequence[Event], ts: float, items: list[dict[str, Any]], epoch: int
) -> dict[str, Any]:
    """An ``ev`` frame of `events`, already compacted as `items`; ``epoch`` (the publishing
    controller's, see `messages.Welcome`) is left out while it is 0 (a log that never had
    more than one controller)."""
    frame: dict[str, Any] = {
        "k": "ev",
        "log": log_id,
        "first": events[0].seq,
        "last": events[-1].seq,
        "ts": ts,
        "events": items,
    }
    if epoch:
        frame["epoch"] = epoch
    return frame


def encode_frames(
    log_id: str, events: Sequence[Event], epoch: int = 0
) -> list[tuple[dict[str, Any], bytes]]:
    """``ev`` frames for consecutive `events`, each with its encoding: at most
    ``MAX_FRAME_EVENTS`` events and ``MAX_FRAME_BYTES`` bytes per frame, however large the
    events (a group commit of many big submits becomes several frames)."""
    out: list[tuple[dict[str, Any], bytes]] = []
    for start in range(0, len(events), MAX_FRAME_EVENTS):
        chunk = list(events[start : start + MAX_FRAME_EVENTS])
        frame = events_frame(log_id, chunk, chunk[-1].ts, epoch)
        wire = dumps(frame)
        if len(wire) <= MAX_FRAME_BYTES:
            out.append((frame, wire))
            continue
        # too big: measure each event and cut where the next one would pass the cap
        room = MAX_FRAME_BYTES - ENVELOPE_BYTES - 6 * len(log_id)
        first = 0
        used = 0
        for i, item in enumerate(frame["events"]):
            size = len(dumps(item)) + 1
            if used + size > room and i > first:
                out.append(_frame_part(log_id, chunk, frame["events"], first, i, epoch))
                first, used = i, 0
            used += size
        out.append(_frame_part(log_id, chunk, frame["events"], first, len(chunk), epoch))
    return out


def _frame_part(
    log_id: str,
    events: list[Event],
    items: list[dict[str, Any]],
    start: int,
    end: int,
    epoch: int = 0,
) -> tuple[dict[str, Any], bytes]:
    part = events[start:end]
    frame = _frame(log_id, part, part[-1].ts, items[start:end], epoch)
    return frame, dumps(frame)
