"""A hot-standby rig for `cuelog bench ha` and the tests: a real etcd (one member or three) on
loopback, controller candidates in their own processes (``cuelog controller --ha``), a writer
node that submits numbered ops and remembers which were acknowledged, and a TCP proxy that
can cut connections (a partition).

etcd is Debian's ``etcd-server`` (`etcd_binary` finds it). Every wait is on a condition with a
deadline.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eventlog import ActionType, EventLog, Operation, OperationType
from replicas.client import ControllerClient, ControllerUnreachable
from replicas.election import Election
from replicas.node import NodeReplica
from replicas.outbox import OutboxFull

_tick = threading.Event()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def etcd_binary() -> str | None:
    """Debian's etcd (``etcd-server``), or None."""
    return shutil.which("etcd")


class WaitTimeout(AssertionError):
    """A wait that ran out (an `AssertionError`, so a test fails on it as on a check)."""


def wait_for(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll `check` until it is true; `WaitTimeout` saying what after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what}")
        _tick.wait(0.01)


class Proc:
    """A ``cuelog`` subcommand in its own process, logging to a file."""

    def __init__(
        self,
        folder: Path,
        name: str,
        args: list[str],
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.logfile = folder / f"{name}.log"
        with open(self.logfile, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tools.cli", *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                preexec_fn=preexec_fn,
            )

    def log_text(self) -> str:
        return self.logfile.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode if self.proc.returncode is not None else -1


def etcd_answers(endpoint: str) -> bool:
    async def ask() -> bool:
        try:
            async with Election(endpoint, "probe", ttl=2) as probe:
                await probe.leader()
            return True
        except Exception:
            return False

    return asyncio.run(ask())


class Etcd:
    """An etcd cluster of `size` members on loopback (each member a process of its own)."""

    def __init__(self, folder: Path, size: int = 1, binary: str | None = None) -> None:
        found = binary or etcd_binary()
        if found is None:
            raise FileNotFoundError("etcd is not installed (apt-get install etcd-server)")
        self.binary = found
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.names = [f"e{i}" for i in range(size)]
        self.client = {name: free_port() for name in self.names}
        self.peer = {name: free_port() for name in self.names}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.initial = ",".join(f"{n}=http://127.0.0.1:{self.peer[n]}" for n in self.names)
        for name in self.names:
            self.start(name)
        wait_for("etcd to answer", lambda: etcd_answers(self.endpoints), 60)

    @property
    def endpoints(self) -> str:
        return ",".join(self.endpoint(name) for name in self.names)

    def endpoint(self, name: str) -> str:
        return f"127.0.0.1:{self.client[name]}"

    def start(self, name: str) -> None:
        with open(self.folder / f"etcd-{name}.log", "ab") as out:
            self.procs[name] = subprocess.Popen(
                [
                    self.binary,
                    f"--name={name}",
                    f"--data-dir={self.folder / ('etcd-' + name)}",
                    f"--listen-client-urls=http://127.0.0.1:{self.client[name]}",
                    f"--advertise-client-urls=http://127.0.0.1:{self.client[name]}",
                    f"--listen-peer-urls=http://127.0.0.1:{self.peer[name]}",
                    f"--initial-advertise-peer-urls=http://127.0.0.1:{self.peer[name]}",
                    f"--initial-cluster={self.initial}",
                    "--initial-cluster-state=new",
                    "--initial-cluster-token=cuelog-test",
                    "--heartbeat-interval=50",
                    "--election-timeout=500",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.kill()
        proc.wait(10)

    def close(self) -> None:
        for name in list(self.procs):
            self.kill(name)


class Candidates:
    """``cuelog controller --ha`` processes, each with its own file and ipc address."""

    def __init__(self, folder: Path, etcd: str, names: list[str], ttl: int = 2) -> None:
        self.folder = folder
        self.etcd = etcd
        self.ttl = ttl
        self.names = names
        self.address = {name: f"ipc://{folder}/{name}.ipc" for name in names}
        self.procs: dict[str, Proc] = {}
        self.etcd_of: dict[str, str] = {}

    @property
    def addresses(self) -> str:
        return ",".join(self.address[name] for name in self.names)

    def db(self, name: str) -> Path:
        return self.folder / f"{name}.db"

    def start(self, name: str, *extra: str, etcd: str | None = None) -> Proc:
        args = [
            "controller",
            "--ha",
            etcd or self.etcd_of.get(name, self.etcd),
            "--name",
            name,
            "--db",
            str(self.db(name)),
            "--listen",
            self.address[name],
            "--ws",
            "off",
            "--ha-ttl",
            str(self.ttl),
            *extra,
        ]
        self.procs[name] = Proc(self.folder, f"ctl-{name}", args)
        return self.procs[name]

    def kill9(self, name: str) -> None:
        self.procs[name].kill9()

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.stop()

    def log(self, name: str) -> str:
        return self.procs[name].log_text()

    def leader(self) -> tuple[str, int] | None:
        """Who etcd says leads (asking each member in turn: one may be down)."""

        async def ask(endpoint: str) -> tuple[str, int] | None:
            async with Election(endpoint, "probe") as probe:
                return await probe.leader()

        for endpoint in self.etcd.split(","):
            try:
                return asyncio.run(ask(endpoint))
            except Exception:
                continue
        return None

    def status(self, name: str) -> dict[str, Any] | None:
        try:
            with ControllerClient(self.address[name], timeout=1.0) as client:
                return client.status()
        except ControllerUnreachable:
            return None

    def wait_leader(self, timeout: float = 20.0, other_than: str | None = None) -> str:
        found: list[str] = []

        def check() -> bool:
            lead = self.leader()
            if lead is None or lead[0] == other_than:
                return False
            st = self.status(lead[0])
            if st is None or not (st.get("cluster") or {}).get("leading"):
                return False
            found[:] = [lead[0]]
            return True

        wait_for(f"a leader other than {other_than}", check, timeout)
        return found[0]

    def wait_synchronous(self, leader: str, timeout: float = 20.0) -> str:
        """Until the leader's acknowledgements wait for a standby holding its whole log."""
        found: list[str] = []

        def check() -> bool:
            st = self.status(leader)
            cluster = (st or {}).get("cluster") or {}
            sync = cluster.get("sync_standby")
            if not (st and cluster.get("synchronous") and sync):
                return False
            found[:] = [sync]
            return bool(cluster["standbys"][sync]["lag"] == 0)

        wait_for(f"{leader} to have a synchronous standby", check, timeout)
        return found[0]


class Writer:
    """A node (in this process) submitting numbered ops; remembers the acknowledged ones."""

    def __init__(
        self, controllers: str, node_id: str = "w", depth: int = 64, pace: float = 0.002
    ) -> None:
        self.node = NodeReplica(node_id, controllers, request_timeout=1.0)
        self.node_id = node_id
        self.depth = depth
        self.pace = pace
        self.acked: set[str] = set()
        #: (monotonic time acknowledged, seconds from submit to acknowledgement) of each
        self.acks: list[tuple[float, float]] = []
        self.sent = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._inflight = threading.Semaphore(depth)
        self._loop_thread = threading.Thread(
            target=lambda: asyncio.run(self.node.run()), daemon=True
        )
        self._submit_thread = threading.Thread(target=self._submit, daemon=True)

    def __enter__(self) -> Writer:
        self._loop_thread.start()
        assert self.node.started.wait(10)
        self._submit_thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._submit_thread.join(10)
        self.node.stop()
        self._loop_thread.join(10)

    def pause(self) -> None:
        self._stop.set()
        self._submit_thread.join(10)

    def acked_count(self) -> int:
        with self._lock:
            return len(self.acked)

    def _submit(self) -> None:
        while not self._stop.is_set():
            if not self._inflight.acquire(timeout=0.1):
                continue
            marker = f"{self.node_id}-{self.sent}"
            op = Operation(
                OperationType.STATUS,
                ActionType.UPDATE,
                self.node_id,
                "nextcue",
                {"nextcue": marker},
            )
            try:
                future = self.node.submit(op)
            except OutboxFull:
                self._inflight.release()
                self._stop.wait(0.05)
                continue
            self.sent += 1
            future.add_done_callback(functools.partial(self._done, marker, time.monotonic()))
            self._stop.wait(self.pace)

    def _done(self, marker: str, sent: float, future: concurrent.futures.Future[int]) -> None:
        now = time.monotonic()
        self._inflight.release()
        if not future.cancelled() and future.exception() is None:
            with self._lock:
                self.acked.add(marker)
                self.acks.append((now, now - sent))

    def first_ack_after(self, moment: float) -> float | None:
        """When the first acknowledgement after `moment` (monotonic) came, or None."""
        with self._lock:
            later = [at for at, _ in self.acks if at > moment]
        return min(later) if later else None

    def latencies_since(self, moment: float) -> list[float]:
        with self._lock:
            return [took for at, took in self.acks if at > moment]


def markers(db: Path, node_id: str = "w") -> list[str]:
    """Every writer marker in a log file, in log order (a marker twice is a defect)."""
    with EventLog.open(db, readonly=True) as elog:
        return [
            str(e.op.data["nextcue"])
            for e in elog.iter_events(0)
            if e.op.target == "nextcue" and e.op.sender == node_id and e.op.data
        ]


def free_pair() -> int:
    """A port P with P + 1 free too (a tcp controller's events go on the next port)."""
    for _ in range(100):
        port = free_port()
        try:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise AssertionError("no two free consecutive ports")


class Proxy:
    """A TCP proxy on loopback that can cut every connection through it (a partition) and
    let them through again (healed); with `record`, every byte clients send through it is
    appended there too."""

    def __init__(
        self, target: int, port: int | None = None, record: bytearray | None = None
    ) -> None:
        self.target = target
        self.record = record
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", port or 0))
        self.port: int = self.server.getsockname()[1]
        self.server.listen(64)
        self.open = True
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            if not self.open:
                conn.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), 2)
            except OSError:
                conn.close()
                continue
            with self._lock:
                self._conns += [conn, upstream]
            for a, b, record in ((conn, upstream, self.record), (upstream, conn, None)):
                threading.Thread(target=self._pump, args=(a, b, record), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, record: bytearray | None) -> None:
        try:
            while data := src.recv(65536):
                if record is not None:
                    record.extend(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.open = False
        with self._lock:
            conns, self._conns = self._conns, []
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def heal(self) -> None:
        self.open = True

    def close(self) -> None:
        self.cut()
        self.server.close()
