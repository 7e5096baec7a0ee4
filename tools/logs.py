"""One logging setup for every cuelog command.

Every line carries the node id and, where the message is about an event, its seq:

    08:41:02.113 INFO  node=ctl     seq=1042  cuelog.sequencer: committed 17 events

Library code logs through ``eventlog.logctx.ComponentLog`` (node id per component, ``seq=`` per
line); lines without them show the
process's own node id and ``-``.
"""

from __future__ import annotations

import logging
import sys
from typing import Final

LEVELS: Final = ("debug", "info", "warning", "error")


class _Defaults(logging.Filter):
    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "node"):
            record.node = self.node
        if not hasattr(record, "seq"):
            record.seq = "-"
        return True


def configure(level: str = "info", node: str = "-", stream: object = None) -> None:
    """Install the cuelog log format on the root logger (idempotent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_cuelog", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler._cuelog = True  # type: ignore[attr-defined]
    handler.addFilter(_Defaults(node))
    handler.setFormatter(
        logging.Formatter(
            "%(asctime)s.%(msecs)03d %(levelname)-5s node=%(node)-8s seq=%(seq)-7s "
            "%(name)s: %(message)s",
            datefmt="%H:%M:%S",
        )
    )
    root.addHandler(handler)
    root.setLevel(level.upper())
    # websockets logs every connection and HTTP request at INFO; the gateway says what matters
    logging.getLogger("websockets").setLevel("DEBUG" if level == "debug" else "WARNING")
