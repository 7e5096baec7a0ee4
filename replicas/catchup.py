"""One catch-up round of a node: which fetches to keep in flight. No I/O.

A node that is behind asks for the events after its head (`ReplicaCore.next_fetch`) and, while
the replies say there is more, keeps further chunks in flight so the controller reads ahead
while the node applies. `CatchUp` decides which: the node's shell sends what `asks` returns,
hands every reply to `on_reply` (before giving it to the replica core) and says which ask the
next reply answers (`answering`).

The controller cuts a reply at ``protocol.MAX_FRAME_BYTES``, so a reply may hold fewer events
than asked for: the chunks asked for next are then as many events as that cut reply held (big
events: every chunk is one reply's worth, and none leaves a hole). A hole left all the same
(event sizes vary) ends the round once the chunks in flight landed; the next round fetches
it. Chunks grow back while replies stay small.
"""

from __future__ import annotations

import msgspec

from replicas.messages import Events, Fetch, Reply
from replicas.protocol import MAX_FRAME_BYTES


class CatchUp:
    """The plan of one round that began with `first`."""

    def __init__(self, first: Fetch, fetch_limit: int, hole_end: int | None) -> None:
        self.first = first
        self.fetch_limit = fetch_limit
        #: when events after a hole are buffered, the hole is what this round fetches
        self.hole_end = hole_end
        self.span = fetch_limit
        #: ``(after, limit)`` of the request the next reply answers (None: a snapshot chunk)
        self.asked: tuple[int, int] | None = None
        if first.limit is not None and first.snapshot is None:
            self.asked = (first.after, first.limit)
        #: where the chunks asked for so far end
        self.asked_end = -1 if self.asked is None else sum(self.asked)
        #: a reply was cut short behind chunks already in flight: ask for nothing more
        self.cut = False

    def on_reply(self, reply: Reply, size: int, free: int) -> list[Fetch]:
        """The reply to `asked` came (`size` bytes): the fetches to send now, at most
        `free` of them."""
        asked = self.asked
        if not isinstance(reply, Events) or reply.last is None or asked is None:
            return []
        last, head = reply.last, reply.head
        q_after, q_limit = asked
        q_end = q_after + q_limit
        if last < min(head, q_end):  # cut by bytes
            self.span = max(1, last - q_after)
            if self.asked_end > q_end:
                self.cut = True  # the chunks in flight start past a hole
            else:
                self.asked_end = last
        elif size * 2 * 6 <= MAX_FRAME_BYTES:
            self.span = min(self.fetch_limit, 2 * self.span)  # far from the cut: grow back
        goal = head if self.hole_end is None else min(head, self.hole_end)
        asks: list[Fetch] = []
        while len(asks) < free and not self.cut and self.asked_end < goal:
            limit = min(self.fetch_limit, self.span, goal - self.asked_end)
            asks.append(msgspec.structs.replace(self.first, after=self.asked_end, limit=limit))
            self.asked_end += limit
        return asks

    def answering(self, ask: Fetch) -> None:
        """The next reply to come is the answer to `ask`."""
        self.asked = (ask.after, ask.limit or 0)
