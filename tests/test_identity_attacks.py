"""Attacks on identity binding and the show key that tests/test_identity.py and
tests/test_showkey.py miss. Each test reproduces one defect (it fails until it is fixed)."""

from __future__ import annotations

import contextlib
import datetime
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pynng
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from eventlog import EventLog
from replicas.messages import Acks, Beat, Error, Hello, Submit, Welcome
from replicas.protocol import ProtocolError, origin_of
from replicas.sequencer import ControllerCore
from replicas.showkey import KEY_ENV, KeyFileError, ShowKey, generate
from tests.cluster import controller_thread, ipc_address, nodes, wait_for
from tests.helpers import decoded
from tests.test_identity import op, rule

SECRET = "the real n1's secret"
REAL = origin_of("n1", SECRET)
#: the real node's hello (it knows its secret); replayed, it is the same bytes
HELLO = decoded(Hello, {"k": "hello", "node": "n1", "inst": REAL, "secret": SECRET})
#: what an impostor can send: the origin read from the log, without the secret
UNPROVEN = decoded(Hello, {"k": "hello", "node": "n1", "inst": REAL})
#: or an origin of its own for the same node id
OWN_SECRET = "the impostor's secret"
OWN = Hello("n1", origin_of("n1", OWN_SECRET), OWN_SECRET)
#: the real node's beat
BEAT = Beat("n1", 0, "", REAL)


def submit(core: ControllerCore, pipe: int, mono: float, *ops: dict[str, Any]) -> list[Any]:
    prepared = core.prepare_submit(Submit("n1", list(ops)), pipe, mono)
    reply: Acks = core.commit([prepared], mono).replies[0]
    return reply.results


# ------------------------------------------------------------------ origin not proven


def test_a_connection_blip_lets_an_impostor_take_the_live_nodes_origin_and_eat_its_ops() -> None:
    """n1's connection drops and it redials (100 ms later). An impostor that read n1's origin
    from the log says hello with it in between: it is welcomed, the real node is refused
    (origin-in-use) for as long as the impostor stays, and the node's next op, acked, is the
    impostor's event (dedup by op id)."""
    elog = EventLog.open(":memory:")
    core = ControllerCore(elog, node_timeout=3.0)
    assert isinstance(core.hello(HELLO, 0.0, 1.0, pipe=1), Welcome)
    core.beat(BEAT, 0.0, 1.05, pipe=1)
    assert "seq" in submit(core, 1, 1.1, op("n1", REAL, 1, "own-1"))[0]
    core.pipe_closed(1, 1.12)  # a blip
    with pytest.raises(ProtocolError, match="secret"):
        core.hello(UNPROVEN, 0.0, 1.15, pipe=9)  # the origin alone proves nothing
    own = core.hello(OWN, 0.0, 1.16, pipe=9)  # a new process for n1, right after the blip
    assert rule(own) == "id-in-use", own
    assert isinstance(core.hello(HELLO, 0.0, 1.4, pipe=2), Welcome)
    (result,) = submit(core, 2, 1.5, op("n1", REAL, 2, "own-2"))
    event = next(e for e in elog.iter_events() if e.seq == result["seq"])
    assert event.op.target == "own-2", (
        f"the node's op own-2 was acknowledged as seq {event.seq}, which is {event.op.target}"
    )


def test_after_a_controller_restart_the_first_hello_with_an_origin_owns_it() -> None:
    elog = EventLog.open(":memory:")
    core = ControllerCore(elog, node_timeout=3.0)
    core.hello(HELLO, 0.0, 1.0, pipe=1)
    submit(core, 1, 1.1, op("n1", REAL, 1, "own-1"))
    restarted = ControllerCore(elog, node_timeout=3.0, now=2.0, mono=2.0)
    with pytest.raises(ProtocolError, match="secret"):
        restarted.hello(UNPROVEN, 0.0, 2.1, pipe=50)  # an impostor that was quicker
    reply = restarted.hello(HELLO, 0.0, 2.2, pipe=51)  # the real node re-hellos
    assert isinstance(reply, Welcome), reply


def test_a_controller_stall_hands_every_live_origin_to_whoever_asks_first() -> None:
    """`stalled` forgives nodes' silence but not sessions': right after a 5 s stall every
    live node's origin is free for the taking."""
    core = ControllerCore(EventLog.open(":memory:"), node_timeout=3.0)
    core.hello(HELLO, 0.0, 1.0, pipe=1)
    core.beat(BEAT, 0.0, 1.0, pipe=1)
    core.stalled(5.0, 6.0)
    reply = core.hello(HELLO, 0.0, 6.01, pipe=9)
    assert isinstance(reply, Error) and reply.rule == "origin-in-use", (
        f"an impostor got the live origin: {reply}"
    )


class _Proxy:
    """A loopback TCP proxy whose links `cut` drops (a network blip)."""

    def __init__(self, target: int) -> None:
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(16)
        self.port = self.srv.getsockname()[1]
        self.target = target
        self.links: list[tuple[socket.socket, socket.socket]] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                a, _ = self.srv.accept()
                b = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                return
            self.links.append((a, b))
            threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError, ValueError):
            while True:
                for x in select.select([a, b], [], [], 0.5)[0]:
                    data = x.recv(65536)
                    if not data:
                        raise OSError
                    (b if x is a else a).sendall(data)
        for x in (a, b):
            x.close()

    def cut(self) -> None:
        links, self.links = self.links, []
        for pair in links:
            for x in pair:
                with contextlib.suppress(OSError):
                    x.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.srv.close()
        self.cut()


def _free_pair() -> int:
    for _ in range(100):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
        with socket.socket() as b, contextlib.suppress(OSError):
            b.bind(("127.0.0.1", port + 1))
            return int(port)
    raise AssertionError("no free ports")


def test_live_node_locked_out_and_stops_following_after_a_blip(tmp_path: Path) -> None:
    """A real node behind a proxy; the proxy drops its links once. An impostor (direct to the
    controller) that read the node's origin from the log says hello with it in the gap."""
    cport = _free_pair()
    with controller_thread(tmp_path / "ctl.db", f"tcp://127.0.0.1:{cport}") as ctl:
        req, ev = _Proxy(cport), _Proxy(cport + 1)
        if ev.port != req.port + 1:  # the node derives the events port: proxy it there
            ev.close()
            ev = _Proxy.__new__(_Proxy)
            ev.srv = socket.socket()
            ev.srv.bind(("127.0.0.1", req.port + 1))
            ev.srv.listen(16)
            ev.port, ev.target, ev.links = req.port + 1, cport + 1, []
            threading.Thread(target=ev._accept, daemon=True).start()
        core = ctl.controller.core
        assert core is not None
        try:
            with nodes(f"tcp://127.0.0.1:{req.port}", ["n1"], request_timeout=5.0) as (n1,):
                assert n1.wait_synced(10)
                seq = n1.add_cue("own-0", "0").result(10)
                imp = pynng.Req0(dial=f"tcp://127.0.0.1:{cport}", recv_timeout=5000)

                def ask(msg: dict[str, Any]) -> dict[str, Any]:
                    imp.send(orjson.dumps(msg))
                    reply: dict[str, Any] = orjson.loads(imp.recv())
                    return reply

                log_id = ask({"k": "status"})["log_id"]
                fetched = ask({"k": "fetch", "node": "r", "log": log_id, "after": seq - 1})
                origin = fetched["events"][0]["op_id"][0]
                req.cut()
                ev.cut()
                deadline = time.monotonic() + 2
                hello = {"k": "hello", "node": "n1", "inst": origin}
                while ask(hello)["k"] != "welcome" and time.monotonic() < deadline:
                    pass
                stop = threading.Event()

                def keep() -> None:
                    beat = {"k": "beat", "node": "n1", "inst": origin, "applied": 0}
                    while not stop.is_set():
                        ask({**beat, "digest": "", "log": log_id})
                        stop.wait(0.5)

                keeper = threading.Thread(target=keep, daemon=True)
                keeper.start()
                try:
                    assert n1.add_cue("own-1", "0").result(6) > seq, "the node cannot submit"
                finally:
                    stop.set()
                    keeper.join()
                    imp.close()
        finally:
            req.close()
            ev.close()


# ------------------------------------------------------------------ sessions leak


def test_hellos_on_connections_that_already_closed_leave_sessions_forever(tmp_path: Path) -> None:
    """A peer sends hello and closes at once: when the close is handled before the hello,
    the hello opens a session for a dead pipe that nothing ever removes."""
    addr = ipc_address(tmp_path)
    with controller_thread(tmp_path / "ctl.db", addr) as ctl:
        core = ctl.controller.core
        assert core is not None
        for i in range(300):
            sock = pynng.Req0(dial=addr, send_timeout=2000)
            inst = origin_of(f"x{i}", "s")
            sock.send(orjson.dumps({"k": "hello", "node": f"x{i}", "inst": inst, "secret": "s"}))
            sock.close()
        stats = ctl.controller.stats
        wait_for(
            "every hello handled, and no session of a closed connection kept",
            lambda: stats["requests"] >= 300 and not core.sessions,
            10,
        )


# ------------------------------------------------------------------ the show key


def _key_file(path: Path, *, san: str = "cuelog", after: int = 2099, before: int = 2000) -> Path:
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not keygen's")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.datetime(before, 1, 1, tzinfo=datetime.UTC))
        .not_valid_after(datetime.datetime(after, 1, 1, tzinfo=datetime.UTC))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ) + cert.public_bytes(serialization.Encoding.PEM)
    path.write_bytes(pem)
    path.chmod(0o600)
    return path


@pytest.mark.parametrize(
    "kind", ["other-hostname", "expired", "not-yet-valid"], ids=["host", "expired", "future"]
)
def test_a_key_file_that_can_never_connect_is_refused_at_load(tmp_path: Path, kind: str) -> None:
    """Such a file loads, and then every connection (both sides holding the very same file)
    fails with 'the controller does not hold this show key'."""
    choices: dict[str, dict[str, Any]] = {
        "other-hostname": {"san": "show.local"},
        "expired": {"after": 2020},
        "not-yet-valid": {"before": 2090},
    }
    options = choices[kind]
    path = _key_file(tmp_path / "show.key", **options)
    with pytest.raises(KeyFileError):
        ShowKey.load(path)


def test_cuelog_key_in_the_environment_breaks_engine_code_on_an_ipc_hub(tmp_path: Path) -> None:
    """README: `CUELOG_KEY=show.key` is read by engine code on the seed API too. An engine
    whose hub is ipc:// (on this machine) then fails with a raw ValueError naming --key."""
    key = generate(tmp_path / "show.key")
    code = (
        "from replicas.compat import NodesHub\n"
        f"h = NodesHub('ipc://{tmp_path}/hub.ipc', NodesHub.Mode.LISTENER)\n"
        "print('started')\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, KEY_ENV: str(key.path)},
    )
    assert "Traceback" not in run.stderr, run.stderr[-600:]


def test_the_demo_works_with_cuelog_key_exported(tmp_path: Path) -> None:
    """With CUELOG_KEY exported the demo's controller and nodes (children, same environment)
    speak TLS but the demo's own client has no key: 'timed out waiting for both nodes online'."""
    key = generate(tmp_path / "show.key")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        ws = probe.getsockname()[1]
    run = subprocess.run(
        [sys.executable, "-m", "tools.cli", "demo", "--duration", "3", "--ws", f"127.0.0.1:{ws}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, KEY_ENV: str(key.path), "PYTHONPATH": str(Path.cwd())},
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-600:]


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(KEY_ENV, raising=False)
    yield
