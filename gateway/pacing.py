"""Coalescing: which changes a client gets at once and which wait. Values in, no I/O.

Cue progress (a cue status of 2-99) and mixer volumes are paced per address and client: at
most one message per `COALESCE_INTERVAL` seconds, the latest value winning (a fader drag or
a running cue would otherwise send hundreds a second). Every other change goes out at once,
and also cancels a value still held for its address (the newer value wins).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from gateway.view import CUE, MIXER, Value

#: progress and fader updates go to a client at most this often per address (seconds)
COALESCE_INTERVAL: Final = 0.25
#: addresses whose last send is remembered (a coalesced value may follow on them)
_PACED: Final = (CUE, MIXER)


def coalesced(address: str, value: Value) -> bool:
    """Progress (2-99) and mixer volumes may be coalesced; every other change may not."""
    if address.startswith(CUE):
        return isinstance(value, int) and 2 <= value <= 99
    return address.startswith(MIXER)


@dataclass(slots=True)
class Pacer:
    """One client's coalescing: values held back, and when each address was last sent."""

    held: dict[str, Value] = field(default_factory=dict)
    last_sent: dict[str, float] = field(default_factory=dict)

    def offer(self, address: str, value: Value, now: float) -> bool:
        """A change for this client: True to send it now, False if it is held back."""
        if coalesced(address, value):
            last = self.last_sent.get(address)
            if last is not None and now - last < COALESCE_INTERVAL:
                self.held[address] = value
                return False
            self.last_sent[address] = now
            return True
        self.held.pop(address, None)
        if address.startswith(_PACED):
            self.last_sent[address] = now
        return True

    def due(self, now: float) -> list[tuple[str, Value]]:
        """The held values whose interval has passed, released (sent as of `now`)."""
        ready = [
            a for a in self.held if now - self.last_sent.get(a, 0.0) >= COALESCE_INTERVAL - 1e-9
        ]
        for address in ready:
            self.last_sent[address] = now
        return [(a, self.held.pop(a)) for a in ready]

    def next_due(self) -> float | None:
        """The earliest time a held value is due, if any."""
        return min(
            (self.last_sent.get(a, 0.0) + COALESCE_INTERVAL for a in self.held), default=None
        )
