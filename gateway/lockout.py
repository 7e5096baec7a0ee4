"""Passcode lockout: who has tried too many wrong passcodes, and until when. No I/O.

`MAX_BAD_PASSCODES` wrong passcodes in a row from one client key (`lock_key`: an IPv4
address, or an IPv6 /64) lock that key out for `LOCKOUT` seconds. At most `LOCKOUT_MEMORY`
keys are remembered: the oldest failures are forgotten first, locked keys never are, and
when that many keys are locked at once every further key is refused too (fail closed).
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from typing import Final

#: wrong passcodes from one key before it is locked out, and for how long (seconds)
MAX_BAD_PASSCODES: Final = 5
LOCKOUT: Final = 30.0
#: most client keys whose passcode failures are remembered
LOCKOUT_MEMORY: Final = 4096


def lock_key(host: str) -> str:
    """Whose passcode failures count together: an IPv4 address, or an IPv6 /64 (one host
    usually holds a whole /64, so counting single IPv6 addresses would be no lockout)."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class Lockout:
    """Wrong passcodes per key, and the keys locked until when."""

    def __init__(self) -> None:
        self._failures: OrderedDict[str, int] = OrderedDict()
        self._locked: dict[str, float] = {}

    def locked_until(self, key: str, now: float) -> float | None:
        """When `key` may try again, if it may not now."""
        for expired in [k for k, until in self._locked.items() if until <= now]:
            del self._locked[expired]
        until = self._locked.get(key, 0.0)
        if until <= now and len(self._locked) >= LOCKOUT_MEMORY:
            until = now + LOCKOUT  # too many locked keys to track: fail closed
        return until if until > now else None

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)

    def failed(self, key: str, now: float) -> bool:
        """Count a wrong passcode from `key`; True if that locked it out."""
        failures = self._failures.pop(key, 0) + 1
        if failures >= MAX_BAD_PASSCODES:
            self._locked[key] = now + LOCKOUT
            return True
        self._failures[key] = failures
        while len(self._failures) > LOCKOUT_MEMORY:
            self._failures.popitem(last=False)
        return False
