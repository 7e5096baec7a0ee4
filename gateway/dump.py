"""The gateway's dump rule: what a (re)connecting UI is sent. No I/O.

A client that connects (or asks ``/engine/sync <seq> [<log_id>]``) is sent, in this order:

1. ``/engine/status/dump_begin <seq> <log_id> <kind>``;
2. one message per address: with kind ``changes``, only the addresses that changed after the
   seq the client says it has (``?since=<seq>`` on the WebSocket URL, ``&log=<log_id>``);
   with kind ``full``, every address, and the client forgets any address not listed;
3. ``/engine/status/dump_end`` with the same three arguments;
4. then every change after that seq, in seq order (`gateway.pacing` may pace some).

``changes`` is sent only when the view can say what changed (`StatusView.since`: the seq is
neither too old nor ahead, no address disappeared since, and the log id is ours or not
given); otherwise ``full``. The values that live outside the log (node lag) always travel
with a dump. A dump replaces whatever deltas the client had queued or held (it covers them);
replies already queued stay, before it. When addresses disappear (a new show is loaded),
and when a replay seeks back, every client is sent a ``full`` dump at that seq; a client
that falls behind gets one at a later seq (`gateway.session`). A dump and the stream come
from the same view in the same step, so no change is ever inside a dump and lost after it.

`Dump` is one dump being sent, encoded a chunk at a time (a 10,000-cue dump costs nothing
up front); `Dumps` makes them, sharing one item list among every dump taken at one seq.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from eventlog.logctx import ComponentLog
from gateway import osc
from gateway.view import DUMP_BEGIN, DUMP_END, StatusView, Value

log = ComponentLog("cuelog.gateway")

FULL: Final = "full"
CHANGES: Final = "changes"


def frame_of(address: str, value: Value) -> bytes:
    """The message for one address, or b"" if OSC cannot carry it (logged; never raises: the
    view only makes sendable values, this is the last guard for a writer)."""
    try:
        if type(value) is int:
            return osc.encode_int(address, value)
        return osc.encode(address, value)
    except (ValueError, TypeError, OverflowError) as exc:
        log.error("cannot send %r on %r: %s", value, address[:200], exc)
        return b""


@dataclass(slots=True)
class Dump:
    """A dump being sent: its markers and items, encoded lazily a chunk at a time."""

    items: list[tuple[str, Value]]
    seq: int
    log_id: str
    kind: str
    pos: int = 0
    begun: bool = False

    def write(self, out: list[bytes], limit: int) -> bool:
        """Append frames to `out` until it holds `limit`; True once the dump is all sent."""
        if not self.begun:
            out.append(osc.encode(DUMP_BEGIN, self.seq, self.log_id, self.kind))
            self.begun = True
        end = min(len(self.items), self.pos + max(0, limit - len(out)))
        for address, value in self.items[self.pos : end]:
            data = frame_of(address, value)
            if data:
                out.append(data)
        self.pos = end
        if self.pos < len(self.items):
            return False
        out.append(osc.encode(DUMP_END, self.seq, self.log_id, self.kind))
        return True


class Dumps:
    """Makes the dumps of one log: the view's values plus `extra` (values outside the log)."""

    def __init__(self, log_id: str) -> None:
        self.log_id = log_id
        #: values that are not in the log (node lag): address -> value
        self.extra: dict[str, Value] = {}
        self._extra_version = 0
        self._full: tuple[tuple[int, int], list[tuple[str, Value]]] | None = None

    def dump(self, view: StatusView, since: int | None, their_log: str | None) -> Dump:
        """The dump for a client that has `since` of `their_log` (None: nothing)."""
        if since is not None and (their_log is None or their_log == self.log_id):
            items = view.since(since)
            if items is not None:
                items.extend(self.extra.items())
                return Dump(items, view.seq, self.log_id, CHANGES)
        return self.full(view)

    def full(self, view: StatusView) -> Dump:
        """Every address now. One item list per seq, shared by every dump taken at it (a dump
        only reads it): clients that connect or resync together cost one copy, not one each."""
        key = (view.seq, self._extra_version)
        if self._full is None or self._full[0] != key:
            items = list(view.values.items())
            items.extend(self.extra.items())
            self._full = (key, items)
        return Dump(self._full[1], view.seq, self.log_id, FULL)

    def forget(self) -> None:
        """The view was replaced: no item list made so far is current."""
        self._full = None

    def set_extra(self, values: dict[str, Value]) -> list[tuple[str, Value]]:
        """Replace the extra values; return those that changed (new or different)."""
        changes = [(a, v) for a, v in values.items() if self.extra.get(a) != v]
        gone = [a for a in self.extra if a not in values]
        for address in gone:
            del self.extra[address]
        self.extra.update(changes)
        if changes or gone:
            self._extra_version += 1
        return changes
