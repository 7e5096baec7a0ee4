"""The show's time zone: recorded in a log when it is made, used to show its times.

A log records the zone of the controller that made it (an IANA name such as
``Europe/Madrid`` when the machine knows one, else a fixed offset such as ``UTC+01:00``), so a
post-mortem read on a laptop in another zone, or a copy sent by e-mail, still says "21:43" for
the moment the operator saw 21:43.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import time
import zoneinfo
from pathlib import Path

_OFFSET = re.compile(r"^UTC([+-])(\d\d):(\d\d)$")


def local_zone_name() -> str:
    """This machine's zone: $TZ, /etc/timezone or /etc/localtime's link if they name a zone
    Python knows, else the current UTC offset as ``UTC+HH:MM``."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    with contextlib.suppress(OSError):
        candidates.append(Path("/etc/timezone").read_text().strip())
    try:
        link = os.readlink("/etc/localtime")
        if "zoneinfo/" in link:
            candidates.append(link.split("zoneinfo/", 1)[1])
    except OSError:
        pass
    for name in candidates:
        if name and _known(name):
            return name
    offset = time.localtime().tm_gmtoff
    sign = "+" if offset >= 0 else "-"
    minutes = abs(offset) // 60
    return f"UTC{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def _known(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def readable(name: str | None) -> bool:
    """Whether this machine can show times in the zone `name` (`zone` falls back to UTC)."""
    if not name:
        return False
    return name == "UTC" or _OFFSET.match(name) is not None or _known(name)


def zone(name: str | None) -> dt.tzinfo:
    """The tzinfo for a recorded zone name (UTC for None or one this machine cannot read)."""
    if not name:
        return dt.UTC
    match = _OFFSET.match(name)
    if match:
        sign = 1 if match.group(1) == "+" else -1
        delta = dt.timedelta(hours=int(match.group(2)), minutes=int(match.group(3)))
        return dt.timezone(sign * delta, name)
    if name == "UTC":
        return dt.UTC
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return dt.UTC
