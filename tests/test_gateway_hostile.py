"""The gateway attacked: hostile clients, lying nodes and unlucky shows, on real sockets and real
`cuelog controller` processes where the failure needs them. Every test here failed when it was
written; each names the defect it pins down. Every wait has a deadline; every process and socket
a test opens is closed by it."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import resource
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pythonosc.osc_message import OscMessage
from websockets.exceptions import ConnectionClosed

from eventlog import CONTROLLER, ActionType, EventLog, Operation, OperationType, State
from gateway.commands import broadcast_operation
from gateway.lockout import LOCKOUT_MEMORY
from gateway.osc import OscMsg
from gateway.outbox import MAX_QUEUE
from gateway.session import GatewayCore, Policy, Submit
from gateway.view import StatusView
from replicas.client import ControllerClient
from tests.cluster import ipc_address, wait_for
from tests.gateway_rig import OscClient, command, gateway_thread, open_client, osc
from tests.helpers import LOG_ID, make_event

# --------------------------------------------------------------------------- helpers

#: the largest frame the gateway accepts
MiB = 1024 * 1024


def _padded(text: bytes) -> bytes:
    text += b"\x00"
    return text + b"\x00" * (-len(text) % 4)


def _raw_osc(address: str, tags: str, payload: bytes = b"") -> bytes:
    """An OSC message built by hand (for type tags python-osc's builder will not write)."""
    return _padded(address.encode()) + _padded(tags.encode()) + payload


def _bundle(*elements: bytes) -> bytes:
    body = b"".join(struct.pack(">i", len(e)) + e for e in elements)
    return b"#bundle\x00" + bytes(8) + body


def _ws_frame(payload: bytes) -> bytes:
    """One masked binary WebSocket frame, as a client sends it."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        head = bytes([0x82, 0x80 | size])
    elif size < 65536:
        head = bytes([0x82, 0x80 | 126]) + struct.pack(">H", size)
    else:
        head = bytes([0x82, 0x80 | 127]) + struct.pack(">Q", size)
    keystream = (mask * (size // 4 + 1))[:size]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(keystream, "big")).to_bytes(
        size, "big"
    )
    return head + mask + masked


def _raw_upgrade(port: int, rcvbuf: int | None = None) -> socket.socket:
    """A raw TCP client that asks for the WebSocket upgrade and then does what the test says
    (by default: never reads)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            "GET /realtime HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    return sock


def _seed_show(db: Path, cues: int) -> None:
    """A log whose loaded show lists `cues` cues (4096 in the load, the rest in show_cues)."""
    with EventLog.open(db) as elog:
        names = [f"cue-{i:05d}" for i in range(cues)]
        elog.append(command("load", "big-show", cues=names[:4096]))
        for start in range(4096, cues, 4096):
            elog.append(
                Operation(
                    OperationType.STATUS,
                    ActionType.UPDATE,
                    CONTROLLER,
                    "show_cues",
                    {"cues": names[start : start + 4096]},
                )
            )


class ControllerProcess:
    """``cuelog controller --ws 127.0.0.1:0`` in its own process (its port read from its log)."""

    def __init__(
        self, folder: Path, db: Path, *extra: str, nofile: tuple[int, int] | None = None
    ) -> None:
        self.address = ipc_address(folder, "hostile")
        self.logfile = folder / "controller.log"
        args = [
            sys.executable,
            "-m",
            "tools.cli",
            "controller",
            "--db",
            str(db),
            "--listen",
            self.address,
            "--ws",
            "127.0.0.1:0",
            *extra,
        ]

        def limit() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

        with open(self.logfile, "ab") as out:
            self.proc = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                preexec_fn=limit,
            )
        try:
            wait_for("the gateway to say where it serves", self._port_known, 20)
            wait_for("GET /cluster to answer", self._answers, 20)
        except BaseException:
            self.stop()
            raise

    def log_text(self) -> str:
        return self.logfile.read_text(errors="replace")

    def _port_known(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"the controller exited early:\n{self.log_text()[-2000:]}")
        found = re.search(r"serving UIs on ws://127\.0\.0\.1:(\d+)/realtime", self.log_text())
        if found:
            self.port = int(found.group(1))
        return found is not None

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.http + "/cluster", timeout=2) as reply:
                return bool(reply.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/realtime"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS for the controller")

    def connected(self) -> int:
        """How many UI connections the controller has logged."""
        return len(re.findall(r"ui:\d+@\S+ connected", self.log_text()))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@contextmanager
def controller_process(
    folder: Path, db: Path, *extra: str, nofile: tuple[int, int] | None = None
) -> Iterator[ControllerProcess]:
    ctl = ControllerProcess(folder, db, *extra, nofile=nofile)
    try:
        yield ctl
    finally:
        ctl.stop()


async def _connected(url: str) -> OscClient:
    client = await open_client(url)
    await client.until("the dump", lambda: bool(client.dump_ends), 30)
    return client


async def _round_trips(client: OscClient, count: int = 5, give_up: float = 20.0) -> list[float]:
    """Seconds each of `count` commands takes to be answered, one after the other (a command
    not answered within `give_up` seconds counts as `give_up`, and ends the measure)."""
    loop = asyncio.get_running_loop()
    times: list[float] = []
    for _ in range(count):
        sent = loop.time()
        await client.send("/engine/command/pause")
        try:
            reply = await client.reply("/engine/command/pause", give_up)
        except AssertionError:
            times.append(give_up)
            break
        assert reply["status"] == "ok", reply
        times.append(loop.time() - sent)
    return times


def _flood(sock: socket.socket, data: bytes, stop: threading.Event) -> threading.Thread:
    """Send `data` on `sock` again and again from a thread until `stop` (or an error)."""

    def run() -> None:
        while not stop.is_set():
            try:
                sock.sendall(data)
            except OSError:
                return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _broadcast(address: str, value: Any) -> Operation:
    return Operation(OperationType.STATUS, ActionType.UPDATE, CONTROLLER, address, {"value": value})


# ------------------------------------------------------------------- values OSC cannot carry


async def test_a_fader_value_beyond_float32_does_not_break_every_later_dump(
    tmp_path: Path,
) -> None:
    """A UI with control sends a fader as an OSC double 1e300. The gateway answers "ok",
    records it, and from then on (for good: the mixer value outlives loads and restarts) every
    dump raises OverflowError in `osc.encode` inside the client's writer: no new UI ever gets
    its dump_end again."""
    with gateway_thread(tmp_path / "c.db", ipc_address(tmp_path)) as rig:
        rig.append(command("load", "show", cues=["c1"]))
        attacker = await open_client(rig.url)
        await attacker.until("the dump", lambda: bool(attacker.dump_ends))
        fader = "/n1/audio/mixer/0/1/volume"
        await attacker.conn.send(_raw_osc(fader, ",d", struct.pack(">d", 1e300)))
        await attacker.reply(fader)
        late = await open_client(rig.url)
        await late.until("a later client's dump", lambda: bool(late.dump_ends), 10)
        for client in (attacker, late):
            await client.conn.close()


def test_broadcast_osc_refuses_a_float_that_osc_cannot_carry() -> None:
    """`broadcast_osc` promises a ValueError at once for a value OSC cannot carry; 1e300 is
    finite but no OSC ``f`` can hold it (and the recorded event then breaks every dump)."""
    try:
        broadcast_operation("/engine/status/level", 1e300)
    except ValueError:
        return
    raise AssertionError("broadcast_operation accepted 1e300, which no OSC float can carry")


# --------------------------------------------------------------------------- the event loop


async def test_one_frame_of_many_tiny_arguments_does_not_freeze_the_controller(
    tmp_path: Path,
) -> None:
    """python-osc parses arguments in quadratic time: one valid 1 MiB frame of 209,713 empty
    blobs takes ~7 s to decode, on the event loop, before any policy check. A client with no
    rights at all (``--private``, no passcode) freezes commits, replication and every UI."""
    db = tmp_path / "c.db"
    count = (MiB - 16) // 5
    frame = _raw_osc("/x", "," + "b" * count, bytes(4 * count))
    while len(frame) > MiB:
        count -= 64
        frame = _raw_osc("/x", "," + "b" * count, bytes(4 * count))
    with controller_process(tmp_path, db, "--private", "--passcode", "sesame") as ctl:
        operator = await _connected(ctl.url)
        assert max(await _round_trips(operator)) < 1.0  # idle: fine
        attacker = _raw_upgrade(ctl.port)
        try:
            attacker.sendall(_ws_frame(frame) * 2)
            times = await _round_trips(operator, 3)
        finally:
            attacker.close()
        await operator.conn.close()
        assert max(times) < 1.0, f"commands took {times} s while two hostile frames were decoded"


async def test_a_flood_of_engine_sync_from_a_watcher_does_not_freeze_the_controller(
    tmp_path: Path,
) -> None:
    """Every ``/engine/sync`` copies the whole address map (24,576 items for a 12,288-cue
    show) on the event loop. A watch-only client sending them as fast as it can freezes the
    controller: no handshake, no command, no commit for as long as it likes."""
    db = tmp_path / "c.db"
    _seed_show(db, 12_288)
    with controller_process(tmp_path, db) as ctl:
        operator = await _connected(ctl.url)
        assert max(await _round_trips(operator)) < 1.0
        stop = threading.Event()
        attacker = _raw_upgrade(ctl.port)
        thread = _flood(attacker, _ws_frame(osc("/engine/sync", 0)) * 64, stop)
        try:
            times = await _round_trips(operator)
        finally:
            stop.set()
            attacker.close()
            thread.join(10)
        await operator.conn.close()
        assert max(times) < 1.0, f"commands took {times} s during a flood of /engine/sync"


async def test_a_flood_of_ignored_text_frames_does_not_starve_other_clients(
    tmp_path: Path,
) -> None:
    """One socket read holds thousands of small frames, and `Gateway._handler` handles every
    message it has without yielding to the loop (``recv`` returns at once while frames are
    buffered). A client flooding 6-byte text frames (which the gateway ignores: no rights
    needed, ``--private`` or not) takes another client's command round trip from ~10 ms to
    ~2 s, and a new client's 12,288-cue dump from ~1.5 s to ~25 s. The issue: "floods: ...
    the server and other clients unaffected"."""
    db = tmp_path / "c.db"
    _seed_show(db, 12_288)
    with controller_process(tmp_path, db) as ctl:
        operator = await _connected(ctl.url)
        assert max(await _round_trips(operator)) < 1.0
        stop = threading.Event()
        attacker = _raw_upgrade(ctl.port)
        empty_text = b"\x81\x80" + os.urandom(4)  # a masked, empty text frame
        thread = _flood(attacker, empty_text * 4096, stop)
        try:
            times = await _round_trips(operator)
        finally:
            stop.set()
            attacker.close()
            thread.join(10)
        await operator.conn.close()
        median = sorted(times)[len(times) // 2]
        assert median < 0.5, f"commands took {times} s during a flood of text frames"


async def test_a_flood_of_heavy_bundles_does_not_starve_other_clients(tmp_path: Path) -> None:
    """The flood limit counts frames (500/s, bursts of 2000) and the reader yields every 32
    frames, but one 87 KB frame may be a bundle of 256 messages with 64 empty blobs each,
    ~31 ms to decode. The server gets through ~30 such frames a second, far under the limit,
    so the sender (no rights needed: decoding comes before any policy) is never dropped, and
    each 32-frame burst holds the loop ~1 s: other clients' commands take ~0.8 s instead of
    ~5 ms, for as long as the flood lasts."""
    with controller_process(tmp_path, tmp_path / "c.db", "--private", "--passcode", "x") as ctl:
        operator = await _connected(ctl.url)
        assert max(await _round_trips(operator)) < 1.0
        stop = threading.Event()
        attacker = _raw_upgrade(ctl.port)
        heavy = _raw_osc("/reply/x", "," + "b" * 64, bytes(4 * 64))
        thread = _flood(attacker, _ws_frame(_bundle(*[heavy] * 256)), stop)
        try:
            times = await _round_trips(operator)
        finally:
            stop.set()
            attacker.close()
            thread.join(10)
        await operator.conn.close()
        median = sorted(times)[len(times) // 2]
        assert median < 0.25, f"commands took {times} s during a flood of heavy bundles"


async def test_get_state_requests_do_not_starve_commands(tmp_path: Path) -> None:
    """``GET /state`` folds, digests and serializes the whole state on the event loop for each
    request (~9 ms for 12,288 cues), with no cache even when the seq has not moved, and for
    anyone (no control needed, even with ``--private``). Sixteen concurrent fetchers take a
    command's round trip from ~10 ms to ~200 ms; more fetchers, more delay."""
    db = tmp_path / "c.db"
    _seed_show(db, 12_288)
    with controller_process(tmp_path, db) as ctl:
        hammer = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys, threading, urllib.request\n"
                "def run():\n"
                "    while True:\n"
                "        try:\n"
                "            urllib.request.urlopen(sys.argv[1], timeout=60).read()\n"
                "        except Exception:\n"
                "            pass\n"
                "for _ in range(16):\n"
                "    threading.Thread(target=run, daemon=True).start()\n"
                "threading.Event().wait()\n",
                ctl.http + "/state",
            ]
        )
        try:
            client = await open_client(ctl.url)
            await client.until("the dump", lambda: bool(client.dump_ends), 30)
            loop = asyncio.get_running_loop()
            times: list[float] = []
            for _ in range(15):
                sent = loop.time()
                await client.send("/engine/command/pause")
                await client.reply("/engine/command/pause", 30)
                times.append(loop.time() - sent)
            await client.conn.close()
        finally:
            hammer.kill()
            hammer.wait(10)
        median = sorted(times)[len(times) // 2]
        assert median < 0.1, f"median command round trip {median * 1000:.0f} ms under GET /state"


# --------------------------------------------------------------------------- command replies


async def test_refused_commands_are_never_answered_ok_in_a_large_batch(tmp_path: Path) -> None:
    """The reducer's reason for a UI command is kept in a 4096-entry memory until the reply is
    sent; a group commit of more UI commands than that evicts the oldest reasons before their
    replies, and `command_done` then answers "ok" for a GO the reducer refused (not armed)."""
    db = tmp_path / "c.db"
    with EventLog.open(db) as elog:
        elog.append(command("load", "show", cues=["c1"]))
    with controller_process(tmp_path, db) as ctl:
        clients: list[OscClient] = []
        for _ in range(32):
            client = await open_client(ctl.url)
            await client.until("the dump", lambda c=client: bool(c.dump_ends))
            clients.append(client)
        gos = _bundle(*[osc("/engine/command/go")] * 256)
        await asyncio.gather(*(client.conn.send(gos) for client in clients))
        statuses: Counter[str] = Counter()
        for client in clients:
            await client.until(
                "256 replies",
                lambda c=client: len(c.replies) >= 256,
                60,
            )
            statuses.update(reply[1]["status"] for reply in client.replies)
            await client.conn.close()
        with urllib.request.urlopen(ctl.http + "/state", timeout=10) as reply:
            state = json.loads(reply.read())
        assert state["state"]["engine"]["running"] == "no"  # every GO was refused...
        assert statuses == {"error": 32 * 256}, f"...but the replies said {dict(statuses)}"


def test_a_reply_survives_an_overflow_resync() -> None:
    """Every command gets a reply. A client whose queue overflows (a slow tablet during a burst)
    is resynced with ``_clear(keep_replies=False)``: the reply to its GO, already queued, is
    thrown away, and no dump can bring it back."""
    core = GatewayCore(StatusView(State()), LOG_ID)
    session = core.connect("127.0.0.1")
    while session.queue:
        session.take(1000)
    effects = core.on_message(session, OscMsg("/engine/command/stop", ()), 0.0)
    assert len(effects) == 1 and isinstance(effects[0], Submit)
    submit = effects[0]
    assert submit.op.data is not None
    core.on_events(
        [make_event(1, "command", "update", submit.op.sender, "stop", submit.op.data)], 0.0
    )
    core.answer(session, submit.reply_to, "ok", seq=1)  # what command_done queues
    burst = [
        make_event(seq, "status", "update", CONTROLLER, f"/engine/status/x{seq}", {"value": seq})
        for seq in range(2, MAX_QUEUE + 3)
    ]
    core.on_events(burst, 0.1)
    assert core.stats["resyncs"] == 1
    addresses: list[str] = []
    while session.queue:
        addresses.extend(OscMessage(frame).address for frame in session.take(1000))
    assert "/reply/engine/command/stop" in addresses, "the reply to the stop was lost"


# --------------------------------------------------------------------------- --private


def test_private_hides_the_state_from_http_too(tmp_path: Path) -> None:
    """``--private``: a client without control sees nothing. Over HTTP on the same port it
    gets the whole state anyway: ``GET /state`` (show name, every cue, every value) and
    ``GET /cluster`` are served to anyone."""
    policy = Policy(passcode="sesame", loopback=False, private=True)
    with gateway_thread(tmp_path / "c.db", ipc_address(tmp_path), policy) as rig:
        rig.append(command("load", "secret-show", cues=["secret-cue"]))
        try:
            with urllib.request.urlopen(rig.http + "/state", timeout=10) as reply:
                body = reply.read()
        except urllib.error.HTTPError as refused:
            assert 400 <= refused.code < 500
            return
        assert b"secret-show" not in body and b"secret-cue" not in body, (
            "GET /state showed the private show to a client without control"
        )


def test_private_never_sends_a_dump_to_a_client_without_control_that_overflows(
    tmp_path: Path,
) -> None:
    """``--private``: a client without control is sent no status. But one that makes its
    queue overflow (sending unknown addresses and not reading the error replies) is
    "resynced": `GatewayCore._overflow` queues a full dump without looking at ``watching``."""
    policy = Policy(passcode="sesame", loopback=False, private=True)
    with gateway_thread(tmp_path / "c.db", ipc_address(tmp_path), policy) as rig:
        rig.append(command("load", "secret-show", cues=["secret-cue"]))
        attacker = _raw_upgrade(rig.port, rcvbuf=4096)
        try:
            unknown = _ws_frame(_bundle(*[osc("/no/such/address")] * 256))
            for _ in range(100):  # 25,600 error replies: more than MAX_QUEUE
                attacker.sendall(unknown)
            attacker.sendall(_ws_frame(osc("/connect", "wrong")))  # the end marker
            received = b""
            deadline = time.monotonic() + 30
            while b"/reply/connect" not in received and time.monotonic() < deadline:
                try:
                    data = attacker.recv(65536)
                except (TimeoutError, ConnectionError):  # silent, or dropped: both fine
                    break
                if not data:
                    break
                received += data
        finally:
            attacker.close()
        assert b"secret-show" not in received and b"dump_begin" not in received, (
            "a client without control under --private was sent the state"
        )


# --------------------------------------------------------------------------- memory


async def test_clients_that_never_read_do_not_each_pin_a_copy_of_the_show(
    tmp_path: Path,
) -> None:
    """Each connection's dump gets its own copy of the address map (`_full_items`), and a
    dump is not counted in the queue's bounds: 200 clients that never read a 12,288-cue show
    pin ~330 MB in the controller (990 pin 1.7 GB; MAX_CLIENTS is 1000)."""
    db = tmp_path / "c.db"
    _seed_show(db, 12_288)
    with controller_process(tmp_path, db) as ctl:
        before = ctl.rss_mb()
        stuck = [_raw_upgrade(ctl.port, rcvbuf=4096) for _ in range(200)]
        try:
            wait_for("200 connections", lambda: ctl.connected() >= 200, 60)
            grown = ctl.rss_mb() - before
        finally:
            for sock in stuck:
                sock.close()
        assert grown < 100, f"200 clients that never read cost the controller {grown:.0f} MB"


async def test_unique_addresses_from_a_client_without_control_do_not_pin_memory(
    tmp_path: Path,
) -> None:
    """Every reply address (``/reply`` + whatever the client sent) goes through `osc._prefix`,
    whose cache keeps 65,536 entries whatever their size. A client with no rights
    (``--private``, no passcode) sending 20,000 unknown 1,000-character addresses (4 bytes a
    character in UTF-8) pins ~160 MB for good (70,000 pin 540 MB)."""
    db = tmp_path / "c.db"
    with controller_process(tmp_path, db, "--private", "--passcode", "sesame") as ctl:
        before = ctl.rss_mb()
        pad = "\U0001f600" * 1000
        total, per_connection = 20_000, 320  # a new connection before the frame-rate limit
        for first in range(0, total, per_connection):
            client = await open_client(ctl.url)
            for start in range(first, first + per_connection, 32):
                frame = _bundle(*[osc(f"/{pad}{i}") for i in range(start, start + 32)])
                await client.conn.send(frame)
            await client.until("every reply", lambda c=client: len(c.replies) >= per_connection, 60)
            await client.conn.close()
        grown = ctl.rss_mb() - before
        assert grown < 64, f"unknown addresses from a client without control cost {grown:.0f} MB"


# --------------------------------------------------------------------------- connections


def test_stalled_handshakes_do_not_lock_the_nodes_out(tmp_path: Path) -> None:
    """Connections still in their opening handshake are not counted against MAX_CLIENTS, and
    MAX_CLIENTS (1000) is itself about the usual soft limit of open files (1024). With that
    limit, 1,100 TCP connections that send half an upgrade request take every descriptor: the
    controller cannot accept a node (nor a UI) for as long as the attacker keeps re-opening
    them (each lives 10 s)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < 4096:  # this process opens 1,100 sockets
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))
    db = tmp_path / "c.db"
    limit = (1024, hard if hard != resource.RLIM_INFINITY else 1 << 20)
    try:
        with controller_process(tmp_path, db, nofile=limit) as ctl:
            stalled: list[socket.socket] = []
            try:
                for _ in range(1100):
                    sock = socket.create_connection(("127.0.0.1", ctl.port), timeout=5)
                    sock.sendall(b"GET /realtime HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                    stalled.append(sock)
                with ControllerClient(ctl.address, timeout=3.0) as node:
                    head = node.status()["head_seq"]
            finally:
                for sock in stalled:
                    sock.close()
            assert head == 0
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_a_non_ascii_digit_in_since_gets_a_full_dump(tmp_path: Path) -> None:
    """``?since=²``: ``"²".isdigit()`` is true but ``int("²")`` raises, so `server._int`
    kills the connection handler (close 1011, a traceback in the log) instead of ignoring the
    bad seq and sending a full dump, as ``?since=abc`` gets."""
    with gateway_thread(tmp_path / "c.db", ipc_address(tmp_path)) as rig:
        client = await open_client(rig.url + "?since=%C2%B2")
        try:
            await client.until("the dump", lambda: bool(client.dump_ends), 10)
        except ConnectionClosed as closed:
            raise AssertionError(f"?since=² closed the connection: {closed}") from None
        assert client.dump_ends[0][2] == "full"
        await client.conn.close()


def test_a_locked_out_address_stays_locked_when_other_addresses_fail() -> None:
    """Five wrong passcodes lock an address out for 30 s. The failure memory is an LRU of
    4096 addresses that evicts locked ones like any other: one wrong passcode from each of
    4096 other addresses (an IPv6 /64 has 2**64) and the locked address may try again."""
    core = GatewayCore(StatusView(State()), LOG_ID, Policy(passcode="sesame", loopback=False))
    attacker = core.connect("198.51.100.7")
    for _ in range(5):
        core.on_message(attacker, OscMsg("/connect", ("guess",)), 0.0)
    for i in range(LOCKOUT_MEMORY):
        other = core.connect(f"2001:db8::{i:x}")
        core.on_message(other, OscMsg("/connect", ("guess",)), 1.0)
        core.disconnect(other)
    again = core.connect("198.51.100.7")
    core.on_message(again, OscMsg("/connect", ("sesame",)), 2.0)
    assert not again.control, "a locked-out address got control 2 s into its 30 s lockout"


# --------------------------------------------------------------------------- malformed OSC


async def test_a_truncated_argument_is_refused_not_executed(tmp_path: Path) -> None:
    """`osc._KNOWN_TAGS` lets ``c`` and ``I`` through, but python-osc 1.10 does not read them:
    it logs a warning on the root logger and skips the tag without consuming its bytes. So
    ``/engine/command/stop ,c`` with its 4 argument bytes missing (truncated) is executed as a
    STOP, and ``,ci`` reads the char's bytes as the int."""
    with gateway_thread(tmp_path / "c.db", ipc_address(tmp_path)) as rig:
        rig.append(command("load", "show", cues=["c1"]))
        head = rig.get("/state")["seq"]
        client = await open_client(rig.url)
        await client.until("the dump", lambda: bool(client.dump_ends))
        await client.conn.send(_raw_osc("/engine/command/stop", ",c"))
        await client.until("a reply", lambda: bool(client.replies))
        address, reply = client.replies[0]
        assert address in ("/reply/error", "/reply/engine/command/stop")
        assert reply["status"] == "error", f"a truncated frame was executed: {reply}"
        assert rig.get("/state")["seq"] == head
        await client.conn.close()


# --------------------------------------------------------------------------- lying nodes


async def test_a_cue_id_with_nul_cannot_spoof_another_cue_in_the_ui(tmp_path: Path) -> None:
    """Addresses are built from ids nodes send, and strings inside ``data`` may hold control
    characters. A node reports ``cue_enabled`` for the cue id
    ``"c1\\0\\0\\0,i\\0\\0\\0\\0\\0\\1"``: the gateway writes it into the address, and every
    OSC reader (python-osc, osc-js) stops the address at the NUL and reads the rest as type
    tags and an argument: ``/engine/status/cue_enabled/c1 1``. The UI shows c1 enabled; the
    log says it is disabled."""
    with gateway_thread(tmp_path / "c.db", ipc_address(tmp_path)) as rig:
        rig.append(command("load", "show", cues=["c1"]), command("cue_enabled", "c1 0"))
        lie = "c1\x00\x00\x00,i\x00\x00\x00\x00\x00\x01"
        rig.append(
            Operation(
                OperationType.STATUS,
                ActionType.UPDATE,
                "n1",
                "cue_enabled",
                {"cue_id": lie, "enabled": False},
            )
        )
        assert rig.get("/state")["state"]["cue_enabled"]["c1"] is False
        client = await open_client(rig.url)
        await client.until("the dump", lambda: bool(client.dump_ends))
        await client.conn.close()
        shown = client.values.get("/engine/status/cue_enabled/c1")
        assert shown == 0, f"the UI shows c1 as {shown!r}; the log says it is disabled"
