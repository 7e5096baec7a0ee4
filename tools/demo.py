"""``cuelog demo``: a whole cluster on loopback playing a short scripted show.

It starts a controller (with its UI gateway and status page) and two simulated node engines as
real processes (each with its own SQLite file), plays load / GO / cue progress / mixer / stop
as the operator (one GO is sent the way a UI sends it: binary OSC over the gateway's
WebSocket), kills one node with SIGKILL in the middle of the show and restarts it on its
replica file, then checks that every node's digest matches the controller's log and prints
where to look.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

from eventlog import ActionType, CuelogError, Operation, OperationType
from eventlog.state import CueStatus
from gateway import osc
from replicas.client import ControllerClient, ControllerUnreachable
from replicas.showkey import KEY_ENV, load_optional
from tools import args as types
from tools import timeline
from tools.reading import read_log
from tools.show import read_show
from tools.status import render

#: the node id the demo's scripted operator submits its commands as
OPERATOR = "operator"
NODES = ("node-a", "node-b")
CUES = [
    {"id": "cue-1", "node": "node-a", "seconds": 2.0},
    {"id": "cue-2", "node": "node-b", "seconds": 3.0},
    {"id": "cue-3", "node": "node-a", "seconds": 2.0},
    {"id": "cue-4", "node": "node-b", "seconds": 4.0},
]
#: how long stopped children get to end before they are killed
STOP_GRACE = 10.0


def add_parser(sub: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        "demo",
        help="run a controller and two nodes on loopback and play a scripted show",
        description="Start a controller and two simulated nodes on loopback (real processes, "
        "real SQLite files), play a short show, SIGKILL a node mid-show and restart it, then "
        "check every digest matches and print the commands to inspect the log.",
    )
    parser.add_argument(
        "--dir", default="demo-run", help="folder for logs and files (default: ./demo-run)"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=0.0,
        metavar="S",
        help="keep the cluster running S seconds after the show (-1: until Ctrl-C)",
    )
    parser.add_argument("--port", type=int, default=0, help="controller port (default: a free one)")
    parser.add_argument(
        "--ws",
        type=types.hostport,
        default=None,
        metavar="HOST:PORT",
        help="where the gateway serves UIs and the status page (default 127.0.0.1:9190, or a "
        "free port if 9190 is taken)",
    )
    parser.set_defaults(func=run)
    return parser


def free_port_pair() -> int:
    """A port p with p and p+1 free on loopback (the controller uses both)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            if port >= 65534:
                continue
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise CuelogError("no free pair of loopback ports found")


def free_port(preferred: int) -> int:
    """`preferred` if it is free on loopback, else any free port."""
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise CuelogError("no free loopback port for the gateway")


class ChildDied(CuelogError):
    """A process of the cluster ended while the demo still needed it."""


class Cluster:
    """The demo's processes: started, watched (a child that dies is reported), always
    stopped (SIGTERM, then SIGKILL after `STOP_GRACE` seconds)."""

    def __init__(self, folder: Path, port: int, ws: tuple[str, int]) -> None:
        self.folder = folder
        self.address = f"tcp://127.0.0.1:{port}"
        self.ws = ws
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        #: children the demo killed on purpose (their end is not a failure)
        self.killed: set[str] = set()

    def _spawn(self, name: str, args: list[str]) -> None:
        with (
            types.stop_signals_held(),  # a child is never started without being recorded
            open(self.folder / f"{name}.log", "ab") as logfile,
        ):
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "tools.cli", *args],
                stdout=logfile,
                stderr=subprocess.STDOUT,
                cwd=os.getcwd(),
            )
            self.killed.discard(name)

    def check(self) -> None:
        """Raise `ChildDied` if a child ended that should be running."""
        for name, proc in self.procs.items():
            code = proc.poll()
            if code is not None and name not in self.killed:
                raise ChildDied(
                    f"{name} exited unexpectedly ({_how(code)}); "
                    f"its log: {self.folder / name}.log{_last_line(self.folder / f'{name}.log')}"
                )

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float = 15.0) -> None:
        wait_for(what, check, timeout, guard=self.check)

    def start_controller(self) -> None:
        db = str(self.folder / "controller.db")
        ws = f"{self.ws[0]}:{self.ws[1]}"
        self._spawn("controller", ["controller", "--db", db, "--listen", self.address, "--ws", ws])

    @property
    def page(self) -> str:
        host = self.ws[0] if self.ws[0] not in ("0.0.0.0", "::") else "127.0.0.1"
        return f"http://{host}:{self.ws[1]}/"

    def start_node(self, node: str) -> None:
        db = str(self.folder / f"{node}.db")
        self._spawn(
            node, ["node", "--id", node, "--controller", self.address, "--db", db, "--simulate"]
        )

    def kill9(self, name: str) -> None:
        proc = self.procs[name]
        self.killed.add(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)

    def stop(self) -> list[str]:
        """Stop every child (nodes first, the controller last) and wait for each; return what
        went wrong (a child that needed SIGKILL, or that ended with an error)."""
        problems: list[str] = []
        with types.stop_signals_held():
            order = [
                name
                for name in sorted(self.procs, key=lambda name: name == "controller")
                if self.procs[name].poll() is None  # one that ended already was reported
            ]
            for name in order:
                self.procs[name].send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE
            for name in order:
                proc = self.procs[name]
                try:
                    code = proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
                    problems.append(f"{name} did not stop within {STOP_GRACE:g} s: killed")
                    continue
                if code != 0:
                    problems.append(f"{name} ended with {_how(code)}")
        return problems


def _how(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def _last_line(path: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            return f", which ends: {lines[-1].strip()[:300]}"
    return ""


def wait_for(
    what: str,
    check: Callable[[], bool],
    timeout: float = 15.0,
    guard: Callable[[], None] | None = None,
) -> None:
    """Poll `check` until true; `guard` (run each time) raises if waiting is pointless."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if guard is not None:
            guard()
        with contextlib.suppress(ControllerUnreachable):
            if check():
                return
        time.sleep(0.05)
    if guard is not None:
        guard()
    raise CuelogError(f"demo: timed out after {timeout:g} s waiting for {what}")


def send(client: ControllerClient, ops: list[Operation]) -> list[int]:
    """Append `ops` as the operator; their seqs. An op the controller refused stops the demo
    with its reason (a refused GO is not refused here: it is appended, as a recorded no-op)."""
    results = client.submit(ops, OPERATOR)
    refused = [r for r in results if "seq" not in r]
    if refused:
        raise CuelogError(f"the controller refused the demo's operation: {refused[0]}")
    return [r["seq"] for r in results]


def command(name: str, value: Any = None, **extra: Any) -> Operation:
    data = {"value": value, "address": f"/engine/command/{name}", **extra}
    return Operation(OperationType.COMMAND, ActionType.UPDATE, OPERATOR, name, data)


def _command_name(name: str) -> str:
    """How to run one of cuelog's commands from here: its name when it is on the PATH, else
    its path beside this Python (the virtual environment `make demo` made)."""
    if shutil.which(name):
        return name
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


def say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def run(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        if old.suffix in (".db", ".log") or old.name.endswith((".db-wal", ".db-shm")):
            old.unlink()
    ws = args.ws or ("127.0.0.1", free_port(9190))
    cluster = Cluster(folder, args.port or free_port_pair(), ws)
    try:
        code = play(cluster, folder, args.duration)
    except types.Stopped as stop:
        say(f"{stop}: stopping the cluster")
        raise
    except ChildDied:
        say("a process of the cluster died: stopping the cluster")
        raise
    finally:
        for problem in cluster.stop():
            say(f"on stop: {problem}")
        say("cluster stopped")
    return code


def play(cluster: Cluster, folder: Path, duration: float) -> int:
    say(f"controller on {cluster.address}, files and logs in {folder}/")
    cluster.start_controller()
    say(f"status page: {cluster.page}  (UIs: ws://{cluster.page[7:]}realtime)")
    for node in NODES:
        cluster.start_node(node)
    # the controller and nodes it started take $CUELOG_KEY from the environment: so does it
    key = load_optional(os.environ.get(KEY_ENV))
    with ControllerClient(cluster.address, timeout=2.0, key=key) as client:

        def status() -> dict[str, Any]:
            return client.status()

        def state() -> dict[str, Any]:
            result: dict[str, Any] = client.state()["state"]
            return result

        def cue_status(cue_id: str) -> int:
            return int(state()["cues"].get(cue_id, {}).get("status", 0))

        cluster.wait_for(
            "both nodes online",
            lambda: all(status()["nodes"].get(n, {}).get("online") for n in NODES),
            30.0,  # three processes starting at once on a busy machine take a while
        )
        say("both nodes online; loading the show (a GO in the same breath is refused)")
        send(client, [command("load", "demo-show", cues=CUES, nodes=list(NODES)), command("go")])
        cluster.wait_for("every node armed", lambda: state()["engine"]["armed"] == "yes")
        say("armed: GO cue-1 (node-a)")
        send(client, [command("go")])
        cluster.wait_for("cue-1 played", lambda: cue_status("cue-1") == CueStatus.DONE)
        send(
            client,
            [
                Operation(
                    OperationType.COMMAND,
                    ActionType.UPDATE,
                    OPERATOR,
                    "player_control",
                    {"address": "/node-b/audio/mixer/0/1/volume", "value": 0.8},
                )
            ],
        )
        say("GO cue-2 (node-b); SIGKILL node-a while it plays")
        send(client, [command("go")])
        cluster.wait_for("cue-2 playing", lambda: CueStatus.is_playing(cue_status("cue-2")))
        cluster.kill9("node-a")
        say("node-a killed (kill -9); restarting it on its replica file")
        cluster.start_node("node-a")
        cluster.wait_for("cue-2 played", lambda: cue_status("cue-2") == CueStatus.DONE)
        cluster.wait_for("node-a back in sync", lambda: _caught_up(status(), "node-a"))
        say("node-a is back and in sync; GO cue-3 (node-a), sent as a UI does: OSC over WebSocket")
        reply = ui_go(cluster.page.replace("http://", "ws://") + "realtime")
        say(f"the gateway answered /reply/engine/command/go {reply}")
        cluster.wait_for("cue-3 played", lambda: cue_status("cue-3") == CueStatus.DONE)
        say("GO cue-4 (node-b), then STOP mid-cue")
        send(client, [command("go")])
        cluster.wait_for("cue-4 playing", lambda: CueStatus.is_playing(cue_status("cue-4")))
        send(client, [command("stop")])
        cluster.wait_for("nodes re-armed", lambda: state()["engine"]["armed"] == "yes")
        cluster.wait_for(
            "every node converged", lambda: all(_caught_up(status(), n) for n in NODES)
        )
        final = status()
        final.pop("k", None)
        print()
        print(render(final))
        print()
        ok = all(info["digest_match"] for info in final["nodes"].values())
        print("every digest matches the controller's log" if ok else "DIGESTS DIFFER")
        db = folder / "controller.db"
        with read_log(db) as elog:
            show = read_show(elog)
        for mark in show.markers:
            if mark.refused is not None:
                print(
                    f"refused, recorded, never fired: seq {mark.seq} {mark.command} "
                    f"({mark.refused})"
                )
        picture = folder / "timeline.html"
        timeline.write(show, picture, "cuelog demo show")
        replay, cuelog = _command_name("replay"), _command_name("cuelog")
        print("\nthe story of the show (the log alone tells it; run these any time):")
        print(f"  {replay} info {db}              # nodes, restarts, commands, integrity")
        print(f"  {replay} node {db} node-a       # node-a: killed with -9, restarted")
        print(f"  {replay} cue {db} cue-2         # a cue: its GO, who fired it, how late")
        print(f"  {replay} cue {db} cue-4         # the cue a STOP cut short")
        print(f"  {replay} events {db} --why      # every event; refused/ignored ones marked")
        print(f"  {replay} timeline {db} -o {picture}   # written: open it in a browser")
        print(f"  {replay} serve {db} --speed 5   # watch it again in a UI (ws://127.0.0.1:9290)")
        print(f"  {replay} verify {folder / 'node-a.db'}  # a node's replica file is a log too")
        print("\nwhile it runs:")
        print(f"  {cuelog} status --controller {cluster.address}")
        print(f"  {cluster.page}   the status page ({cluster.page}state is JSON)")
        print(f"  logs: {folder}/controller.log, {folder}/node-a.log, {folder}/node-b.log")
        if duration:
            say(
                "cluster running; Ctrl-C (or SIGTERM, SIGHUP) stops it"
                if duration < 0
                else f"cluster running for {duration:g} s"
            )
            try:
                keep_running(cluster, duration)
            except types.Stopped as stop:  # the way to end a cluster left running: a clean end
                say(f"{stop}: stopping the cluster")
        return 0 if ok else 1


def keep_running(cluster: Cluster, duration: float) -> None:
    """Wait `duration` seconds (< 0: until a stop signal), watching the children."""
    deadline = time.monotonic() + duration if duration > 0 else math.inf
    while time.monotonic() < deadline:
        cluster.check()
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


def ui_go(url: str) -> str:
    """Send ``/engine/command/go`` as binary OSC over the gateway's WebSocket; return the
    reply's JSON (it comes once the GO is durable in the log)."""
    with connect(url, open_timeout=5) as ws:
        ws.send(osc.encode("/engine/command/go"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            frame = ws.recv(timeout=max(0.01, deadline - time.monotonic()))
            if isinstance(frame, bytes):
                [msg] = osc.decode(frame)
                if msg.address == "/reply/engine/command/go":
                    return str(msg.args[0])
    raise CuelogError("demo: the gateway did not answer the GO")


def _caught_up(status: dict[str, Any], node: str) -> bool:
    info = status["nodes"].get(node)
    return bool(
        info
        and info["online"]
        and info["applied_seq"] == status["head_seq"]
        and info["digest_match"] is True
    )
