"""The entry point of a replication bench child process: ``child_main(ROLE, CONFIG_JSON)``.

`tools.bench.replication_procs.Children` starts ``python -c`` with this; it runs one role
(`ROLES`) and reports a failure to the bench as an ``error`` message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from eventlog import loads
from tools.bench.common import Message, log
from tools.bench.replication_baselines import (
    role_bus_hub,
    role_bus_node,
    role_raw_hub,
    role_raw_node,
)
from tools.bench.replication_procs import Link
from tools.bench.replication_roles import role_catchup, role_controller, role_node

ROLES: Final[dict[str, Callable[[Message, Link], None]]] = {
    "controller": role_controller,
    "node": role_node,
    "catchup": role_catchup,
    "bus_hub": role_bus_hub,
    "bus_node": role_bus_node,
    "raw_hub": role_raw_hub,
    "raw_node": role_raw_node,
}


def child_main(argv: list[str]) -> int:
    """Run ``ROLE CONFIG_JSON`` (its log on stderr); report a failure as a message."""
    role, raw = argv
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"
    )
    link = Link()
    try:
        ROLES[role](loads(raw), link)
    except Exception as exc:
        log.exception("role %s failed", role)
        link.send("error", error=f"{type(exc).__name__}: {exc}")
        return 1
    return 0
