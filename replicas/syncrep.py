"""When a leader may acknowledge: with a synchronous standby, only once the standby holds it.

A hot standby can take the show over without losing an acknowledged op only if it had every
acknowledged op durably before the leader died. `SyncGate` decides, for a leader started with
``--ha``, when each committed submit's answer may go out. It is a core: no clock, no socket,
no etcd; the controller's shell feeds it and carries out what it returns.

The states (the pattern of Patroni's synchronous mode):

``alone``
    etcd records that this leader runs without a synchronous standby. Answers go out after the
    leader's own commit. No standby may take over (`replicas.election` checks the record), so
    nothing acknowledged alone can be lost by a failover. A standby that has copied everything
    acknowledged so far is *joining*: from then on answers wait for its copy too, and the shell
    is asked to name it in etcd.
``sync``
    etcd names standby X. An answer for seq s goes out once X reported (`copied`) that it holds
    s durably. If X is silent, or an answer waited, longer than `timeout`, the gate is
    *leaving*: answers are held until the shell recorded in etcd that the leader runs alone
    (a transaction guarded by its leadership); then they all go out.

The shell writes what `want` says (a name or None) and reports it with `written`. Nothing is
ever answered alone while etcd may name a standby: a name being written counts as named.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

#: how long (seconds) a synchronous standby may keep answers waiting, or be silent, before
#: the leader records that it runs alone and answers without it
DEFAULT_SYNC_TIMEOUT: Final = 1.0
#: how often (seconds) a standby reports its durable seq even when nothing changed
COPIED_INTERVAL: Final = 0.2
#: etcd's sync record as read back when it is not this leader's (never a candidate's name)
FOREIGN: Final = "<foreign record>"
#: the most standbys whose reports are kept (a peer inventing names cannot grow it further)
MAX_STANDBYS: Final = 16
#: node ids of standbys start with this (``standby:NAME``)
STANDBY_PREFIX: Final = "standby:"

A = TypeVar("A")

#: `SyncGate.want` when etcd records what it should
NO_CHANGE: Final[Any] = object()


@dataclass
class Copy:
    """What one standby reported: its durable seq, when (monotonic), from which proven
    op-id origin (its process), and whether its connection is gone."""

    seq: int
    seen: float
    inst: str = ""
    gone: bool = False


@dataclass
class _Held(Generic[A]):
    seq: int
    since: float
    answers: list[A] = field(default_factory=list)


class SyncGate(Generic[A]):
    """Which answers may go out now (see the module docstring). `A` is the shell's answer."""

    def __init__(self, timeout: float = DEFAULT_SYNC_TIMEOUT, recorded: str | None = None) -> None:
        self.timeout = timeout
        #: what etcd records as the synchronous standby (None: the leader runs alone); a new
        #: leadership starts alone (its election transaction wrote that)
        self.recorded: str | None = recorded
        #: the standby whose copy answers wait for (None: they go out at once)
        self.sync: str | None = recorded
        #: true once `sync` timed out: answers wait until etcd records the leader alone
        self.leaving = False
        #: a write of the record is on its way (its value), or None
        self.writing: Any = None
        #: the highest seq answered without any standby's copy
        self.alone_to = 0
        #: every standby's last report, by name
        self.copies: dict[str, Copy] = {}
        #: the candidates etcd lists, with the op-id origin of each one's standby (None: not
        #: read yet); only a standby whose connection proved that origin can be synchronous
        self.members: dict[str, str] | None = None
        self._held: collections.deque[_Held[A]] = collections.deque()
        #: the leader's head (the shell keeps it current)
        self.head = 0

    # ------------------------------------------------------------------ views

    @property
    def synchronous(self) -> bool:
        """Whether answers now wait for a standby's copy."""
        return self.sync is not None or self.leaving

    @property
    def want(self) -> Any:
        """What etcd should record now, if that differs from what it records (else
        `NO_CHANGE`): None when leaving, the joining standby's name when joining."""
        if self.writing is not None:
            return NO_CHANGE
        target = None if self.leaving else self.sync
        return NO_CHANGE if target == self.recorded else target

    def held(self) -> int:
        return sum(len(h.answers) for h in self._held)

    def describe(self, mono: float) -> dict[str, Any]:
        """For status: the synchronous standby, whether answers wait, every standby's lag."""
        return {
            "synchronous": self.synchronous and not self.leaving,
            "sync_standby": self.recorded,
            "joining": self.sync if self.sync != self.recorded else None,
            "held": self.held(),
            "standbys": {
                name: {
                    "copied": c.seq,
                    "lag": max(0, self.head - c.seq),
                    "seen_ago_s": round(max(0.0, mono - c.seen), 3),
                    "connected": not c.gone,
                    "counted": self._listed(name),
                }
                for name, c in sorted(self.copies.items())
            },
        }

    # ------------------------------------------------------------------ inputs

    def committed(self, seq: int, answers: list[A], mono: float) -> list[A]:
        """Answers of a commit that ended at `seq`: those that may go out now."""
        self.head = max(self.head, seq)
        if not answers:
            return []
        if not self.synchronous and self.writing is None and self.recorded is None:
            self.alone_to = max(self.alone_to, seq)
            return answers
        self._held.append(_Held(seq, mono, answers))
        return self._release()

    def copied(self, name: str, seq: int, mono: float, inst: str = "") -> list[A]:
        """Standby `name` holds everything up to `seq` durably. Raises ValueError for a report
        no honest standby makes (beyond the head). A standby etcd does not list as a candidate
        (not yet read, or a peer lying about who it is: its connection's proven origin `inst`
        is not the one that candidate published) is shown but never made synchronous."""
        if seq > self.head:
            raise ValueError(f"standby {name} says it holds seq {seq}, beyond the head {self.head}")
        if name not in self.copies and len(self.copies) >= MAX_STANDBYS:
            raise ValueError(f"{MAX_STANDBYS} standbys report already; {name} is not counted")
        before = self.copies.get(name)
        if before is not None and before.inst == inst:  # the same process: its seq only grows
            seq = max(seq, before.seq)
        # another process under that name starts over: a report never counts for another one
        self.copies[name] = Copy(seq, mono, inst)
        listed = self._listed(name)
        if (
            listed
            and self.sync is None
            and not self.leaving
            and self.writing is None
            and seq >= self.alone_to
        ):
            # it holds everything answered so far: from now on answers wait for it too
            self.sync = name
        return self._release()

    def tick(self, mono: float) -> list[A]:
        """Time passed: a synchronous standby that is silent or keeps answers waiting longer
        than `timeout` is given up (the gate is leaving until etcd records it)."""
        if self.sync is not None and not self.leaving:
            copy = self.copies.get(self.sync)
            silent = (
                copy is None
                or copy.gone
                or mono - copy.seen > self.timeout
                or not self._listed(self.sync)
            )
            waited = bool(self._held) and mono - self._held[0].since > self.timeout
            if silent or waited:
                self.leaving = True
        if self.leaving and self.recorded is None and self.writing is None:
            return self._alone()  # etcd never named it (it was joining): nothing to undo
        return self._release()

    def forget(self, name: str) -> None:
        """Standby `name` went away (its connection closed): `tick` gives it up in time."""
        copy = self.copies.get(name)
        if copy is not None:
            copy.gone = True

    def seen_record(self, value: str | None) -> bool:
        """What etcd records now, read back (`FOREIGN`: not this leader's record). True if
        it is not what this gate wrote: it is written again (and nothing is answered alone
        until it is, should etcd name a standby)."""
        if self.writing is not None or value == self.recorded:
            return False
        self.recorded = value
        return True

    def write_started(self, value: str | None) -> None:
        self.writing = value if value is not None else ""

    def written(self, value: str | None, ok: bool) -> list[A]:
        """The shell's write of `value` ended (`ok`: etcd took it under this leadership)."""
        self.writing = None
        if not ok:
            return []  # the shell stops leading; nothing more goes out
        self.recorded = value
        if value is None and self.leaving:
            return self._alone()
        return self._release()

    # ------------------------------------------------------------------ inside

    def _alone(self) -> list[A]:
        """etcd records that this leader runs alone: every held answer goes out."""
        self.leaving = False
        self.sync = None
        out = [a for h in self._held for a in h.answers]
        if self._held:
            self.alone_to = max(self.alone_to, self._held[-1].seq)
        self._held.clear()
        return out

    def _listed(self, name: str) -> bool:
        """Whether `name`'s last report came from the process its candidate published."""
        copy = self.copies.get(name)
        return (
            copy is not None
            and bool(copy.inst)
            and self.members is not None
            and self.members.get(name) == copy.inst
        )

    def _release(self) -> list[A]:
        if self.leaving or self.sync is None:
            return []
        copy = self.copies.get(self.sync)
        done = copy.seq if copy is not None and self._listed(self.sync) else 0
        out: list[A] = []
        while self._held and self._held[0].seq <= done:
            out.extend(self._held.popleft().answers)
        return out
