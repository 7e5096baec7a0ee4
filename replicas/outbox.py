"""A node's outbox, and what its submitter sends next and makes of each reply. No I/O.

`Outbox` is the bounded, thread-safe FIFO of the node's own operations waiting for their
acknowledgement; each gets an op id ``[origin, n]`` when queued, so sending it again is always
safe. `SubmitterCore` decides what the node's submitter (`replicas.node`, the shell) sends
next: submits of at most `SUBMIT_BATCH` ops and `SUBMIT_BYTES`, from the oldest unacknowledged
op, each chained after the one before it so the controller keeps the node's order whatever
order they arrive in. A reply either acknowledges its ops (they leave the outbox and their
futures settle) or means "send again from the oldest" after a delay.
"""

from __future__ import annotations

import collections
import concurrent.futures
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from eventlog import CuelogError, Operation, ValidationError, dumps, validate_operation
from replicas import protocol
from replicas.messages import Acks, Chain, Error, Reply, Submit
from replicas.protocol import HELLO_RULES, Rule

SUBMIT_BATCH: Final = 1000
#: most encoded bytes of ops in one submit (each op measured exactly when queued; a submit
#: holds at least one op, and the controller reads requests up to `protocol.MAX_REQUEST_BYTES`)
SUBMIT_BYTES: Final = 1024 * 1024
if SUBMIT_BYTES + protocol.MAX_EVENT_BYTES + protocol.ENVELOPE_BYTES > protocol.MAX_REQUEST_BYTES:
    raise AssertionError("a node's submit could pass the controller's request limit")
#: the first wait before sending again after a failure, and the longest (it doubles)
BACKOFF_MIN: Final = 0.05
BACKOFF_MAX: Final = 1.0
#: error rules after which a submit is simply sent again
RETRY_RULES: Final = frozenset(
    {Rule.STOPPING, Rule.COMMIT, Rule.OUT_OF_ORDER, Rule.HELLO_FIRST, Rule.NOT_LEADER}
)
#: sent again at once: the controller itself asks for the resend, or the hello that comes first
_NO_WAIT: Final = frozenset({Rule.OUT_OF_ORDER, Rule.HELLO_FIRST})

Items = list[tuple[dict[str, Any], "concurrent.futures.Future[int]"]]


class OutboxFull(CuelogError):
    """The node's outbox is full: the controller has not acknowledged enough operations."""


class OperationRefused(CuelogError):
    """The controller refused an operation (its validation error says why)."""

    def __init__(self, detail: dict[str, Any]) -> None:
        self.detail = detail
        super().__init__(str(detail.get("error", detail)))


class Outbox:
    """Bounded, thread-safe FIFO of operations waiting for their acknowledgement."""

    def __init__(self, node_id: str, maxsize: int, origin: str, batch: int = SUBMIT_BATCH) -> None:
        self.node_id = node_id
        #: most ops in one submit
        self.batch = batch
        self.maxsize = maxsize
        self.origin = origin
        self._counter = 0
        self._items: collections.deque[tuple[dict[str, Any], concurrent.futures.Future[int]]]
        self._items = collections.deque()
        #: encoded size estimate of each item, in step with `_items`
        self._sizes: collections.deque[int] = collections.deque()
        self._lock = threading.Lock()
        self.wake: Callable[[], None] = lambda: None
        #: set by the submitter when it has a free slot and waits: the next put wakes it
        self.want_wake = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, op: Operation, *, validated: bool = False) -> concurrent.futures.Future[int]:
        """Queue `op`, validated here (so a bad op fails in the caller, not later) unless the
        caller just did it (``validated=True``)."""
        if not validated:
            op = validate_operation(op)
        future: concurrent.futures.Future[int] = concurrent.futures.Future()
        with self._lock:
            if op.sender != self.node_id:
                raise ValidationError(
                    "sender",
                    Rule.NOT_YOURS,
                    f"node {self.node_id} submits as itself: the sender must be "
                    f"{self.node_id}, not {op.sender}",
                )
            if len(self._items) >= self.maxsize:
                raise OutboxFull(
                    f"node {self.node_id}: {len(self._items)} operations are waiting for the "
                    "controller to acknowledge them (outbox full); is the controller reachable?"
                )
            self._counter += 1
            wire = op.to_wire()
            wire["op_id"] = [self.origin, self._counter]
            wake = not self._items or self.want_wake
            self.want_wake = False
            self._items.append((wire, future))
            # exact: its encoding in the submit, and the comma after it
            self._sizes.append(len(dumps(wire)) + 1)
        if wake:  # the submitter sleeps on an empty outbox, or asked to hear of more
            self.wake()
        return future

    def peek(
        self, limit: int, start: int = 0, max_bytes: int | None = None
    ) -> list[tuple[dict[str, Any], concurrent.futures.Future[int]]]:
        """Up to `limit` queued items (and about `max_bytes` encoded, but at least one) from
        position `start` (0 is the oldest)."""
        with self._lock:
            end = min(start + limit, len(self._items))
            if max_bytes is not None:
                total = 0
                for i in range(start, end):
                    total += self._sizes[i]
                    if total > max_bytes and i > start:
                        end = i
                        break
            return [self._items[i] for i in range(start, end)]

    def next_submit(self, node_id: str, start: int = 0) -> tuple[Submit, Items] | None:
        """The next ``submit`` request and its items: the ops queued from position `start`, at
        most `batch` of them and `SUBMIT_BYTES` encoded (at least one), chained after
        the op before them. Always under the controller's ``protocol.MAX_REQUEST_BYTES``."""
        items = self.peek(self.batch, start, SUBMIT_BYTES)
        if not items:
            return None
        first, last = items[0][0]["op_id"][1], items[-1][0]["op_id"][1]
        chain = Chain(self.origin, first - 1, last, start == 0)
        return Submit(node_id, [wire for wire, _ in items], chain), items

    def drop(self, count: int) -> None:
        with self._lock:
            for _ in range(count):
                self._items.popleft()
                self._sizes.popleft()


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a reply to the oldest submit in flight means for the submitter."""

    #: its ops were not acknowledged: send everything unacknowledged again, from the oldest
    resend: bool
    #: seconds to wait before that
    delay: float = 0.0
    #: the connection must say hello (again) first
    hello: bool = False


class SubmitterCore:
    """The submitter's decisions over an `Outbox`. The shell sends what `next_submit` gives,
    keeps several in flight, and hands each reply back oldest first (`on_reply`); it waits
    what the verdict says before sending more.

    After a failure the submits still in flight behind it are let land (their acks count:
    the same op ids get the same seqs back), nothing new is sent meanwhile, and once the last
    of them is back everything unacknowledged is sent again from the oldest op."""

    def __init__(self, outbox: Outbox, node_id: str) -> None:
        self.outbox = outbox
        self.node_id = node_id
        #: ops from the head of the outbox that are in flight
        self.sent = 0
        #: the items of each submit in flight, oldest first
        self.inflight: collections.deque[Items] = collections.deque()
        #: a submit failed: the rest in flight are landing; then send again from the oldest
        self.draining = False
        self._wait = 0.0
        self.backoff = BACKOFF_MIN

    def next_submit(self) -> Submit | None:
        """The next submit to send (after those in flight), or None (nothing queued, or the
        ones in flight must land first)."""
        if self.draining:
            return None
        found = self.outbox.next_submit(self.node_id, self.sent)
        if found is None:
            return None
        msg, items = found
        self.sent += len(items)
        self.inflight.append(items)
        return msg

    @property
    def more(self) -> bool:
        """Whether ops were queued that are not in flight yet (and may be sent now)."""
        return not self.draining and len(self.outbox) > self.sent

    def on_reply(self, reply: Reply | None) -> Verdict:
        """The reply to the oldest submit in flight (None: none came in time)."""
        items = self.inflight.popleft()
        rule = reply.rule if isinstance(reply, Error) else None
        hello = rule in HELLO_RULES
        if self.draining:  # one that was in flight behind a failure: its acks count
            if isinstance(reply, Acks):
                settle_acks(items, reply)
            return self._drained(hello)
        if reply is not None and rule not in RETRY_RULES:
            self.backoff = BACKOFF_MIN
            self.outbox.drop(len(items))
            self.sent -= len(items)
            settle_acks(items, reply)
            return Verdict(resend=False, hello=hello)
        self.draining = True
        if rule in _NO_WAIT:
            self._wait = 0.0
        else:
            self._wait, self.backoff = self.backoff, min(self.backoff * 2, BACKOFF_MAX)
        return self._drained(hello)

    def _drained(self, hello: bool) -> Verdict:
        if self.inflight:
            return Verdict(resend=True, hello=hello)
        self.draining = False
        self.sent = 0  # nothing in flight: start again from the oldest op
        return Verdict(resend=True, delay=self._wait, hello=hello)


def settle_acks(items: Items, reply: Reply) -> None:
    """Resolve the futures of a submit's ops from its reply (already resolved ones stay)."""
    if isinstance(reply, Acks) and len(reply.results) == len(items):
        results: list[Any] = reply.results
    elif isinstance(reply, Error):
        results = [{"error": reply.error, "rule": reply.rule}] * len(items)
    else:
        results = [{"error": f"the controller answered {type(reply).__name__}"}] * len(items)
    for (_, fut), result in zip(items, results, strict=True):
        if fut.done():
            continue
        if isinstance(result, dict) and isinstance(result.get("seq"), int):
            fut.set_result(result["seq"])
        else:
            fut.set_exception(
                OperationRefused(result if isinstance(result, dict) else {"error": repr(result)})
            )


class Coalescer:
    """Progress updates held back per key (``cue:<id>``): at most one every `interval`
    seconds, the latest value wins, and every caller's future gets the seq of the value that
    was sent. An operation put with the same key supersedes a held one, so a progress can
    never arrive after the cue's remove. Thread-safe; the caller owns the timer."""

    def __init__(self, outbox: Outbox, interval: float) -> None:
        self.outbox = outbox
        self.interval = interval
        self._lock = threading.Lock()
        self._held: dict[str, tuple[Operation, list[concurrent.futures.Future[int]]]] = {}
        self._last_sent: dict[str, float] = {}

    def put(self, op: Operation, key: str | None) -> concurrent.futures.Future[int]:
        """Queue `op` now; a held update of `key` is superseded by it."""
        if key is None:
            return self.outbox.put(op)
        with self._lock:
            held = self._held.pop(key, None)
            sent = self.outbox.put(op)
        if held is not None:
            _resolve_like(sent, held[1])
        return sent

    def put_latest(
        self, key: str, op: Operation, now: float, timer: bool
    ) -> tuple[concurrent.futures.Future[int], float | None]:
        """Queue `op` now, or hold it: ``(future, delay)``, delay None when it was queued,
        else the seconds after which the caller calls `flush` (once per held key). Without
        a `timer` it is always queued."""
        op = validate_operation(op)
        future: concurrent.futures.Future[int] = concurrent.futures.Future()
        with self._lock:
            held = self._held.get(key)
            if held is not None:
                self._held[key] = (op, [*held[1], future])
                return future, None
            last = self._last_sent.get(key, -1e9)
            if now - last >= self.interval or not timer:
                self._last_sent[key] = now
                return self.outbox.put(op, validated=True), None
            if len(self.outbox) >= self.outbox.maxsize:
                raise OutboxFull(f"node {self.outbox.node_id}: outbox full")
            self._held[key] = (op, [future])
        return future, last + self.interval - now

    def flush(self, key: str, now: float) -> None:
        """The interval of `key` ended: queue its held update, if any."""
        with self._lock:
            held = self._held.pop(key, None)
            if held is None:
                return
            self._last_sent[key] = now
            try:
                sent = self.outbox.put(held[0], validated=True)
            except CuelogError as exc:
                for fut in held[1]:
                    fut.set_exception(exc)
                return
        _resolve_like(sent, held[1])

    def drop(self, why: Exception) -> None:
        """Fail every held update with `why` (the node stopped)."""
        with self._lock:
            held, self._held = self._held, {}
        for _, futures in held.values():
            for fut in futures:
                if not fut.done():
                    fut.set_exception(why)


def _resolve_like(
    source: concurrent.futures.Future[int], targets: list[concurrent.futures.Future[int]]
) -> None:
    """Resolve every future in `targets` the way `source` resolves."""

    def done(result: concurrent.futures.Future[int]) -> None:
        exc = result.exception()
        for fut in targets:
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(result.result())

    source.add_done_callback(done)
