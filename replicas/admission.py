"""Admission: the order in which submits enter the controller's group commit. No I/O, no clock.

A node keeps several submits in flight; they may arrive in any order. Each says which of its
origin's ops must already be admitted before it may be (its `Chain`). `Admission` decides,
for every submit, whether it joins the commit queue now or waits (parked) for its
predecessor; it releases the waiting ones as their predecessors come, sends back the ones
that waited too long, and, when a group commit fails, answers the failed batch and sends back
everything of the same origins queued or parked behind it (so no node's later op can ever be
committed before its earlier one). The controller's own ops are retried here instead.

The shell owns the futures: every submit comes with a `Token` and every decision goes out as
`Answers`, pairs of (token, reply) for the shell to deliver. It calls `submit`, then `take`
for each group commit and `committed` or `commit_failed` with its outcome, and `expire`
now and then; `drain` at shutdown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from eventlog import CONTROLLER
from replicas.messages import Acks, Chain, Error, error
from replicas.protocol import Rule
from replicas.sequencer import ControllerCore, Prepared

#: a parked submit whose predecessor does not come within this many seconds is sent back
PARK_TIMEOUT: Final = 0.5
#: how many failed commits the controller's own ops live through before they are refused
OWN_RETRIES: Final = 3

Token = int
#: what a submitter is told: its acks, or why not
SubmitReply = Acks | Error
Answers = list[tuple[Token, SubmitReply]]

_RESEND = (
    "an earlier submit of this node failed to commit: resend from the oldest unacknowledged op"
)


@dataclass(slots=True)
class Ticket:
    """A submit in the commit queue."""

    prepared: Prepared
    token: Token
    #: committed in a transaction of its own (its group commit failed: find the culprit)
    alone: bool = False


@dataclass(slots=True)
class _Parked:
    chain: Chain
    prepared: Prepared
    token: Token
    since: float


class Admission:
    """The commit queue and the parked submits of one `ControllerCore`."""

    def __init__(self, core: ControllerCore, park_timeout: float = PARK_TIMEOUT) -> None:
        self.core = core
        self.park_timeout = park_timeout
        #: admitted, in order, waiting for the next group commit
        self.queue: list[Ticket] = []
        #: per origin, submits that came before their predecessor
        self.parked: dict[str, list[_Parked]] = {}

    # ------------------------------------------------------------------ in

    def submit(self, prepared: Prepared, chain: Chain | None, token: Token, now: float) -> Answers:
        """Queue `prepared` for the next commit, or park it until its predecessor is
        admitted. Answers what can be answered at once (a submit whose every op was refused,
        and any parked successor released by it that is in the same case)."""
        if chain is not None and not self.core.in_order(chain.origin, chain.prev, chain.head):
            self.parked.setdefault(chain.origin, []).append(_Parked(chain, prepared, token, now))
            return []
        return self._admit(prepared, chain, token)

    def _admit(self, prepared: Prepared, chain: Chain | None, token: Token) -> Answers:
        answers = self._enter(prepared, chain, token)
        if chain is not None:
            answers.extend(self._release(chain.origin))
        return answers

    def _enter(self, prepared: Prepared, chain: Chain | None, token: Token) -> Answers:
        """Into the queue (or answered at once when every op was refused), in its origin's
        order."""
        answers: Answers = []
        if chain is not None:
            prepared.origin = chain.origin
        if prepared.subs:
            self.queue.append(Ticket(prepared, token))
        else:
            refused = [e for e in prepared.errors if e is not None]  # every op was refused
            answers.append((token, Acks(refused, self.core.head)))
        if chain is not None:
            self.core.admitted(chain.origin, chain.last)
        return answers

    def _release(self, origin: str) -> Answers:
        """Admit the parked submits of `origin` whose predecessors are now admitted."""
        answers: Answers = []
        waiting = self.parked.get(origin)
        while waiting:
            upto = self.core.admitted_upto(origin)
            ready = [entry for entry in waiting if entry.chain.prev <= upto]
            if not ready:
                return answers
            entry = min(ready, key=lambda e: e.chain.prev)
            waiting.remove(entry)
            answers.extend(self._enter(entry.prepared, entry.chain, entry.token))
        self.parked.pop(origin, None)
        return answers

    # ------------------------------------------------------------------ commits

    def take(self) -> list[Ticket]:
        """The next group commit: everything admitted so far, up to the first ticket that
        must go alone (or that one ticket)."""
        if self.queue and self.queue[0].alone:
            return [self.queue.pop(0)]
        cut = next((i for i, t in enumerate(self.queue) if t.alone), len(self.queue))
        batch, self.queue = self.queue[:cut], self.queue[cut:]
        return batch

    def committed(self, batch: list[Ticket], replies: list[Acks]) -> Answers:
        """The commit of `batch` returned these replies (one per ticket, in order)."""
        return [(ticket.token, reply) for ticket, reply in zip(batch, replies, strict=True)]

    def commit_failed(self, batch: list[Ticket], why: str) -> Answers:
        """The commit of `batch` raised: nothing of it is acknowledged. Nodes resend (op ids
        make that safe), so everything of the same origins queued or parked behind it goes
        back to them too; the controller's own ops are queued again, a few times.

        A failed group of several submits is not answered: its tickets go back to the front
        of the queue, in order, each to be committed alone, so one bad op (a peer's, or a
        bug's) fails only its own submit, never everyone else's in the same commit."""
        if len(batch) > 1:
            for ticket in batch:
                ticket.alone = True
            self.queue = batch + self.queue
            return []
        origins = {t.prepared.origin for t in batch if t.prepared.origin is not None}
        self.core.forget_origins(origins)
        answers: Answers = []
        again: list[Ticket] = []
        for ticket in batch:
            prepared = ticket.prepared
            if prepared.node == CONTROLLER and prepared.failures < OWN_RETRIES:
                prepared.failures += 1
                again.append(ticket)
            else:
                answers.append((ticket.token, error(f"commit failed: {why}", Rule.COMMIT)))
        keep: list[Ticket] = []
        for ticket in self.queue:
            if ticket.prepared.origin is not None and ticket.prepared.origin in origins:
                answers.append((ticket.token, error(_RESEND, Rule.OUT_OF_ORDER)))
            else:
                keep.append(ticket)
        self.queue = again + keep
        for origin in origins:
            for entry in self.parked.pop(origin, []):
                answers.append((entry.token, error(_RESEND, Rule.OUT_OF_ORDER)))
        return answers

    def refuse(self, batch: list[Ticket], reply: Error) -> Answers:
        """Answer every ticket of `batch` with `reply` (the log file is lost)."""
        return [(ticket.token, reply) for ticket in batch]

    # ------------------------------------------------------------------ time

    def expire(self, now: float) -> Answers:
        """Send back the parked submits whose predecessor did not come in time."""
        answers: Answers = []
        for origin in list(self.parked):
            waiting = self.parked[origin]
            for entry in [e for e in waiting if now - e.since >= self.park_timeout]:
                waiting.remove(entry)
                chain = entry.chain
                answers.append(
                    (
                        entry.token,
                        error(
                            f"operations after {chain.origin}#{chain.prev} arrived before it: "
                            "resend from the oldest unacknowledged one",
                            Rule.OUT_OF_ORDER,
                        ),
                    )
                )
            if not waiting:
                del self.parked[origin]
        return answers

    def drain(self, reply: Error) -> Answers:
        """Answer everything queued and parked with `reply` (the controller is stopping)."""
        answers = self.refuse(self.take(), reply)
        for waiting in self.parked.values():
            answers.extend((entry.token, reply) for entry in waiting)
        self.parked.clear()
        return answers
