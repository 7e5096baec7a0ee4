"""When a node's engine is owed a restore, and which commands wait for it. No I/O.

The engine restores (reloads the show, re-arms) once per session and after every resync:
``start`` (the replica began empty), ``restart`` (it resumed from its own file) or ``resync``
(it was rebuilt from the controller's snapshot, or held another log). The restore is
delivered once the replica has caught up, with the state at that seq; a live command that
arrives before that is held and fires after the restore, never before it. A restore that
finds no callback set is remembered and delivered when one is set.
"""

from __future__ import annotations

from eventlog import Event


class RestoreGate:
    """The restore owed to one node's engine, and the commands held for it."""

    def __init__(self) -> None:
        #: why the engine must restore once caught up (None: nothing owed)
        self.owed: str | None = None
        #: commands to fire once the owed restore is delivered
        self.held: list[Event] = []
        #: a restore that found no callback set (delivered when one is set)
        self.missed: str | None = None
        self._resyncs_seen = 0

    def start(self, resumed: bool, resyncs: int) -> None:
        """A new session: the engine is owed a restore once the replica caught up."""
        self.owed = "restart" if resumed else "start"
        self._resyncs_seen = resyncs
        self.held = []

    def note(self, resyncs: int) -> None:
        """The replica's resync count now: a new resync owes a restore."""
        if resyncs != self._resyncs_seen:
            self._resyncs_seen = resyncs
            self.owed = "resync"

    def hold(self, event: Event) -> bool:
        """Whether `event`'s command must wait for the owed restore (it is kept if so)."""
        if self.owed is None:
            return False
        self.held.append(event)
        return True

    def deliver(self, has_callback: bool) -> tuple[str | None, list[Event]]:
        """The replica caught up: why to restore now (None: no callback to call; remembered
        as missed) and the commands held, to fire after it."""
        why, self.owed = self.owed, None
        held, self.held = self.held, []
        if has_callback:
            self.missed = None
            return why, held
        self.missed = why
        return None, held

    def late(self) -> str | None:
        """A callback was set: the restore it missed, to deliver now (None: none)."""
        if self.owed is not None:
            return None  # one is owed anyway: it will be delivered when caught up
        why, self.missed = self.missed, None
        return why
