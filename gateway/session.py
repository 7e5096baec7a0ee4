"""The gateway's core: what each UI client is sent and what its messages mean. No I/O.

`GatewayCore` owns the `StatusView` (fed the controller's committed events in seq order) and
one `Session` per connected client. The shell (`gateway.server`) feeds it decoded OSC
messages, committed events, the controller's status and the time, and carries out what it
returns: frames to send (`Session.take`), operations to append (`Submit`), messages for the
application (`Handle`), clients to drop (`Session.dropped`).

What a (re)connecting client is sent first is the dump rule, in `gateway.dump`. Besides it:

- Cue progress and mixer volumes are paced per client (`gateway.pacing`); every other change
  goes out at once, each encoded once whoever gets it.
- A client's queue is bounded (`gateway.outbox`). A client that overflows it loses its
  queued deltas and is sent a fresh full dump at a later seq (never a hole); one that
  overflows too often (`gateway.limits`) is dropped. Nobody else waits.
- A client over its frame rate is dropped; one that asks ``/engine/sync`` too often is told
  to wait (`gateway.limits`).
- Who controls is the `Policy`; ``/connect <passcode>`` takes control (`gateway.lockout`
  counts wrong passcodes). A command is turned into an operation (`gateway.commands`) only if
  its arguments have the expected types; a client without control gets ``denied`` and
  nothing is appended. Every command is answered on ``/reply<address>`` with JSON
  ``{"status": ok|error|denied, "seq", "error"}``.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from eventlog import Event, Operation
from eventlog.logctx import ComponentLog
from gateway import osc
from gateway.commands import UI_SENDER, command_operation
from gateway.dump import Dump, Dumps, frame_of
from gateway.limits import (
    FRAME_RATE,
    MAX_OVERFLOWS,
    OVERFLOW_WINDOW,
    SYNC_BURST,
    SYNC_WINDOW,
    Limits,
)
from gateway.lockout import LOCKOUT, Lockout, lock_key
from gateway.osc import OscMsg
from gateway.outbox import MAX_QUEUE, Outbox
from gateway.pacing import Pacer
from gateway.view import SEQ, StatusView, Value, node_values

log = ComponentLog("cuelog.gateway")

#: the node id on the gateway's log lines
NODE_ID: Final = "gateway"

SYNC: Final = "/engine/sync"
CONNECT: Final = "/connect"
REPLY_PREFIX: Final = "/reply"
NO_CONTROL: Final = "this client may not control the show: send /connect <passcode>"


# --------------------------------------------------------------------------- policy


@dataclass(slots=True)
class Policy:
    """Who may control: loopback always, ``allow`` networks, or anyone with the passcode.
    A ``private`` gateway shows the state only to those who may control."""

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

    def passcode_matches(self, given: str | None) -> bool:
        """Whether `given` is the passcode (never, when none is set)."""
        return (
            self.passcode is not None
            and given is not None
            and hmac.compare_digest(given.encode(), self.passcode.encode())
        )

    def may_read(self, host: str, given: str | None) -> bool:
        """Whether a client at `host` that gave passcode `given` may see the state."""
        return not self.private or self.controls(host) or self.passcode_matches(given)


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


@dataclass(eq=False, slots=True)
class Session(Outbox):
    """One connected client: its outgoing queue (`Outbox`), pacing, limits and rights."""

    number: int
    peer: str
    control: bool
    watching: bool
    pacer: Pacer = field(default_factory=Pacer)
    limits: Limits = field(default_factory=Limits)
    dropped: str | None = None
    #: the seq of the last dump_end queued (None before the first)
    synced: int | None = None
    #: commands sent to the log and not answered yet (the shell counts them)
    in_flight: int = 0
    #: the last seq this client was told (by a dump's markers or ``/engine/status/seq``)
    seq_told: int = -1

    @property
    def name(self) -> str:
        return f"ui:{self.number}@{self.peer}"

    @property
    def sender(self) -> str:
        """The sender recorded in the log for this client's commands."""
        return f"{UI_SENDER}{self.peer}#{self.number}"

    @property
    def live(self) -> bool:
        """Whether this client is sent the show (watching, and not dropped)."""
        return self.watching and self.dropped is None


# --------------------------------------------------------------------------- the hub


class GatewayCore:
    """Every session, the view they share, and what client messages mean."""

    def __init__(self, view: StatusView, log_id: str, policy: Policy | None = None) -> None:
        self.view = view
        self.log_id = log_id
        self.policy = policy or Policy()
        self.sessions: dict[int, Session] = {}
        self.dumps = Dumps(log_id)
        self.lockout = Lockout()
        self._numbers = 0
        #: when set, every command from a client is refused with this reason (replay mode)
        self.read_only: str | None = None
        self.stats = {"resyncs": 0, "drops": 0, "commands": 0, "bad_frames": 0}
        self.log = log.for_node(NODE_ID)

    @property
    def seq(self) -> int:
        return self.view.seq

    def _live(self) -> list[Session]:
        return [s for s in self.sessions.values() if s.live]

    # ------------------------------------------------------------------ connections

    def connect(self, peer: str, since: int | None = None, log_id: str | None = None) -> Session:
        """A client connected from `peer` (an IP address); its first output is queued."""
        self._numbers += 1
        control = self.policy.controls(peer)
        watching = control or not self.policy.private
        session = Session(self._numbers, peer, control, watching)
        self.sessions[session.number] = session
        if watching:
            self._queue_dump(session, self.dumps.dump(self.view, since, log_id))
        return session

    def disconnect(self, session: Session) -> None:
        self.sessions.pop(session.number, None)

    def _queue_dump(self, session: Session, dump: Dump) -> None:
        # the dump's items may be shared by several sessions: it only reads them. Replies
        # already queued stay (in order, before the dump); deltas go (the dump covers them).
        session.clear(keep_replies=True)
        session.pacer.held.clear()
        session.queue.append(dump)
        session.synced = session.seq_told = dump.seq

    def _dump_all(self) -> None:
        """A full dump at the view's seq for every live client (OSC cannot say "gone")."""
        for session in self._live():
            self._queue_dump(session, self.dumps.full(self.view))

    # ------------------------------------------------------------------ the stream

    def on_events(self, events: Sequence[Event], now: float) -> None:
        """Fold committed events (in seq order) and queue their changes for every client."""
        for event in events:
            if event.seq <= self.view.seq:
                continue  # already folded (a replay that restarted, say)
            _, changes = self.view.apply(event)
            if self.view.removed_at == event.seq:
                self._dump_all()  # addresses disappeared: a new show was loaded
            elif changes:
                self._fan_out(changes, now)
        self._check_overflows(now)

    def reset_view(self, view: StatusView, now: float) -> None:
        """Serve `view` from now on (a replay that seeks back): every watching client gets a
        full dump of it; queued changes of the old view are dropped (replies stay)."""
        self.view = view
        self.dumps.forget()
        self._dump_all()

    def on_status(self, status: dict[str, Any], now: float) -> None:
        """The controller's status (each second): node lag, and a source's own values (the
        replay position), become values outside the log; send what changed."""
        values = node_values(status["nodes"], status["head_seq"])
        values.update(status.get("osc", {}))
        self.set_extra(values, now)

    def set_extra(self, values: dict[str, Value], now: float) -> None:
        """Replace the values that live outside the log (node lag); send what changed."""
        changes = self.dumps.set_extra(values)
        if changes:
            self._fan_out(changes, now)
            self._check_overflows(now)

    def _fan_out(self, changes: list[tuple[str, Value]], now: float) -> None:
        sessions = self._live()
        if not sessions:
            return
        # each change is encoded once, whoever gets it
        encoded = [(a, v, f) for a, v in changes if (f := frame_of(a, v))]
        for session in sessions:
            pacer = session.pacer
            for address, value, data in encoded:
                if pacer.offer(address, value, now):
                    session.push((address, data))

    def _check_overflows(self, now: float) -> None:
        for session in self.sessions.values():
            if session.overflowing and session.dropped is None:
                self._overflow(session, now)

    def _overflow(self, session: Session, now: float) -> None:
        if session.limits.overflowed(now):
            self.drop(session, f"fell behind {MAX_OVERFLOWS} times in {OVERFLOW_WINDOW:g} s")
            return
        self.stats["resyncs"] += 1
        self.log.warning(
            "%s fell %d messages behind: resyncing it with a fresh dump",
            session.name,
            MAX_QUEUE,
            seq=self.view.seq,
        )
        # replies stay: every command gets its answer; deltas go, a dump covers them
        session.clear(keep_replies=True)
        if session.watching:
            self._queue_dump(session, self.dumps.full(self.view))

    def drop(self, session: Session, why: str) -> None:
        if session.dropped is None:
            session.dropped = why
            session.clear(keep_replies=False)
            self.stats["drops"] += 1
            self.log.warning("dropping %s: %s", session.name, why, seq=self.seq)

    def next_deadline(self) -> float | None:
        """The earliest time a held (coalesced) value is due, if any."""
        due = [d for s in self.sessions.values() if (d := s.pacer.next_due()) is not None]
        return min(due, default=None)

    def on_timer(self, now: float) -> list[Session]:
        """Release held values that are due; return the sessions that got output."""
        woken = []
        for session in self.sessions.values():
            if not session.pacer.held:
                continue
            ready = session.pacer.due(now)
            for address, value in ready:
                data = frame_of(address, value)
                if data:
                    session.push((address, data))
            if ready:
                woken.append(session)
        return woken

    def tick_seq(self) -> bool:
        """Once a second: queue ``/engine/status/seq`` for every client whose picture moved
        since it was last told. A client still holding a coalesced value is told later:
        resuming from that seq would skip the held change."""
        seq = self.view.seq
        data: bytes | None = None
        for session in self._live():
            if session.synced is not None and session.seq_told != seq and not session.pacer.held:
                if data is None:
                    data = osc.encode(SEQ, seq)
                session.push(data)
                session.seq_told = seq
        return data is not None

    # ------------------------------------------------------------------ input

    def admit_frame(self, session: Session, now: float, size: int = 0) -> bool:
        """Count one frame (of any kind, `size` bytes) against the client's rate
        (`gateway.limits`); a client over its rate is dropped (False)."""
        if session.dropped is not None:
            return False
        if not session.limits.spend(now, size):
            self.drop(session, f"flooding (more than {FRAME_RATE:g} frames/s)")
            return False
        return True

    def on_frame(self, session: Session, frame: bytes, now: float, /) -> list[Effect]:
        """A binary frame from a client. Returns what the shell must do; replies are queued."""
        try:
            messages = osc.decode(frame)
        except osc.OscError as exc:
            self.stats["bad_frames"] += 1
            self.log.warning("bad OSC from %s: %s", session.name, exc)
            session.push(osc.encode("/reply/error", reply("error", error=str(exc))))
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
            self._sync(session, args, now)
            return []
        if address.startswith(REPLY_PREFIX + "/"):
            return []  # a client echoing replies: nothing to do
        op_or_error = command_operation(session.sender, address, args)
        if op_or_error is None:
            return [Handle(session, msg)]
        if isinstance(op_or_error, str):
            self.answer(session, address, "error", error=op_or_error)
            return []
        if self.refuse(session, address):
            return []
        self.stats["commands"] += 1
        return [Submit(session, address, op_or_error)]

    def refuse(self, session: Session, address: str) -> bool:
        """Whether `session` may not act on `address` (read-only gateway, or no control):
        if so it is answered ``denied`` and True is returned."""
        if self.read_only is not None:
            self.answer(session, address, "denied", error=self.read_only)
            return True
        if not session.control:
            self.answer(session, address, "denied", error=NO_CONTROL)
            self.log.warning("denied %s from %s (no control)", address, session.name)
            return True
        return False

    def _connect(self, session: Session, args: tuple[Any, ...], now: float) -> None:
        key = lock_key(session.peer)
        until = self.lockout.locked_until(key, now)
        if until is not None:
            self._push_reply(
                session, "/reply/connect", "badpass", f"locked for {until - now:.0f} s"
            )
            self.log.warning("passcode attempt from locked-out %s", session.name)
            return
        given = args[0] if len(args) == 1 and isinstance(args[0], str) else None
        if self.policy.passcode_matches(given):
            self.lockout.succeeded(key)
            session.control = True
            was_watching, session.watching = session.watching, True
            self._push_reply(session, "/reply/connect", "ok")
            self.log.info("%s took control with the passcode", session.name)
            if not was_watching:
                self._queue_dump(session, self.dumps.full(self.view))
            return
        locked = self.lockout.failed(key, now)
        why = "no passcode is set" if self.policy.passcode is None else "wrong passcode"
        self.log.warning(
            "refused /connect from %s: %s%s",
            session.name,
            why,
            f"; {key} locked out for {LOCKOUT:g} s" if locked else "",
        )
        self._push_reply(session, "/reply/connect", "badpass")

    def _sync(self, session: Session, args: tuple[Any, ...], now: float) -> None:
        if not session.watching:
            self._push_reply(session, REPLY_PREFIX + SYNC, reply("denied"))
            return
        if not args or isinstance(args[0], bool) or not isinstance(args[0], int) or args[0] < 0:
            self.answer(session, SYNC, "error", error="expects one int: the seq you have")
            return
        if not session.limits.may_sync(now):
            why = f"at most {SYNC_BURST} /engine/sync per {SYNC_WINDOW:g} s: wait"
            self.answer(session, SYNC, "error", error=why)
            return
        their_log = args[1] if len(args) > 1 and isinstance(args[1], str) else None
        self._queue_dump(session, self.dumps.dump(self.view, args[0], their_log))

    def answer(self, session: Session, address: str, status: str, **extra: Any) -> None:
        """Queue ``/reply<address>`` with the JSON reply (see `reply`)."""
        self._push_reply(session, REPLY_PREFIX + address, reply(status, **extra))

    def _push_reply(self, session: Session, address: str, *values: osc.OscValue) -> None:
        if session.dropped is None:
            # the address is the client's choice: never cached
            session.push(osc.encode(address, *values, cache=False))

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


def reply(status: str, seq: int | None = None, error: str | None = None) -> str:
    """The JSON a reply carries: ``{"status", "seq", "error"}``."""
    return orjson.dumps({"status": status, "seq": seq, "error": error}).decode()
