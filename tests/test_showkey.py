"""The show key: with --key only peers that hold it can connect, read or submit (TLS).

Real TLS over loopback TCP (NNG's ``tls+tcp://``), real key files, real processes for the CLI.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pynng
import pytest

from eventlog import ActionType, Operation, OperationType
from replicas.client import ControllerClient, ControllerUnreachable
from replicas.showkey import KeyFileError, ShowKey, diagnose, generate, secure
from tests.cluster import ControllerThread, controller_thread, nodes, wait_for
from tools.bench.ha_cluster import Proxy
from tools.demo import free_port_pair


def free_tcp_pair() -> str:
    """A loopback tcp:// address whose port and the next one (events) are both free."""
    return f"tcp://127.0.0.1:{free_port_pair()}"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[ShowKey, ShowKey]:
    folder = tmp_path_factory.mktemp("keys")
    return generate(folder / "show.key"), generate(folder / "other.key")


@pytest.fixture
def keyed(
    tmp_path: Path, keys: tuple[ShowKey, ShowKey]
) -> Iterator[tuple[str, ControllerThread, ShowKey]]:
    addr = free_tcp_pair()
    with controller_thread(tmp_path / "ctl.db", addr, key=keys[0]) as ctl:
        yield addr, ctl, keys[0]


def cue(sender: str, n: int) -> Operation:
    return Operation(
        OperationType.CUE, ActionType.ADD, sender, f"c{n}", {"id": f"c{n}", "offset": "0"}
    )


# ------------------------------------------------------------------------------- the key file


def test_keygen_writes_a_private_file_and_never_overwrites_one(tmp_path: Path) -> None:
    path = tmp_path / "show.key"
    key = generate(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and key.warning is None
    assert len(key.fingerprint) == 16 and ShowKey.load(path).fingerprint == key.fingerprint
    with pytest.raises(KeyFileError, match="already exists"):
        generate(path)
    assert ShowKey.load(path).fingerprint == key.fingerprint, "a refused keygen changed the key"
    assert generate(path, force=True).fingerprint != key.fingerprint


def _pem_blocks(path: Path) -> tuple[bytes, bytes]:
    raw = path.read_bytes()
    cut = raw.index(b"-----BEGIN CERTIFICATE-----")
    return raw[:cut], raw[cut:]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "no show key at"),
        (b"", "holds no certificate"),
        (b"\x00\xff garbage" * 50, "holds no certificate"),
        ("cert-only", "no readable private key"),
        ("key-only", "holds no certificate"),
        ("swapped", "does not belong to its certificate"),
        ("truncated", "holds no certificate"),
        (b"x" * (64 * 1024 + 1), "not a show key"),
        ("directory", "is not a file"),
    ],
    ids=[
        "missing",
        "empty",
        "garbage",
        "cert-only",
        "key-only",
        "another-keys-cert",
        "truncated",
        "oversized",
        "directory",
    ],
)
def test_a_bad_key_file_is_one_clear_error(
    tmp_path: Path, keys: tuple[ShowKey, ShowKey], content: object, match: str
) -> None:
    path = tmp_path / "bad.key"
    key_a, cert_a = _pem_blocks(keys[0].path)
    _, cert_b = _pem_blocks(keys[1].path)
    if content == "cert-only":
        path.write_bytes(cert_a)
    elif content == "key-only":
        path.write_bytes(key_a)
    elif content == "swapped":
        path.write_bytes(key_a + cert_b)
    elif content == "truncated":
        path.write_bytes(key_a + cert_a[: len(cert_a) // 2])
    elif content == "directory":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(KeyFileError, match=match) as info:
        ShowKey.load(path)
    if content is not None and content != "directory" and "belong" not in match:
        assert "cuelog keygen" in str(info.value)


def test_a_key_others_can_read_is_warned_about(tmp_path: Path) -> None:
    path = tmp_path / "loose.key"
    generate(path)
    path.chmod(0o644)
    warning = ShowKey.load(path).warning
    assert warning is not None and "chmod 600" in warning


def test_addresses_with_and_without_a_key(keys: tuple[ShowKey, ShowKey]) -> None:
    key = keys[0]
    assert secure("tcp://10.0.0.5:9093", key) == "tls+tcp://10.0.0.5:9093"
    assert secure("tcp://10.0.0.5:9093", None) == "tcp://10.0.0.5:9093"
    with pytest.raises(ValueError, match="reachable only on this machine"):
        secure("ipc:///tmp/x.ipc", key)
    with pytest.raises(ValueError, match="--key"):
        secure("tls+tcp://10.0.0.5:9093", None)


# ------------------------------------------------------------------------- over real TLS


def test_nodes_with_the_key_replicate_and_submit(
    keyed: tuple[str, ControllerThread, ShowKey],
) -> None:
    addr, _, key = keyed
    with nodes(addr, ["a", "b"], key=key, request_timeout=5.0) as (a, b):
        assert a.wait_synced(10) and b.wait_synced(10)
        seqs = [a.replica.submit(cue("a", n)).result(10) for n in range(20)]
        wait_for("b has every op", lambda: b.replica.applied_seq >= seqs[-1], 10)
        assert sorted(b.replica.state.cues) == sorted(f"c{n}" for n in range(20))
    with ControllerClient(addr, key=key, timeout=5) as client:
        st = client.status()
    assert st["key"] == key.fingerprint and st["head_seq"] >= 20


def test_a_node_without_the_key_or_with_another_gets_nothing_and_says_why(
    keyed: tuple[str, ControllerThread, ShowKey], keys: tuple[ShowKey, ShowKey]
) -> None:
    addr, ctl, key = keyed
    core = ctl.controller.core
    assert core is not None
    with ControllerClient(addr, key=key, timeout=5) as client:
        assert "seq" in client.submit([cue("operator", 1)])[0]
    head = core.head
    with (
        nodes(addr, ["nokey"], request_timeout=1.0) as (nokey,),
        nodes(addr, ["wrongkey"], key=keys[1], request_timeout=1.0) as (wrong,),
    ):
        for comms in (nokey, wrong):
            with pytest.raises(TimeoutError):
                comms.replica.submit(cue(comms.replica.node_id, 9)).result(2)
        wait_for(
            "the reasons",
            lambda: bool(nokey.replica.unreachable_why and wrong.replica.unreachable_why),
            10,
        )
        assert "requires a show key" in nokey.replica.unreachable_why
        assert "does not hold this show key" in wrong.replica.unreachable_why
        assert nokey.replica.applied_seq == 0 and wrong.replica.applied_seq == 0
        assert "nokey" not in core.nodes and "wrongkey" not in core.nodes
    assert core.head == head, "a peer without the key appended something"


def test_raw_peers_without_the_key_can_neither_read_nor_ask(
    keyed: tuple[str, ControllerThread, ShowKey],
) -> None:
    addr, _, key = keyed
    port = int(addr.rsplit(":", 1)[1])
    spy = pynng.Sub0(recv_timeout=300)
    spy.subscribe(b"")
    spy.dial(f"tcp://127.0.0.1:{port + 1}", block=False)
    asker = pynng.Req0(recv_timeout=500, send_timeout=500)
    asker.dial(addr, block=False)
    try:
        with ControllerClient(addr, key=key, timeout=5) as client:
            for n in range(5):
                assert "seq" in client.submit([cue("operator", n)])[0]
        with pytest.raises(pynng.Timeout):
            spy.recv()
        with pytest.raises((pynng.Timeout, pynng.NNGException)):
            asker.send(orjson.dumps({"k": "status"}))
            asker.recv()
        assert "requires a show key" in diagnose(addr, None)
        with (
            pytest.raises(ControllerUnreachable, match="requires a show key"),
            ControllerClient(addr, timeout=0.5) as plain,
        ):
            plain.status()
    finally:
        spy.close()
        asker.close()


def test_a_replayed_tls_session_appends_nothing(
    keyed: tuple[str, ControllerThread, ShowKey],
) -> None:
    """Record, through a TCP relay, every byte a key holder sends (its hello and a submit),
    then send those bytes again on a new connection: TLS refuses them; nothing is appended
    and the controller keeps serving."""
    addr, ctl, key = keyed
    port = int(addr.rsplit(":", 1)[1])
    recorded = bytearray()
    relay = Proxy(port, record=recorded)
    core = ctl.controller.core
    assert core is not None
    with ControllerClient(f"tcp://127.0.0.1:{relay.port}", key=key, timeout=5) as client:
        assert "seq" in client.submit([cue("operator", 1)])[0]
    relay.close()
    head = core.head
    assert len(recorded) > 200, "the relay saw the session"
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as replay:
            replay.sendall(bytes(recorded))
            replay.settimeout(2)
            try:
                while replay.recv(65536):
                    pass
            except OSError:
                pass
    assert core.head == head, "a replayed session appended something"
    with ControllerClient(addr, key=key, timeout=5) as client:
        assert "seq" in client.submit([cue("operator", 2)])[0]


# ------------------------------------------------------------------------------- the CLI


def cli(
    *args: str, timeout: float = 30, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_the_cli_makes_and_uses_a_key(tmp_path: Path) -> None:
    key = tmp_path / "show.key"
    made = cli("keygen", str(key))
    assert made.returncode == 0 and "written to" in made.stdout, made.stderr
    again = cli("keygen", str(key))
    assert again.returncode == 1 and "--force" in again.stderr
    missing = cli("controller", "--db", str(tmp_path / "c.db"), "--key", str(tmp_path / "nope"))
    assert missing.returncode == 1 and "no show key at" in missing.stderr
    ipc = cli("status", "--controller", f"ipc://{tmp_path}/x.ipc", "--key", str(key))
    assert ipc.returncode == 1 and "reachable only on this machine" in ipc.stderr
    addr = free_tcp_pair()
    ctl = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tools.cli",
            "controller",
            "--db",
            str(tmp_path / "c.db"),
            "--listen",
            addr,
            "--ws",
            "off",
            "--key",
            str(key),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def answered() -> bool:
            return cli("status", "--controller", addr, env={"CUELOG_KEY": str(key)}).returncode == 0

        wait_for("status with the key", answered, 20)
        shown = cli("status", "--controller", addr, "--key", str(key))
        assert ShowKey.load(key).fingerprint in shown.stdout
        plain = cli("status", "--controller", addr, "--timeout", "0.5")
        assert plain.returncode == 1 and "requires a show key" in plain.stderr
    finally:
        ctl.terminate()
        ctl.wait(10)


def test_a_silent_listener_is_diagnosed_in_bounded_time(keys: tuple[ShowKey, ShowKey]) -> None:
    """Something accepts the connection and never speaks (a frozen controller): the TLS
    handshake would wait forever; the tools say so within their timeout instead of hanging."""
    import time

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        addr = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with (
            pytest.raises(ControllerUnreachable, match="does not answer"),
            ControllerClient(addr, key=keys[0], timeout=0.5) as client,
        ):
            client.status()
        assert time.monotonic() - started < 5
