"""The gateway's core: what each UI client is sent and what its messages mean. No I/O.

`GatewayCore` owns the `StatusView` (fed the controller's committed events in seq order) and
one `Session` per connected client. The shell (`gateway.server`) feeds it decoded OSC
messages, committed events and the time, and carries out what it returns: frames to send
(`Session.take`), operations to append (`Submit`), clients to drop (`Session.dropped`).

Rules it never breaks:

- A client first gets ``/engine/status/dump_begin <seq> <log_id> <full|changes>``, the state
  at that seq (one message per address), ``/engine/status/dump_end`` with the same arguments,
  then every change after that seq in seq order. After a ``full`` dump a client forgets every
  address the dump did not list; when addresses disappear (a new show is loaded) every client
  is sent a new full dump in the stream, at that seq. A delta is never put inside a dump and
  never lost between dump and stream: the dump is taken from the view and queued in the same
  step, on the thread that feeds events.
- Cue progress (2-99) and mixer volumes are coalesced per address and client to one message
  per `COALESCE_INTERVAL` (the latest value wins); every other change goes out at once.
- A client's queue is bounded (`MAX_QUEUE` messages). A client that overflows it loses its
  queue and is sent a fresh dump at a later seq (never a hole); one that overflows
  `MAX_OVERFLOWS` times in `OVERFLOW_WINDOW` seconds is dropped. Nobody else waits.
- A command is turned into an operation only if its arguments have the expected types; a
  client without control gets ``denied`` and nothing is appended.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from eventlog import ActionType, Event, Operation, OperationType, ValidationError
from eventlog.operation import validate_operation
from gateway import osc
from gateway.osc import OscMsg
from gateway.view import DUMP_BEGIN, DUMP_END, NODE, SEQ, StatusView, Value

log = logging.getLogger("cuelog.gateway")

#: progress and fader updates go to a client at most this often per address (seconds)
COALESCE_INTERVAL: Final = 0.25
#: messages, and bytes, one client may have queued before it is resynced
MAX_QUEUE: Final = 20_000
MAX_QUEUE_BYTES: Final = 8 * 1024 * 1024
#: overflows within `OVERFLOW_WINDOW` seconds after which a client is dropped
MAX_OVERFLOWS: Final = 3
OVERFLOW_WINDOW: Final = 60.0
#: wrong passcodes from one address before it is locked out, and for how long (seconds)
MAX_BAD_PASSCODES: Final = 5
LOCKOUT: Final = 30.0
#: most client addresses whose passcode failures are remembered
LOCKOUT_MEMORY: Final = 4096
#: tokens per second a client may spend on average, and in a burst (a frame costs one token
#: plus one per `BYTES_PER_TOKEN` bytes: the largest frame, 1 MiB, fits in a burst)
FRAME_RATE: Final = 500.0
FRAME_BURST: Final = 6000.0
BYTES_PER_TOKEN: Final = 256
#: at most this many /engine/sync per client in a window of seconds (each may copy the map)
SYNC_BURST: Final = 4
SYNC_WINDOW: Final = 2.0

COMMAND_PREFIX: Final = "/engine/command/"
#: engine commands and the argument shapes they take
ENGINE_COMMANDS: Final = frozenset(
    {"go", "stop", "pause", "load", "unload", "setnextcue", "cue_enabled", "resetall"}
)
SYNC: Final = "/engine/sync"
CONNECT: Final = "/connect"
REPLY_PREFIX: Final = "/reply"


# --------------------------------------------------------------------------- policy


@dataclass(slots=True)
class Policy:
    """Who may control: loopback always, ``allow`` networks, or anyone with the passcode."""

    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    passcode: str | None = None
    private: bool = False
    #: whether loopback clients control without a passcode (tests turn it off)
    loopback: bool = True

    def controls(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip.is_loopback and self.loopback:
            return True
        return any(ip in net for net in self.allow)


def lock_key(host: str) -> str:
    """Whose passcode failures count together: an IPv4 address, or an IPv6 /64 (one host
    usually holds a whole /64, so counting single IPv6 addresses would be no lockout)."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def parse_networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """``"10.0.0.0/24,192.168.1.7"`` -> networks. Raises ValueError naming the bad part."""
    nets = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            nets.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"{part!r} is not an IP address or CIDR network") from None
    if not nets:
        raise ValueError("no network given")
    return tuple(nets)


# --------------------------------------------------------------------------- effects


@dataclass(frozen=True, slots=True)
class Submit:
    """Append `op`; then call `GatewayCore.command_done` (or `command_failed`)."""

    session: Session
    reply_to: str
    op: Operation


@dataclass(frozen=True, slots=True)
class Handle:
    """A message for the application's registered OSC handlers (`gateway.compat`)."""

    session: Session
    msg: OscMsg


Effect = Submit | Handle


# --------------------------------------------------------------------------- one client


@dataclass(slots=True)
class _Dump:
    """A dump being sent: items are encoded lazily, a chunk at a time."""

    items: list[tuple[str, Value]]
    seq: int
    log_id: str
    kind: str
    pos: int = 0


#: a delta is (address, its encoded frame); a reply or marker is bare bytes
_Delta = tuple[str, bytes]
_Item = _Delta | bytes | _Dump


@dataclass(eq=False, slots=True)
class Session:
    """One connected client: its queue, its coalescing and its rights."""

    number: int
    peer: str
    control: bool
    watching: bool
    queue: deque[_Item] = field(default_factory=deque)
    #: messages in `queue` that are not part of a dump, and their bytes
    queued: int = 0
    queued_bytes: int = 0
    held: dict[str, Value] = field(default_factory=dict)
    last_sent: dict[str, float] = field(default_factory=dict)
    overflows: deque[float] = field(default_factory=deque)
    dropped: str | None = None
    #: the seq of the last dump_end queued (None before the first)
    synced: int | None = None
    sent: int = 0
    #: commands sent to the log and not answered yet (the shell counts them)
    in_flight: int = 0
    #: the last seq this client was told (by a dump's markers or ``/engine/status/seq``)
    seq_told: int = -1
    #: when the client asked for /engine/sync lately
    syncs: deque[float] = field(default_factory=deque)
    #: the frame-rate token bucket: tokens left and when it was last filled
    bucket: float = 6000.0
    bucket_at: float = 0.0

    @property
    def name(self) -> str:
        return f"ui:{self.number}@{self.peer}"

    @property
    def sender(self) -> str:
        """The sender recorded in the log for this client's commands."""
        return f"ui:{self.peer}#{self.number}"

    def has_output(self) -> bool:
        return bool(self.queue)

    def take(self, limit: int = 256) -> list[bytes]:
        """Up to `limit` frames to send now (encoded here, so a dump costs no more per call)."""
        out: list[bytes] = []
        queue = self.queue
        while queue and len(out) < limit:
            item = queue[0]
            if isinstance(item, _Dump):
                if item.pos == 0:
                    out.append(osc.encode(DUMP_BEGIN, item.seq, item.log_id, item.kind))
                end = min(len(item.items), item.pos + limit - len(out))
                for address, value in item.items[item.pos : end]:
                    frame = _encode(address, value)
                    if frame:
                        out.append(frame)
                item.pos = end
                if item.pos >= len(item.items):
                    queue.popleft()
                    out.append(osc.encode(DUMP_END, item.seq, item.log_id, item.kind))
                continue
            queue.popleft()
            frame = item if isinstance(item, bytes) else item[1]
            self.queued -= 1
            self.queued_bytes -= len(frame)
            out.append(frame)
        self.sent += len(out)
        return out

    def _push(self, item: _Delta | bytes) -> None:
        self.queue.append(item)
        self.queued += 1
        self.queued_bytes += len(item if isinstance(item, bytes) else item[1])

    def _clear(self, keep_replies: bool) -> None:
        kept = [i for i in self.queue if isinstance(i, bytes)] if keep_replies else []
        self.queue.clear()
        self.queue.extend(kept)
        self.queued = len(kept)
        self.queued_bytes = sum(len(i) for i in kept)

    @property
    def overflowing(self) -> bool:
        return self.queued > MAX_QUEUE or self.queued_bytes > MAX_QUEUE_BYTES


def _encode(address: str, value: Value) -> bytes:
    """The frame for one address, or b"" if OSC cannot carry it (logged; never raises: the
    view only makes sendable values, this is the last guard for a writer)."""
    try:
        if type(value) is int:
            return osc.encode_int(address, value)
        return osc.encode(address, value)
    except (ValueError, TypeError, OverflowError) as exc:
        log.error("cannot send %r on %r: %s", value, address[:200], exc)
        return b""


_PACED: Final = ("/engine/status/cue/", "/engine/status/audio/mixer/")


def _coalesced(address: str, value: Value) -> bool:
    """Progress (2-99) and mixer volumes may be coalesced; every other change may not."""
    if address.startswith("/engine/status/cue/"):
        return isinstance(value, int) and 2 <= value <= 99
    return address.startswith("/engine/status/audio/mixer/")


# --------------------------------------------------------------------------- the hub


class GatewayCore:
    """Every session, the view they share, and what client messages mean."""

    def __init__(self, view: StatusView, log_id: str, policy: Policy | None = None) -> None:
        self.view = view
        self.log_id = log_id
        self.policy = policy or Policy()
        self.sessions: dict[int, Session] = {}
        #: values that are not in the log (node lag): address -> value
        self.extra: dict[str, Value] = {}
        self._numbers = 0
        #: wrong passcodes per client key (IPv4 address, IPv6 /64), and keys locked until when
        self._failures: OrderedDict[str, int] = OrderedDict()
        self._locked: dict[str, float] = {}
        self._full_cache: tuple[tuple[int, int], list[tuple[str, Value]]] | None = None
        self._extra_version = 0
        #: when set, every command from a client is refused with this reason (replay mode)
        self.read_only: str | None = None
        self.stats = {"resyncs": 0, "drops": 0, "commands": 0, "bad_frames": 0}

    @property
    def seq(self) -> int:
        return self.view.seq

    # ------------------------------------------------------------------ connections

    def connect(self, peer: str, since: int | None = None, log_id: str | None = None) -> Session:
        """A client connected from `peer` (an IP address); its first output is queued."""
        self._numbers += 1
        control = self.policy.controls(peer)
        watching = control or not self.policy.private
        session = Session(self._numbers, peer, control, watching)
        self.sessions[session.number] = session
        if watching:
            self._dump(session, since, log_id)
        return session

    def disconnect(self, session: Session) -> None:
        self.sessions.pop(session.number, None)

    def _dump(self, session: Session, since: int | None, log_id: str | None) -> None:
        """Queue a dump at the view's seq: the changes after `since` if the view can say, else
        everything. Clears whatever the session had queued or held (the dump covers it)."""
        items: list[tuple[str, Value]] | None = None
        if since is not None and (log_id is None or log_id == self.log_id):
            items = self.view.since(since)
            if items is not None:
                items.extend(self.extra.items())
        if items is None:
            self._queue_dump(session, self._full_items(), "full")
        else:
            self._queue_dump(session, items, "changes")

    def _full_items(self) -> list[tuple[str, Value]]:
        """Every address now. One list per seq, shared by every dump taken at it (a dump only
        reads it): clients that connect or resync together cost one copy, not one each."""
        key = (self.view.seq, self._extra_version)
        if self._full_cache is None or self._full_cache[0] != key:
            items = list(self.view.values.items())
            items.extend(self.extra.items())
            self._full_cache = (key, items)
        return self._full_cache[1]

    def _queue_dump(self, session: Session, items: list[tuple[str, Value]], kind: str) -> None:
        # `items` may be shared by several sessions: it is only read. Replies already queued
        # stay (in order, before the dump); deltas go (the dump covers them).
        session._clear(keep_replies=True)
        session.held.clear()
        session.queue.append(_Dump(items, self.view.seq, self.log_id, kind))
        session.synced = session.seq_told = self.view.seq

    # ------------------------------------------------------------------ the stream

    def on_events(self, events: Sequence[Event], now: float) -> None:
        """Fold committed events (in seq order) and queue their changes for every client."""
        for event in events:
            if event.seq <= self.view.seq:
                continue  # already folded (a replay that restarted, say)
            _, changes = self.view.apply(event)
            if self.view.removed_at == event.seq:
                # addresses disappeared (a new show was loaded): OSC cannot say "gone", so
                # everyone gets a full dump at this seq and forgets what it does not list
                items = self._full_items()
                for session in self.sessions.values():
                    if session.watching and session.dropped is None:
                        self._queue_dump(session, items, "full")
            elif changes:
                self._fan_out(changes, now)
        for session in self.sessions.values():
            if session.overflowing and session.dropped is None:
                self._overflow(session, now)

    def reset_view(self, view: StatusView, now: float) -> None:
        """Serve `view` from now on (a replay that seeks back): every watching client gets a
        full dump of it; queued changes of the old view are dropped (replies stay)."""
        self.view = view
        self._full_cache = None
        items = self._full_items()
        for session in self.sessions.values():
            if session.watching and session.dropped is None:
                self._queue_dump(session, items, "full")

    def set_extra(self, values: dict[str, Value], now: float) -> None:
        """Replace the values that live outside the log (node lag); send what changed."""
        changes = [(a, v) for a, v in values.items() if self.extra.get(a) != v]
        gone = [a for a in self.extra if a not in values]
        for address in gone:
            del self.extra[address]
        self.extra.update(changes)
        if changes or gone:
            self._extra_version += 1
        if changes:
            self._fan_out(changes, now)
            for session in self.sessions.values():
                if session.overflowing and session.dropped is None:
                    self._overflow(session, now)

    def _fan_out(self, changes: list[tuple[str, Value]], now: float) -> None:
        sessions = [s for s in self.sessions.values() if s.dropped is None and s.watching]
        if not sessions:
            return
        # each change is encoded once, whoever gets it
        encoded = [(a, v, f) for a, v in changes if (f := _encode(a, v))]
        for session in sessions:
            for address, value, frame in encoded:
                if _coalesced(address, value):
                    last = session.last_sent.get(address)
                    if last is not None and now - last < COALESCE_INTERVAL:
                        session.held[address] = value
                        continue
                    session.last_sent[address] = now
                else:
                    session.held.pop(address, None)
                    if address.startswith(_PACED):
                        session.last_sent[address] = now
                session._push((address, frame))

    def _overflow(self, session: Session, now: float) -> None:
        session.overflows.append(now)
        while session.overflows and now - session.overflows[0] > OVERFLOW_WINDOW:
            session.overflows.popleft()
        if len(session.overflows) >= MAX_OVERFLOWS:
            self.drop(session, f"fell behind {MAX_OVERFLOWS} times in {OVERFLOW_WINDOW:g} s")
            return
        self.stats["resyncs"] += 1
        log.warning(
            "%s fell %d messages behind: resyncing it with a fresh dump",
            session.name,
            MAX_QUEUE,
            extra={"node": "gateway", "seq": self.view.seq},
        )
        # replies stay: every command gets its answer; deltas go, a dump covers them
        session._clear(keep_replies=True)
        if session.watching:
            self._dump(session, None, None)

    def drop(self, session: Session, why: str) -> None:
        if session.dropped is None:
            session.dropped = why
            session._clear(keep_replies=False)
            self.stats["drops"] += 1
            log.warning(
                "dropping %s: %s", session.name, why, extra={"node": "gateway", "seq": self.seq}
            )

    def next_deadline(self) -> float | None:
        """The earliest time a held (coalesced) value is due, if any."""
        due: float | None = None
        for session in self.sessions.values():
            for address in session.held:
                at = session.last_sent.get(address, 0.0) + COALESCE_INTERVAL
                if due is None or at < due:
                    due = at
        return due

    def on_timer(self, now: float) -> list[Session]:
        """Release held values that are due; return the sessions that got output."""
        woken = []
        for session in self.sessions.values():
            if not session.held:
                continue
            ready = [
                a
                for a in session.held
                if now - session.last_sent.get(a, 0.0) >= COALESCE_INTERVAL - 1e-9
            ]
            for address in ready:
                frame = _encode(address, session.held.pop(address))
                if frame:
                    session._push((address, frame))
                session.last_sent[address] = now
            if ready:
                woken.append(session)
        return woken

    def tick_seq(self) -> bool:
        """Once a second: queue ``/engine/status/seq`` for every client whose picture moved
        since it was last told. A client still holding a coalesced value is told later:
        resuming from that seq would skip the held change."""
        seq = self.view.seq
        frame: bytes | None = None
        for session in self.sessions.values():
            if (
                session.watching
                and session.dropped is None
                and session.synced is not None
                and session.seq_told != seq
                and not session.held
            ):
                if frame is None:
                    frame = osc.encode(SEQ, seq)
                session._push(frame)
                session.seq_told = seq
        return frame is not None

    # ------------------------------------------------------------------ input

    def admit_frame(self, session: Session, now: float, size: int = 0) -> bool:
        """Count one frame (of any kind, `size` bytes) against the client's rate: a frame
        costs one token plus one per `BYTES_PER_TOKEN` (decoding cost grows with the bytes).
        A client over its rate is dropped (False). A fader drag is ~60 small frames/s."""
        if session.dropped is not None:
            return False
        elapsed = now - session.bucket_at
        session.bucket_at = now
        cost = 1.0 + size / BYTES_PER_TOKEN
        session.bucket = min(FRAME_BURST, session.bucket + elapsed * FRAME_RATE) - cost
        if session.bucket < 0:
            self.drop(session, f"flooding (more than {FRAME_RATE:g} frames/s)")
            return False
        return True

    def on_frame(self, session: Session, frame: bytes, now: float) -> list[Effect]:
        """A binary frame from a client. Returns what the shell must do; replies are queued."""
        try:
            messages = osc.decode(frame)
        except osc.OscError as exc:
            self.stats["bad_frames"] += 1
            log.warning(
                "bad OSC from %s: %s", session.name, exc, extra={"node": "gateway", "seq": "-"}
            )
            session._push(osc.encode("/reply/error", _reply("error", error=str(exc))))
            return []
        effects: list[Effect] = []
        for msg in messages:
            effects.extend(self.on_message(session, msg, now))
        if session.overflowing:
            self._overflow(session, now)
        return effects

    def on_message(self, session: Session, msg: OscMsg, now: float) -> list[Effect]:
        address, args = msg.address, msg.args
        if address == CONNECT:
            self._connect(session, args, now)
            return []
        if address == SYNC:
            return self._sync(session, args, now)
        if address.startswith(REPLY_PREFIX + "/"):
            return []  # a client echoing replies: nothing to do
        op_or_error = self.operation(session, address, args)
        if op_or_error is None:
            return [Handle(session, msg)]
        if isinstance(op_or_error, str):
            self.answer(session, address, "error", error=op_or_error)
            return []
        if self.read_only is not None:
            self.answer(session, address, "denied", error=self.read_only)
            return []
        if not session.control:
            self.answer(
                session,
                address,
                "denied",
                error="this client may not control the show: send /connect <passcode>",
            )
            log.warning(
                "denied %s from %s (no control)",
                address,
                session.name,
                extra={"node": "gateway", "seq": "-"},
            )
            return []
        self.stats["commands"] += 1
        return [Submit(session, address, op_or_error)]

    def operation(
        self, session: Session, address: str, args: tuple[Any, ...]
    ) -> Operation | str | None:
        """The command event a UI message asks for; an error sentence; or None (not a
        command: the application's handlers may want it)."""
        if address.startswith(COMMAND_PREFIX):
            name = address[len(COMMAND_PREFIX) :]
            if name not in ENGINE_COMMANDS:
                return None
            value: Any
            try:
                value = _engine_value(name, args)
            except ValueError as exc:
                return f"{address} {exc} (got {osc.describe(args)})"
            return _command(session.sender, name, {"value": value, "address": address})
        parts = address[1:].split("/")
        if len(parts) >= 4 and parts[1] in ("audio", "video") and parts[2] == "mixer":
            try:
                value = _player_value(parts, args)
            except ValueError as exc:
                return f"{address} {exc} (got {osc.describe(args)})"
            return _command(session.sender, "player_control", {"address": address, "value": value})
        return None

    def _connect(self, session: Session, args: tuple[Any, ...], now: float) -> None:
        key = lock_key(session.peer)
        for expired in [k for k, until in self._locked.items() if until <= now]:
            del self._locked[expired]
        until = self._locked.get(key, 0.0)
        if until <= now and len(self._locked) >= LOCKOUT_MEMORY:
            until = now + LOCKOUT  # too many locked addresses to track: fail closed
        if until > now:
            self._push_reply(
                session, "/reply/connect", "badpass", f"locked for {until - now:.0f} s"
            )
            log.warning(
                "passcode attempt from locked-out %s",
                session.name,
                extra={"node": "gateway", "seq": "-"},
            )
            return
        given = args[0] if len(args) == 1 and isinstance(args[0], str) else None
        passcode = self.policy.passcode
        if (
            passcode is not None
            and given is not None
            and hmac.compare_digest(given.encode(), passcode.encode())
        ):
            self._failures.pop(key, None)
            session.control = True
            was_watching = session.watching
            session.watching = True
            self._push_reply(session, "/reply/connect", "ok")
            log.info(
                "%s took control with the passcode",
                session.name,
                extra={"node": "gateway", "seq": "-"},
            )
            if not was_watching:
                self._dump(session, None, None)
            return
        failures = self._failures.pop(key, 0) + 1
        locked = failures >= MAX_BAD_PASSCODES
        if locked:
            self._locked[key] = now + LOCKOUT
        else:
            self._failures[key] = failures
            while len(self._failures) > LOCKOUT_MEMORY:
                self._failures.popitem(last=False)
        why = "no passcode is set" if passcode is None else "wrong passcode"
        log.warning(
            "refused /connect from %s: %s%s",
            session.name,
            why,
            f"; {key} locked out for {LOCKOUT:g} s" if locked else "",
            extra={"node": "gateway", "seq": "-"},
        )
        self._push_reply(session, "/reply/connect", "badpass")

    def _sync(self, session: Session, args: tuple[Any, ...], now: float) -> list[Effect]:
        if not session.watching:
            self._push_reply(session, SYNC.replace("/engine", "/reply/engine"), _reply("denied"))
            return []
        if not args or isinstance(args[0], bool) or not isinstance(args[0], int) or args[0] < 0:
            self.answer(session, SYNC, "error", error="expects one int: the seq you have")
            return []
        syncs = session.syncs
        while syncs and now - syncs[0] >= SYNC_WINDOW:
            syncs.popleft()
        if len(syncs) >= SYNC_BURST:
            self.answer(
                session,
                SYNC,
                "error",
                error=f"at most {SYNC_BURST} /engine/sync per {SYNC_WINDOW:g} s: wait",
            )
            return []
        syncs.append(now)
        their_log = args[1] if len(args) > 1 and isinstance(args[1], str) else None
        self._dump(session, args[0], their_log)
        return []

    def answer(self, session: Session, address: str, status: str, **extra: Any) -> None:
        self._push_reply(session, REPLY_PREFIX + address, _reply(status, **extra))

    def _push_reply(self, session: Session, address: str, *values: osc.OscValue) -> None:
        if session.dropped is None:
            # the address is the client's choice: never cached
            session._push(osc.encode(address, *values, cache=False))

    # ------------------------------------------------------------------ command outcomes

    def command_done(self, submit: Submit, seq: int, reason: str | None) -> None:
        """The command's event is durable at `seq`; `reason` is why the reducer refused it
        (None: accepted). Answer the client."""
        if reason is None:
            self.answer(submit.session, submit.reply_to, "ok", seq=seq)
        else:
            self.answer(submit.session, submit.reply_to, "error", seq=seq, error=reason)

    def command_failed(self, submit: Submit, error: str) -> None:
        self.answer(submit.session, submit.reply_to, "error", error=error)


def _reply(status: str, seq: int | None = None, error: str | None = None) -> str:
    return orjson.dumps({"status": status, "seq": seq, "error": error}).decode()


def _command(sender: str, target: str, data: dict[str, Any]) -> Operation | str:
    try:
        return validate_operation(
            Operation(OperationType.COMMAND, ActionType.UPDATE, sender, target, data)
        )
    except ValidationError as exc:
        return str(exc)


def _number(arg: Any) -> bool:
    return (
        isinstance(arg, int | float)
        and not isinstance(arg, bool)
        and arg == arg
        and abs(arg) != float("inf")
    )


def _engine_value(name: str, args: tuple[Any, ...]) -> Any:
    if name in ("load", "setnextcue"):
        if len(args) != 1 or not isinstance(args[0], str):
            raise ValueError("expects one string")
        if name == "load" and not args[0]:
            raise ValueError("expects a project name")
        return args[0]
    if name == "cue_enabled":
        if len(args) == 1 and isinstance(args[0], str):
            words = args[0].split()
            if len(words) == 2 and words[1] in ("0", "1"):
                return f"{words[0]} {words[1]}"
        if (
            len(args) == 2
            and isinstance(args[0], str)
            and args[0]
            and " " not in args[0]
            and (args[1] in (0, 1) or isinstance(args[1], bool))
        ):
            return f"{args[0]} {int(args[1])}"
        raise ValueError("expects '<cue id> <0|1>' as one string")
    # go, stop, pause, unload, resetall: no argument, or one plain value (kept)
    if not args:
        return None
    if len(args) == 1 and (isinstance(args[0], str | bool) or _number(args[0])):
        return args[0]
    raise ValueError("expects no argument or one value")


def _player_value(parts: list[str], args: tuple[Any, ...]) -> Any:
    node = parts[0]
    if not node or len(node) > 128:
        raise ValueError("names no node")
    if parts[1] == "audio":
        if parts[-1] != "volume" or len(parts) != 6:
            raise ValueError("is not /<node>/audio/mixer/<out>/<ch|master>/volume")
        if len(args) != 1 or not _number(args[0]):
            raise ValueError("expects one number")
        return args[0]
    if not 1 <= len(args) <= 2 or not all(_number(a) for a in args):
        raise ValueError("expects one or two numbers")
    return args[0] if len(args) == 1 else list(args)


def node_values(nodes: dict[str, dict[str, Any]], head: int) -> dict[str, Value]:
    """``/engine/status/node/<id>/lag`` for every node the controller tracks."""
    out: dict[str, Value] = {}
    for node, info in nodes.items():
        applied = info.get("applied_seq", 0)
        out[f"{NODE}{node}/lag"] = max(0, head - int(applied)) if info.get("online") else -1
    return out
