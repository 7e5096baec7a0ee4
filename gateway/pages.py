"""The gateway's HTTP side: which request gets which answer, on the UIs' own port. No I/O.

- A WebSocket upgrade on ``/`` or ``/realtime`` goes on to the UI protocol (None), unless the
  gateway is not ready or already serves `MAX_CLIENTS` clients (503); on any other path, 404.
  Its query may say where the client is (``?since=<seq>&log=<log_id>``: `resume_point`).
- ``GET /``: the status page (``gateway/static/status.html``).
- ``GET /state``: the state at one seq as JSON ``{log_id, seq, digest, state}``.
- ``GET /cluster``: the source's ``status()`` as JSON (503 if it cannot say).
- A ``private`` gateway answers those two 403 unless the client may control or gives
  ``?passcode=``. Anything else is a 404.

`StatusPages` makes the responses; the shell (`gateway.server`) hands it each request.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from eventlog import CuelogError, digest
from gateway.session import GatewayCore, Policy

WS_PATHS: Final = frozenset({"/", "/realtime"})
#: most concurrent clients; more are refused with HTTP 503 (well under the usual 1024 open
#: files, so nodes can always connect)
MAX_CLIENTS: Final = 256
#: GET /state is served from a copy at most this old (seconds) while the state changes
STATE_CACHE: Final = 0.1

_REASONS: Final = {
    200: "OK",
    204: "No Content",
    403: "Forbidden",
    404: "Not Found",
    503: "Service Unavailable",
}
_TEXT: Final = "text/plain"


def resume_point(path: str) -> tuple[int | None, str | None]:
    """``?since=<seq>&log=<log_id>`` of a WebSocket URL -> (seq, log id); a bad seq is None."""
    query = parse_qs(urlsplit(path).query)
    since = query.get("since", [None])[0]
    if since is None or not since.isascii() or not since.isdigit() or len(since) > 18:
        return None, query.get("log", [None])[0]
    return int(since), query.get("log", [None])[0]


def response(status: int, body: bytes, content_type: str = _TEXT) -> Response:
    headers = Headers()
    headers["Content-Type"] = content_type
    headers["Content-Length"] = str(len(body))
    headers["Cache-Control"] = "no-store"
    headers["Connection"] = "close"
    return Response(status, _REASONS.get(status, "OK"), headers, body)


def _shared(answer: Response) -> Response:
    """Readable by a status page served by another candidate's gateway (a hot standby's
    page polls whichever leads); the private rule above still applies."""
    answer.headers["Access-Control-Allow-Origin"] = "*"
    return answer


def _status_page() -> bytes:
    return importlib.resources.files("gateway").joinpath("static/status.html").read_bytes()


class StatusPages:
    """The HTTP answers of one gateway; ``/state`` is cached (see `state_json`)."""

    def __init__(self, policy: Policy, status: Callable[[], dict[str, Any]]) -> None:
        self.policy = policy
        self._status = status
        self._state_cache: tuple[int, float, bytes] | None = None

    def respond(
        self, request: Request, host: str, core: GatewayCore | None, clients: int, now: float
    ) -> Response | None:
        """The answer to `request` from `host`; None lets a WebSocket upgrade go on."""
        url = urlsplit(request.path)
        path = url.path
        if "websocket" in request.headers.get("Upgrade", "").lower():
            if path not in WS_PATHS:
                return response(404, b"no WebSocket here: use / or /realtime\n")
            if core is None or clients >= MAX_CLIENTS:
                return response(503, b"the gateway is full or not ready\n")
            return None
        if path == "/":
            return response(200, _status_page(), "text/html; charset=utf-8")
        if path in ("/state", "/cluster"):
            given = parse_qs(url.query).get("passcode", [""])[0]
            if not self.policy.may_read(host, given):
                return response(
                    403,
                    b"this gateway is private: add ?passcode=... or connect from an allowed "
                    b"network\n",
                )
        if path == "/state":
            return _shared(response(200, self.state_json(core, now), "application/json"))
        if path == "/cluster":
            try:
                body = orjson.dumps(self._status())
            except CuelogError as exc:
                return _shared(response(503, f"{exc}\n".encode()))
            return _shared(response(200, body, "application/json"))
        if path == "/favicon.ico":
            return response(204, b"")
        return response(404, b"not found: try /, /state, /cluster or ws://.../realtime\n")

    def state_json(self, core: GatewayCore | None, now: float) -> bytes:
        """``GET /state``: the state at one seq. Cached per seq, and for `STATE_CACHE` seconds
        while it changes (encoding a big show costs milliseconds on the loop)."""
        if core is None:
            return b"{}"
        state = core.view.state
        cached = self._state_cache
        if cached is not None and (cached[0] == state.seq or now - cached[1] < STATE_CACHE):
            return cached[2]
        body = orjson.dumps(
            {
                "log_id": core.log_id,
                "seq": state.seq,
                "digest": digest(state),
                "state": state.to_dict(),
            }
        )
        self._state_cache = (state.seq, now, body)
        return body
