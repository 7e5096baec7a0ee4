"""A stop means stop (issue 7, item 15): `cuelog demo` stopped by SIGTERM, SIGINT or SIGHUP
stops its controller and both nodes and leaves no process behind; a child that dies is
noticed and reported; `cuelog controller` and `cuelog node` end cleanly on SIGHUP too.

Real processes. The demos run side by side (their show takes ~10 s), each on ports of its own.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.cluster import Proc, ipc_address, wait_for

RUNNING = "[demo] cluster running"


def alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie has ended: it only waits to be reaped)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text()
        found += [int(child) for child in text.split()]
    return found


class Ports:
    """Free loopback ports below Linux's ephemeral range (32768-60999), never handed out twice:
    a port from the ephemeral range may be given to some outgoing connection (a node dialing,
    a client) before the demo's controller binds it."""

    def __init__(self) -> None:
        self.taken: set[int] = set()
        self.rng = random.Random()

    def take(self, count: int) -> int:
        """The first of `count` consecutive free ports."""
        for _ in range(200):
            first = self.rng.randrange(20_000, 32_000 - count)
            span = set(range(first, first + count))
            if span & self.taken or not all(_free(port) for port in span):
                continue
            self.taken |= span
            return first
        raise AssertionError("no free loopback ports")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Demo:
    """`cuelog demo --duration -1` as a real process; its output collected line by line."""

    def __init__(self, folder: Path, ports: Ports) -> None:
        self.folder = folder
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tools.cli",
                "demo",
                "--duration",
                "-1",
                "--dir",
                str(folder),
                "--port",
                str(ports.take(2)),
                "--ws",
                f"127.0.0.1:{ports.take(1)}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.kids: list[int] = []

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_running(self, marker: str = RUNNING) -> None:
        wait_for(
            f"the demo in {self.folder} to say {marker!r}",
            lambda: (
                any(line.startswith(marker) for line in self.lines) or self.proc.poll() is not None
            ),
            90,
        )
        assert self.proc.poll() is None, self.output()
        self.kids = children(self.proc.pid)
        assert len(self.kids) == 3, (self.kids, self.output())  # controller, node-a, node-b

    def finish(self, timeout: float = 30) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def kill_all(self) -> None:
        """Whatever happened, leave nothing running (before the fix, the children stay), also
        when the demo failed before its children were counted."""
        try:
            living = children(self.proc.pid)
        except OSError:  # it is gone already
            living = []
        for pid in [self.proc.pid, *self.kids, *living]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)


@contextmanager
def demos(tmp_path: Path, names: list[str]) -> Iterator[dict[str, Demo]]:
    """Demos started side by side (on ports of their own); all killed at the end."""
    started: dict[str, Demo] = {}
    ports = Ports()
    try:
        for name in names:
            started[name] = Demo(tmp_path / name, ports)
        yield started
    finally:
        for demo in started.values():
            demo.kill_all()


def test_demo_stops_its_cluster_on_every_stop_signal_and_reports_a_dead_child(
    tmp_path: Path,
) -> None:
    signals = {"term": signal.SIGTERM, "int": signal.SIGINT, "hup": signal.SIGHUP}
    with demos(tmp_path, ["early", *signals, "dies"]) as running:
        running["early"].wait_running("[demo] both nodes online")  # mid-show
        running["early"].proc.send_signal(signal.SIGTERM)
        for name in [*signals, "dies"]:
            running[name].wait_running()
        for name, sig in signals.items():
            running[name].proc.send_signal(sig)
        # a child that dies while the cluster runs: the demo notices, says so, stops the rest
        dying = running["dies"]
        node_b = next(
            pid for pid in dying.kids if "node-b" in Path(f"/proc/{pid}/cmdline").read_text()
        )
        os.kill(node_b, signal.SIGKILL)

        for name, sig in signals.items():
            demo = running[name]
            code = demo.finish()
            out = demo.output()
            # a cluster left running (--duration -1) ends by a stop signal: a clean end
            assert code == 0, f"{sig.name}: exit {code}\n{out}"
            assert f"[demo] {sig.name}: stopping the cluster" in out, out
            assert "[demo] cluster stopped" in out and "on stop:" not in out, out
            left = [pid for pid in demo.kids if alive(pid)]
            assert not left, f"{sig.name}: processes left running: {left}\n{out}"
            for child in ("controller", "node-a", "node-b"):
                log = (demo.folder / f"{child}.log").read_text(errors="replace")
                ending = "controller stopped" if child == "controller" else "node stopped"
                assert ending in log, f"{child} did not stop cleanly: {log}"

        # stopped mid-show: the show was cut short (128 + SIGTERM), the cluster stopped all the same
        early = running["early"]
        code = early.finish()
        out = early.output()
        assert code == 128 + signal.SIGTERM, out
        assert "[demo] SIGTERM: stopping the cluster" in out and "[demo] cluster stopped" in out
        assert not [pid for pid in early.kids if alive(pid)], out

        code = dying.finish()
        out = dying.output()
        assert code == 1, out
        assert "node-b exited unexpectedly (killed by SIGKILL)" in out, out
        assert "[demo] cluster stopped" in out, out
        assert not [pid for pid in dying.kids if alive(pid)], out


def test_controller_and_node_end_cleanly_on_sighup(tmp_path: Path) -> None:
    """(SIGTERM and SIGINT: the demo test stops its children with SIGTERM.)"""
    sig = signal.SIGHUP
    address = ipc_address(tmp_path)
    db = str(tmp_path / "c.db")
    controller = Proc(
        tmp_path, "controller", ["controller", "--db", db, "--listen", address, "--ws", "off"]
    )
    node_args = ["node", "--id", "n1", "--controller", address, "--db", str(tmp_path / "n1.db")]
    node = Proc(tmp_path, "node", node_args)
    try:
        wait_for("the node in sync", lambda: "in sync with the controller" in node.log_text())
        for proc in (node, controller):
            proc.signal(sig)
            started = time.monotonic()
            code = proc.proc.wait(15)
            assert code == 0, f"{proc.name} on {sig.name}: exit {code}\n{proc.log_text()}"
            assert time.monotonic() - started < 10
        assert "node stopped" in node.log_text(), node.log_text()
        assert "controller stopped" in controller.log_text(), controller.log_text()
    finally:
        node.stop()
        controller.stop()
