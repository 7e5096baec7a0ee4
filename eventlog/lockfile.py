"""One writer per log file: an exclusive `flock` on ``PATH.lock``, held while the log is open.

`flock` belongs to the open file, and the kernel drops it when the process dies, however it
dies (``kill -9`` included): a crashed writer never leaves a stale lock behind. The lock file
also says who holds it (pid, host, what the process is, since when), so a second writer is
refused with a line that names the first. A sidecar file, not the log itself: SQLite's own
POSIX locks on the log are released by *any* close of the log file in the process, so cuelog
never opens the log file behind SQLite's back.

The lock is on the *path*: a node that sets its replica file aside and starts a fresh one at
the same path keeps it throughout.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
from collections.abc import Mapping
from typing import Any

from eventlog.errors import LogFileError

#: how many times a lock file replaced under our feet is tried again
_ATTEMPTS = 20


def describe(holder: Mapping[str, Any]) -> str:
    """``pid 123 on host rig-1 (cuelog controller, listening on tcp://...) since 21:40:02``."""
    if not holder:
        return "another process (it left no details)"
    parts = [f"pid {holder.get('pid', '?')}"]
    host = holder.get("host")
    if host:
        here = socket.gethostname()
        parts.append(f"on host {host}" + ("" if host == here else f" (this is {here})"))
    what = str(holder.get("what") or "")
    if holder.get("listen"):
        what += f"{', ' if what else ''}listening on {holder['listen']}"
    if what:
        parts.append(f"({what})")
    since = holder.get("since")
    if isinstance(since, int | float):
        parts.append("since " + dt.datetime.fromtimestamp(since).strftime("%Y-%m-%d %H:%M:%S"))
    return " ".join(parts)


class WriterLock:
    """The exclusive lock of one log path. `acquire` it; `release` it when the log closes."""

    def __init__(self, fd: int, lock_path: str) -> None:
        self._fd: int | None = fd
        self.lock_path = lock_path

    @classmethod
    def acquire(cls, path: str, owner: Mapping[str, Any] | None = None) -> WriterLock:
        """Take the lock of the log at `path`, or raise `LogFileError` naming its holder."""
        lock_path = path + ".lock"
        for _ in range(_ATTEMPTS):
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise LogFileError(
                    path, f"cannot create its lock file {lock_path}: {exc.strerror}"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise LogFileError(
                    path,
                    f"is in use by {describe(holder)}: one writer per log file; stop that "
                    "process first, or give this one a file of its own",
                ) from None
            except OSError as exc:
                os.close(fd)
                raise LogFileError(path, f"cannot lock {lock_path}: {exc.strerror}") from None
            # the holder before us may have removed the file between our open and our lock:
            # then we locked a file nobody else will ever look at; start again
            if _same_file(fd, lock_path):
                lock = cls(fd, lock_path)
                lock.describe_self(owner or {})
                return lock
            os.close(fd)
        raise LogFileError(path, f"its lock file {lock_path} keeps being replaced")

    def describe_self(self, owner: Mapping[str, Any]) -> None:
        """Write who holds the lock into the lock file (best effort: a full disk is no reason
        to refuse the lock)."""
        if self._fd is None:
            return
        info = {"pid": os.getpid(), "host": socket.gethostname(), **owner}
        info.setdefault("since", round(_now(), 3))
        data = json.dumps(info).encode()
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, data, 0)
        except OSError:
            pass

    def release(self) -> None:
        """Remove the lock file (while still holding the lock) and drop the lock."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if _same_file(fd, self.lock_path):
                os.unlink(self.lock_path)
        except OSError:
            pass
        os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None


def _now() -> float:
    return dt.datetime.now().timestamp()


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        raw = os.pread(fd, 4096, 0)
        info = json.loads(raw.decode("utf-8", "replace")) if raw else {}
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _same_file(fd: int, path: str) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)
