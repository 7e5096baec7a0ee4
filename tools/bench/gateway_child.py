"""The entry point of a gateway bench child process (spawned by `tools.bench.gateway_procs`).

`child_main` runs one role of `ROLES` with its log in a file, and reports a failure to the
bench as an ``error`` message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from multiprocessing.connection import Connection
from typing import Any, Final

from tools.bench.common import Message, log
from tools.bench.gateway_baselines import role_echo, role_raw_ws
from tools.bench.gateway_link import Link
from tools.bench.gateway_roles import role_gateway, role_load, role_node

ROLES: Final[dict[str, Callable[[Message, Link], Coroutine[Any, Any, None]]]] = {
    "gateway": role_gateway,
    "raw_ws": role_raw_ws,
    "node": role_node,
    "load": role_load,
    "echo": role_echo,
}


def child_main(role: str, cfg: Message, conn: Connection, log_path: str) -> None:
    """Entry point of a bench child (spawned): run `role`; report a failure as a message."""
    logging.basicConfig(
        filename=log_path,
        level=logging.WARNING,
        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s",
    )
    link = Link(conn)
    try:
        asyncio.run(ROLES[role](cfg, link))
    except Exception as exc:
        log.exception("role %s failed", role)
        link.send(kind="error", id=None, error=f"{type(exc).__name__}: {exc}")
