"""Who is there: which process holds each node id, which connection holds each op-id origin,
and which nodes are alive. No sockets, no clock (times are passed in).

`Membership` is the controller core's table of nodes and sessions (`ControllerCore` is one).
Its rules:

- **One live process per node id** (`claim`). A second process (another ``inst``) is refused
  (rule ``id-in-use``) while the holder is online, beating and connected; it takes the id
  over once the holder's connection is gone for `RECLAIM_GRACE` or it has been silent for
  the node timeout. A new process of a node that had not left is a restart: the core records
  ``node_left``/``node_joined`` with reason ``restarted`` (`take_ops`).
- **One live connection per op-id origin** (`_origin_held`): an origin is proven at hello by
  its secret (`check_inst`), and a second connection proving it is refused while the first
  is live (an impostor, or a replayed hello).
- **A connection speaks only as its hello** (`session_of`): ``hello-first`` when it said
  none, ``not-yours`` when it said another node.
- **Liveness** (`tick`): a node silent for longer than the timeout has left; a controller
  that itself stalled forgives that time (`stalled`).
- Memory stays bounded: at most `MAX_NODES` nodes and `MAX_SESSIONS` sessions; idle sessions
  are dropped after `SESSION_IDLE`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Final

from eventlog import (
    CONTROLLER,
    NODE_JOINED,
    NODE_LEFT,
    ActionType,
    Operation,
    OperationType,
    Submission,
)
from eventlog.logctx import ComponentLog
from eventlog.operation import MAX_ORIGIN_LEN
from replicas import messages, protocol
from replicas.messages import Error
from replicas.protocol import ProtocolError, Rule

log = ComponentLog("cuelog.sequencer")

#: nodes tracked at once (offline ones are forgotten first)
MAX_NODES: Final = 1024
DEFAULT_NODE_TIMEOUT: Final = 3.0
#: seconds after a holder's connection closed during which only it may take its id back
RECLAIM_GRACE: Final = 1.5
#: sessions kept at most, and how long an idle one lives (a tool's connection: it says hello
#: again when told ``hello-first``)
MAX_SESSIONS: Final = 4096
SESSION_IDLE: Final = 120.0


@dataclass(slots=True)
class NodeInfo:
    node: str
    online: bool
    last_seen: float
    applied: int = 0
    digest: str = ""
    digest_match: bool | None = None
    #: whether the node's last beat was about this controller's log
    same_log: bool = True
    beats: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    #: the process that holds this id (its op-id origin), and the connection it uses
    instance: str = ""
    pipe: int | None = None
    #: another live process claimed this id and was refused (shown by status)
    conflict: str = ""
    #: when the holder's connection closed (monotonic): another process may take the id only
    #: `RECLAIM_GRACE` later, so a network blip does not hand it to whoever asks first
    released_at: float | None = None


@dataclass(slots=True)
class Session:
    """What one connection proved at ``hello``: the node it speaks as and its op-id origin."""

    node: str
    inst: str
    pipe: int
    #: the last request seen on this connection (monotonic clock)
    last_seen: float
    #: where its hello said the node resumes, and how it will catch up (tail, snapshot, none)
    after: int = 0
    catchup: str = "none"


def check_inst(node: str, inst: str, secret: object) -> str:
    """A hello's ``inst`` (the op-id origin its connection will use), proven by its ``secret``
    (`protocol.origin_of`): every event shows an origin, so an origin alone proves nothing."""
    if not (len(node) + 1 < len(inst) <= MAX_ORIGIN_LEN and inst.startswith(node + "/")):
        raise ProtocolError(
            f"'inst' must be '{node}/' and a unique part, at most {MAX_ORIGIN_LEN} characters"
        )
    if not isinstance(secret, str) or not 0 < len(secret) <= 256:
        raise ProtocolError("a hello with 'inst' proves it with its 'secret'", Rule.UNPROVEN)
    if protocol.origin_of(node, secret) != inst:
        raise ProtocolError(
            f"the secret does not prove origin {inst}: a process claims only its own origin",
            Rule.UNPROVEN,
        )
    return inst


def node_op(target: str, node: str, **story: Any) -> Submission:
    """``node_joined``/``node_left`` for `node`; `story` says why (``reason``: first, returned,
    restarted, silent), for how long it was away, and where it resumed (for `replay`)."""
    return Submission(
        Operation(
            OperationType.STATUS, ActionType.UPDATE, CONTROLLER, target, {"node": node, **story}
        )
    )


class Membership:
    """The node table and the sessions of one controller (see the module docstring)."""

    def __init__(self, node_timeout: float = DEFAULT_NODE_TIMEOUT) -> None:
        self.node_timeout = node_timeout
        self.nodes: dict[str, NodeInfo] = {}
        #: per open connection (NNG pipe id), the session its hello opened; and per op-id
        #: origin, the connection that holds it. Both shrink when connections close.
        self.sessions: dict[int, Session] = {}
        self._origin_pipe: dict[str, int] = {}
        #: connections closed lately (a hello handled after its connection closed opens no
        #: session); LRU-bounded
        self._closed: OrderedDict[int, None] = OrderedDict()
        #: ops to append that `take_ops` hands to the shell (restarts seen at hello)
        self._pending_ops: list[Submission] = []

    def claim(
        self,
        node: str,
        inst: str,
        mono: float,
        pipe: int | None,
        *,
        resumes: int = 0,
        catchup: str = "none",
        hello: bool = False,
    ) -> Error | None:
        """Whether the process `inst` (an op-id origin; "" for none) may speak as `node`:
        None if so, else the error reply. One live process per id: another process (another
        ``inst``) is refused while the holder is online, beating and connected; it takes the
        id over once the holder's connection is gone or it has been silent for the node
        timeout."""
        info = self.nodes.get(node)
        if not inst or info is None or not info.instance:
            return None
        if inst == info.instance:
            if pipe is not None and pipe not in self._closed:
                info.pipe, info.released_at = pipe, None
            return None
        holder_live = (info.pipe is not None and mono - info.last_seen <= self.node_timeout) or (
            info.pipe is None
            and info.released_at is not None
            and mono - info.released_at < RECLAIM_GRACE
        )
        if holder_live:
            if info.conflict != inst:
                info.conflict = inst
                log.error(
                    "a second process claims node id %s (%s) while %s holds it: refused; stop "
                    "one of them or give it another --id",
                    node,
                    inst,
                    info.instance,
                    node=node,
                    seq=info.applied,
                )
            return messages.error(
                f"node id {node} is in use by another live process ({info.instance}): "
                "stop it or pick another --id",
                Rule.ID_IN_USE,
            )
        log.info(
            "node %s is now held by process %s (was %s)",
            node,
            inst,
            info.instance,
            node=node,
            seq=info.applied,
        )
        if info.online and hello:
            # a new process of a node that had not left: a restart (it may have been away
            # for less than the timeout); the story is kept in the log, and it must re-arm
            away = round(max(0.0, mono - info.last_seen), 3)
            log.warning(
                "node %s restarted (away %.1f s), resuming from seq %d by %s",
                node,
                away,
                resumes,
                catchup,
                node=node,
                seq=resumes,
            )
            self._pending_ops.append(
                node_op(NODE_LEFT, node, reason="restarted", away_s=away, inst=info.instance)
            )
            self._pending_ops.append(
                node_op(
                    NODE_JOINED,
                    node,
                    reason="restarted",
                    away_s=away,
                    inst=inst,
                    resumed_from=resumes,
                    catchup=catchup,
                )
            )
        info.instance, info.conflict, info.released_at = inst, "", None
        info.pipe = None if pipe in self._closed else pipe
        info.last_seen = max(info.last_seen, mono)  # the new holder is live from now on
        return None

    def _origin_held(self, node: str, inst: str, pipe: int, mono: float) -> Error | None:
        """None if connection `pipe` may hold op-id origin `inst`, else the error reply: another
        live connection holds it (an impostor that read the origin from the log, or a replayed
        hello). A holder whose connection closed, or silent for the node timeout, gives it up."""
        holder = self._origin_pipe.get(inst)
        held = self.sessions.get(holder) if holder is not None else None
        if held is None or holder == pipe or mono - held.last_seen > self.node_timeout:
            return None
        log.error(
            "a connection claims origin %s of node %s while another live connection holds "
            "it: refused (an impostor, or a replayed hello)",
            inst,
            node,
            node=node,
        )
        return messages.error(
            f"origin {inst} is held by another live connection: a process says hello with "
            "its own origin once per connection",
            Rule.ORIGIN_IN_USE,
        )

    def take_ops(self) -> list[Submission]:
        """Ops the core decided to append outside `beat`/`tick` (a node's restart, recorded
        at its hello): the shell appends them."""
        ops, self._pending_ops = self._pending_ops, []
        return ops

    def _open_session(
        self, node: str, inst: str, pipe: int, mono: float, after: int = 0, catchup: str = "none"
    ) -> None:
        if pipe in self._closed:
            return  # its connection closed before its hello was handled: nothing to keep
        if len(self.sessions) >= MAX_SESSIONS:
            oldest = min(self.sessions.values(), key=lambda s: s.last_seen)
            self._drop_session(oldest)
        holder = self._origin_pipe.get(inst)
        if holder is not None and holder != pipe:
            self.sessions.pop(holder, None)  # it gave the origin up (`_origin_held`)
        old = self.sessions.get(pipe)
        if old is not None and old.inst != inst and self._origin_pipe.get(old.inst) == pipe:
            del self._origin_pipe[old.inst]
        self.sessions[pipe] = Session(node, inst, pipe, mono, after, catchup)
        self._origin_pipe[inst] = pipe

    def session_of(self, node: str, pipe: int | None, mono: float) -> Session | None:
        """The session a request from connection `pipe` on behalf of `node` runs in (None for
        callers in this process, `pipe` None). Raises `ProtocolError` (rule ``hello-first``
        or ``not-yours``) when that connection did not say hello as `node`."""
        if pipe is None:
            return None
        session = self.sessions.get(pipe)
        if session is None:
            raise ProtocolError(
                f"say hello (with 'inst') on this connection before speaking for {node}",
                Rule.HELLO_FIRST,
            )
        if session.node != node:
            raise ProtocolError(
                f"this connection said hello as {session.node}; it cannot speak for {node}",
                Rule.NOT_YOURS,
            )
        session.last_seen = mono
        return session

    def _hold(self, info: NodeInfo, inst: str, pipe: int | None) -> None:
        if inst and not info.instance:
            info.instance = inst
            info.pipe = None if pipe in self._closed else pipe

    def pipe_closed(self, pipe: int, mono: float | None = None) -> None:
        """A connection closed: a node that held its id through it holds it no longer (a
        process killed with -9 is replaced `RECLAIM_GRACE` later, not after the timeout)."""
        self._closed[pipe] = None
        while len(self._closed) > MAX_SESSIONS:
            self._closed.popitem(last=False)
        for info in self.nodes.values():
            if info.pipe == pipe:
                info.pipe = None
                info.released_at = mono
        session = self.sessions.get(pipe)
        if session is not None:
            self._drop_session(session)

    def _drop_session(self, session: Session) -> None:
        self.sessions.pop(session.pipe, None)
        if self._origin_pipe.get(session.inst) == session.pipe:
            del self._origin_pipe[session.inst]

    def stalled(self, gap: float, now: float) -> None:
        """The controller itself did not run for `gap` seconds (stopped, or its host was; the
        shell measures it on its own monotonic clock). Liveness judges a node only on time the
        controller was running: every node's silence is forgiven the gap. Logged once; nothing
        is appended and nothing is disarmed."""
        log.warning(
            "the controller did not run for %.1f s (stopped, or its host was): not counted "
            "against the nodes",
            gap,
            node=CONTROLLER,
        )
        for info in self.nodes.values():
            info.last_seen = min(info.last_seen + gap, now)
        for session in self.sessions.values():
            session.last_seen = min(session.last_seen + gap, now)

    def tick(self, now: float) -> list[Submission]:
        """Nodes silent for longer than the timeout have left: ops to append. ``now`` must be
        the clock `beat` got as ``mono`` (a monotonic one in the controller)."""
        ops: list[Submission] = []
        idle = max(SESSION_IDLE, 10 * self.node_timeout)
        for session in [s for s in self.sessions.values() if now - s.last_seen > idle]:
            self._drop_session(session)  # a connection silent this long says hello again
        for info in self.nodes.values():
            if info.online and now - info.last_seen > self.node_timeout:
                info.online = False
                ops.append(
                    node_op(
                        NODE_LEFT,
                        info.node,
                        reason="silent",
                        silent_s=round(now - info.last_seen, 3),
                        applied=info.applied,
                    )
                )
                log.warning(
                    "node %s left: silent for %.1f s",
                    info.node,
                    now - info.last_seen,
                    node=info.node,
                    seq=info.applied,
                )
        return ops

    def _forget_one(self) -> None:
        offline = [n for n, i in self.nodes.items() if not i.online]
        if offline:
            del self.nodes[min(offline, key=lambda n: self.nodes[n].last_seen)]
