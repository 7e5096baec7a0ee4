"""A small blocking client for the controller's request channel (tools, demos, scripts).

It speaks the same protocol as a node (`replicas.protocol`) but keeps no replica: ``status``,
``state`` and ``submit`` with op ids so a retry after a timeout is safe. Before it submits as a
node it says ``hello`` as that node on its connection, with an op-id origin of its own
(``<node>/<unique>``): the controller takes submits only from the connection that did.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import pynng

from eventlog import CuelogError, Operation, loads, validate_operation
from eventlog.state import digest_bytes
from replicas import protocol
from replicas.messages import (
    Acks,
    Error,
    Hello,
    Message,
    Reply,
    State,
    StateChunk,
    StateRequest,
    Status,
    StatusRequest,
    Submit,
    Welcome,
    chunk_bytes,
    encode,
    parse_reply,
)
from replicas.protocol import Rule
from replicas.showkey import ShowKey, diagnose, secure


class ControllerUnreachable(CuelogError):
    """The controller did not answer in time."""


class ControllerClient:
    """Blocking requests to a controller. Use as a context manager; close() frees the socket."""

    def __init__(self, address: str, *, timeout: float = 2.0, key: ShowKey | None = None) -> None:
        protocol.check_address(address)
        self.address = address = secure(address, key)
        self._key = key
        self.timeout = timeout
        self._secret = uuid.uuid4().hex
        self._counter = 0
        #: the node this connection said hello as (submits are taken only as that node)
        self._session: str | None = None
        self._sock = pynng.Req0(
            recv_timeout=int(timeout * 1000),
            send_timeout=int(timeout * 1000),
            recv_max_size=protocol.NNG_MAX_BYTES,
            **({} if key is None else {"tls_config": key.client()}),
        )
        self._sock.dial(address, block=False)

    def __enter__(self) -> ControllerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def ask(self, msg: Message | dict[str, Any]) -> Reply:
        """Send one request; its reply, decoded and checked."""
        try:
            self._sock.send(encode(msg))
            raw = self._sock.recv()
        except pynng.Timeout:
            why = diagnose(self.address, self._key, min(self.timeout, 2.0))
            raise ControllerUnreachable(
                f"no answer from the controller at {self.address} within {self.timeout:g} s: "
                + (why or "is it running, and is the address right (--controller)?")
            ) from None
        return parse_reply(raw, protocol.NNG_MAX_BYTES)

    def request(self, msg: Message | dict[str, Any]) -> dict[str, Any]:
        """Like `ask`, with the reply as plain JSON values (for scripts)."""
        found: dict[str, Any] = msgspec.to_builtins(self.ask(msg))
        return found

    def status(self) -> dict[str, Any]:
        reply = self.ask(StatusRequest())
        if isinstance(reply, Status):
            return reply.plain()
        found: dict[str, Any] = msgspec.to_builtins(reply)
        return found

    def state(self, attempts: int = 5) -> dict[str, Any]:
        """``{"k": "state", "log", "seq", "digest", "state": {...}}``: the whole state at one seq.

        A state too big for one reply comes in chunks (like a snapshot's), asked for one after
        another and checked against the digest before it is decoded."""
        for _ in range(attempts):
            reply = self.ask(StateRequest())
            if isinstance(reply, State):
                data = bytearray(reply.state)
            elif isinstance(reply, StateChunk):
                data = bytearray(chunk_bytes(reply.size, reply.offset, reply.chunk))
                while len(data) < reply.size:
                    more = self.ask(StateRequest(reply.seq, len(data)))
                    if not isinstance(more, StateChunk):
                        break  # the controller moved on to a newer state: start over
                    if (more.offset, more.seq, more.size) != (len(data), reply.seq, reply.size):
                        raise CuelogError("the controller sent a state chunk out of order")
                    data += chunk_bytes(reply.size, len(data), more.chunk)
                if len(data) < reply.size:
                    continue
            else:
                raise CuelogError(f"the controller refused the state: {_why(reply)}")
            if digest_bytes(bytes(data)) != reply.digest:
                raise CuelogError(f"the state at seq {reply.seq} does not match its digest")
            return {
                "k": "state",
                "log": reply.log,
                "seq": reply.seq,
                "digest": reply.digest,
                "state": loads(data),
            }
        raise CuelogError("the state kept changing while it was being read; try again")

    def origin(self, node: str) -> str:
        """The op-id origin of this client's ops as `node` (its secret proves it)."""
        return protocol.origin_of(node, self._secret)

    def hello(self, node: str) -> None:
        """Say hello as `node` on this connection (done by `submit` when needed)."""
        reply = self.ask(Hello(node, self.origin(node), self._secret))
        if not isinstance(reply, Welcome):
            self._session = None
            raise CuelogError(f"the controller refused hello as {node}: {_why(reply)}")
        self._session = node

    def submit(
        self, ops: list[Operation], node: str = "operator", retries: int = 3
    ) -> list[dict[str, Any]]:
        """Append `ops` as `node` (every op's sender must be `node`); returns one result per
        op (``{"seq": n}`` or an error dict)."""
        wire = []
        for op in ops:
            self._counter += 1
            item = validate_operation(op).to_wire()
            item["op_id"] = [self.origin(node), self._counter]
            wire.append(item)
        msg = Submit(node, wire)
        for attempt in range(retries + 1):
            try:
                if self._session != node:
                    self.hello(node)
                reply = self.ask(msg)
            except ControllerUnreachable:
                if attempt == retries:
                    raise
                self._session = None  # a new connection may answer the retry
                continue
            if isinstance(reply, Acks):
                return reply.results
            if isinstance(reply, Error) and reply.rule == Rule.HELLO_FIRST and attempt < retries:
                self._session = None  # reconnected since the hello: say it again
                continue
            raise CuelogError(f"controller refused the submit: {_why(reply)}")
        raise ControllerUnreachable(self.address)


def _why(reply: Reply) -> str:
    return reply.error if isinstance(reply, Error) else f"it answered {type(reply).__name__}"
