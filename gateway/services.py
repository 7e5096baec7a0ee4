"""Requests to the local services (nodeconf, hwdiscovery): NNG Req0 over IPC, JSON both ways.

Each service is dialled once, on first use, without waiting for it to listen. A request gets
one JSON object back: no reply in time raises `ServiceTimeout` (a `TimeoutError` and a
`CuelogError`) naming the service and its address; a reply that is not a JSON object raises
`ServiceError`. A request never returns None. `Services.request` runs on the comms loop;
``ControllerCommunications`` makes it callable from any other thread.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Final

import pynng

from eventlog import CuelogError
from eventlog.logctx import ComponentLog
from gateway import nngjson
from gateway.nngjson import MAX_JSON_BYTES
from replicas.nngio import guarded

log = ComponentLog("cuelog.compat")

NODECONF_ADDRESS: Final = "ipc:///tmp/nodeconf.ipc"
HWDISCOVERY_ADDRESS: Final = "ipc:///tmp/hwdiscovery.ipc"


class ServiceError(CuelogError):
    """A local service (nodeconf, hwdiscovery) answered with something unusable."""


class ServiceTimeout(ServiceError, TimeoutError):
    """A local service did not answer in time."""


def encode_request(service: str, message: Any) -> bytes:
    """`message` as a request's bytes. Raises ValueError if it is not JSON."""
    try:
        return nngjson.dumps(message)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the {service} request is not JSON: {exc}") from None


def decode_reply(service: str, address: str, raw: bytes) -> dict[str, Any]:
    """A service's reply -> its JSON object. Raises `ServiceError` saying what is wrong."""
    try:
        reply = nngjson.loads(raw)
    except ValueError as exc:
        raise ServiceError(
            f"{service} at {address} replied with something not JSON: {exc}"
        ) from None
    if not isinstance(reply, dict):
        raise ServiceError(
            f"{service} at {address} replied with a {type(reply).__name__}, not an object"
        )
    return reply


class Services:
    """One Req0 socket per service, dialled on first use."""

    def __init__(self, node: str) -> None:
        self._sockets: dict[str, Any] = {}
        self.log = log.for_node(node)

    async def request(
        self, service: str, address: str, data: bytes, wait: float | None
    ) -> dict[str, Any]:
        """Send `data` to `service` at `address`; its reply within `wait` seconds (None: no
        limit). Raises `ServiceTimeout` or `ServiceError`."""
        sock = self._sockets.get(service)
        if sock is None:
            sock = pynng.Req0(recv_max_size=MAX_JSON_BYTES)
            sock.dial(address, block=False)
            self._sockets[service] = sock
            self.log.info(
                "dialing %s at %s (requests time out when it does not answer)", service, address
            )
        ctx = sock.new_context()
        try:
            async with asyncio.timeout(wait):
                await guarded(ctx.asend(data))
                raw = await guarded(ctx.arecv())
        except TimeoutError:
            raise ServiceTimeout(
                f"no reply from {service} at {address} within {wait:g} s (is {service} running?)"
            ) from None
        except pynng.NNGException as exc:
            raise ServiceError(f"{service} at {address}: {exc}") from None
        finally:
            with contextlib.suppress(pynng.NNGException):
                ctx.close()
        return decode_reply(service, address, raw)

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()
