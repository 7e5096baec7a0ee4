"""One logger per component, stamping every line with its node id and, where given, a seq.

    log = ComponentLog("cuelog.node")            # module level: lines say node=-
    self.log = log.for_node("node-a")            # in the component: lines say node=node-a
    self.log.info("firing %s", name, seq=42)     # ... and seq=42 on this line

``tools/logs.py`` formats the two fields; a line with neither shows the process's own node id
and ``-`` (that filter runs at the handler, so plain ``logging`` calls still work).
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any


class ComponentLog(logging.LoggerAdapter[logging.Logger]):
    """A ``LoggerAdapter`` that carries a node id and takes ``seq=`` on any call."""

    def __init__(self, name: str, node: str | None = None) -> None:
        super().__init__(logging.getLogger(name), {} if node is None else {"node": node})

    def for_node(self, node: str) -> ComponentLog:
        """The same logger, speaking for ``node``."""
        return ComponentLog(self.logger.name, node)

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        fields = dict(self.extra or {})
        seq = kwargs.pop("seq", None)
        if seq is not None:
            fields["seq"] = seq
        node = kwargs.pop("node", None)
        if node is not None:
            fields["node"] = node
        if fields:
            given = kwargs.get("extra")
            kwargs["extra"] = {**fields, **given} if given else fields
        return msg, kwargs
