"""The status page (``GET /``) in a real headless Chromium against a real controller and gateway.

Chromium is driven over the DevTools protocol on a websocket (the ``websockets`` library the
gateway already uses), so no browser-automation package is needed. Without Debian's chromium
the tests are skipped, except in CI (``CI`` or ``CUELOG_CI`` set, as ``.ci/run`` does), where
they fail: ``.ci/run`` installs chromium when it is missing.

Every wait is on a condition in the page with a deadline. The screenshot of the rendered page
is kept in the test's tmp_path and in ``test-artifacts/status-page.png`` under the repo.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import time
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from eventlog import CONTROLLER, ActionType, Operation, OperationType
from tests.cluster import ipc_address, replay_serve
from tests.gateway_rig import GatewayThread, command, gateway_thread

pytestmark = pytest.mark.timeout(90)

REPO = Path(__file__).resolve().parents[1]
ARTIFACT = REPO / "test-artifacts" / "status-page.png"
WIDTH, HEIGHT = 1280, 800


# --------------------------------------------------------------------------- the browser


def chromium_binary() -> str:
    """Debian's chromium, or fail (in CI) or skip (elsewhere) saying how to get it."""
    for candidate in (
        os.environ.get("CUELOG_CHROMIUM"),
        "/usr/bin/chromium",
        shutil.which("chromium"),
    ):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    why = (
        "the status page tests need Debian's chromium at /usr/bin/chromium "
        "(apt-get install chromium; .ci/run installs it when missing)"
    )
    if os.environ.get("CI") or os.environ.get("CUELOG_CI"):
        pytest.fail(f"chromium is missing in CI: {why}")
    pytest.skip(why)


def _http_json(url: str, method: str = "GET") -> Any:
    request = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(request, timeout=5) as reply:
        return json.loads(reply.read())


class Browser:
    """A headless Chromium process and its DevTools HTTP port."""

    def __init__(self, binary: str, profile: Path, logfile: Path) -> None:
        self.profile = profile
        self.logfile = logfile
        with open(logfile, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    binary,
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-extensions",
                    "--mute-audio",
                    "--hide-scrollbars",
                    f"--window-size={WIDTH},{HEIGHT}",
                    f"--user-data-dir={profile}",
                    "--remote-debugging-address=127.0.0.1",
                    "--remote-debugging-port=0",
                    "about:blank",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.port = self._wait_port(20.0)

    def log_tail(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def _wait_port(self, timeout: float) -> int:
        marker = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError, ValueError, IndexError):
                return int(marker.read_text().splitlines()[0])
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"chromium exited with {self.proc.returncode} before it opened DevTools:\n"
                    + self.log_tail()
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"chromium did not write {marker} within {timeout:g} s:\n" + self.log_tail()
                )
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(0.05)

    def new_page(self) -> dict[str, Any]:
        target: dict[str, Any] = _http_json(
            f"http://127.0.0.1:{self.port}/json/new?about:blank", method="PUT"
        )
        return target

    def close_page(self, target_id: str) -> None:
        with contextlib.suppress(OSError):
            urllib.request.urlopen(
                f"http://127.0.0.1:{self.port}/json/close/{target_id}", timeout=5
            ).close()

    def stop(self) -> None:
        proc = self.proc
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        # chromium's helpers (zygote, renderers) live in the session started for it
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    binary = chromium_binary()
    with tempfile.TemporaryDirectory(prefix="cuelog-chromium-") as folder:
        started = Browser(binary, Path(folder) / "profile", Path(folder) / "chromium.log")
        try:
            yield started
        finally:
            started.stop()


# --------------------------------------------------------------------------- DevTools protocol


class PageError(AssertionError):
    pass


class Page:
    """One browser tab spoken to over the DevTools protocol."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.next_id = 0
        self.calls: dict[int, asyncio.Future[dict[str, Any]]] = {}
        #: console lines and uncaught exceptions of the page, for failure messages
        self.console: list[str] = []
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.conn:
                message = json.loads(raw)
                if "id" in message:
                    future = self.calls.pop(message["id"], None)
                    if future is not None and not future.done():
                        future.set_result(message)
                elif message.get("method") == "Runtime.consoleAPICalled":
                    params = message["params"]
                    words = [str(a.get("value", a.get("description", ""))) for a in params["args"]]
                    self.console.append(f"console.{params['type']}: {' '.join(words)}")
                elif message.get("method") == "Runtime.exceptionThrown":
                    details = message["params"]["exceptionDetails"]
                    text = details.get("exception", {}).get("description", details.get("text"))
                    self.console.append(f"uncaught: {text}")
        except ConnectionClosed:
            pass
        finally:
            for future in self.calls.values():
                if not future.done():
                    future.set_exception(PageError("the DevTools connection closed"))

    async def call(self, method: str, timeout: float = 10.0, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        number = self.next_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.calls[number] = future
        await self.conn.send(json.dumps({"id": number, "method": method, "params": params}))
        async with asyncio.timeout(timeout):
            reply = await future
        if "error" in reply:
            raise PageError(f"{method} failed: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def js(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-able values only)."""
        result = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description", details.get("text"))
            raise PageError(f"{expression!r} threw: {text}")
        return result["result"].get("value")

    async def until(self, what: str, expression: str, timeout: float = 10.0) -> Any:
        """Evaluate `expression` until it is truthy; fail after `timeout` s saying `what`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last: Any = None
        while True:
            last = await self.js(expression)
            if last:
                return last
            if loop.time() > deadline:
                raise AssertionError(
                    f"timed out after {timeout:g} s waiting for {what} (last value {last!r}); "
                    f"page console: {self.console[-10:]}"
                )
            await asyncio.sleep(0.05)

    async def text(self, selector: str) -> str | None:
        found = await self.js(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " return e ? e.textContent : null; })()"
        )
        return None if found is None else str(found)

    async def screenshot(self) -> bytes:
        result = await self.call(
            "Page.captureScreenshot", format="png", captureBeyondViewport=False
        )
        return base64.b64decode(result["data"])

    async def close(self) -> None:
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader
        await self.conn.close()


@contextlib.asynccontextmanager
async def open_page(browser: Browser, url: str) -> Any:
    target = browser.new_page()
    conn = await connect(
        target["webSocketDebuggerUrl"], max_size=64 * 2**20, open_timeout=10, ping_interval=None
    )
    page = Page(conn)
    try:
        await page.call("Runtime.enable")
        await page.call("Page.enable")
        await page.call(
            "Emulation.setDeviceMetricsOverride",
            width=WIDTH,
            height=HEIGHT,
            deviceScaleFactor=1,
            mobile=False,
        )
        await page.call("Page.navigate", url=url)
        await page.until("the page to load", "document.readyState === 'complete'")
        yield page
    finally:
        await page.close()
        browser.close_page(target["id"])


# --------------------------------------------------------------------------- the show


def status(sender: str, target: str, **data: Any) -> Operation:
    return Operation(OperationType.STATUS, ActionType.UPDATE, sender, target, data)


def cue(action: ActionType, node: str, cue_id: str, **data: Any) -> Operation:
    return Operation(OperationType.CUE, action, node, cue_id, {"id": cue_id, **data})


def rows(selector: str) -> str:
    return f"[...document.querySelectorAll({json.dumps(selector)})]"


CUE_IDS = f"{rows('tr[data-cue]')}.map(r => r.dataset.cue).join(',')"


def cue_status(cue_id: str) -> str:
    return f"document.querySelector('tr[data-cue=\"{cue_id}\"] td.status')?.textContent"


def data_value(element_id: str) -> str:
    return f"document.getElementById({json.dumps(element_id)}).dataset.value"


def check_png(data: bytes) -> tuple[int, int]:
    """(width, height) of a PNG that has real content; fails on a blank or broken image."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    pos, idat = 8, b""
    while pos < len(data):
        (size,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + size]
        pos += 12 + size
    pixels = zlib.decompress(idat)
    assert len(set(pixels[:: max(1, len(pixels) // 200_000)])) > 32, "the screenshot is blank"
    assert len(data) > 20_000, f"a {len(data)}-byte screenshot is too small to show the page"
    return width, height


async def loaded_show(rig: GatewayThread, page: Page) -> None:
    """Load a three-cue show on node n1 and wait until the page shows it."""
    rig.append(
        status(CONTROLLER, "node_joined", node="n1"),
        command("load", "show", cues=["c1", "c2", "c3"], nodes=["n1"]),
    )
    await page.until("the show's name", f"{data_value('load')} === 'show'")
    await page.until("three cues", f"{CUE_IDS} === 'c1,c2,c3'")
    await page.until(
        "the connection indicator", "document.getElementById('conn').dataset.state === 'connected'"
    )


# --------------------------------------------------------------------------- tests


async def test_the_page_shows_the_show_live_and_go_becomes_a_command_event(
    browser: Browser, tmp_path: Path
) -> None:
    with gateway_thread(tmp_path / "c.db", ipc_address(tmp_path)) as rig:
        async with open_page(browser, rig.http + "/") as page:
            await loaded_show(rig, page)
            for cue_id in ("c1", "c2", "c3"):
                assert await page.js(cue_status(cue_id)) == "0"
            assert await page.js(data_value("armed")) == "no"
            await page.until(
                "node n1 online",
                "document.querySelector('[data-node=\"n1\"]')?.dataset.online === '1'",
            )

            # changes appear live, without a reload
            rig.append(
                status("n1", "armed_ready", armed="yes"),
                status(CONTROLLER, "nextcue", nextcue="c2"),
                command("cue_enabled", "c3 0"),
                command("player_control", 0.8, address="/n1/audio/mixer/0/1/volume"),
                command("player_control", 0.35, address="/n1/audio/mixer/0/master/volume"),
            )
            await page.until("armed", f"{data_value('armed')} === 'yes'")
            await page.until("the next cue", f"{data_value('nextcue')} === 'c2'")
            await page.until(
                "c3 disabled", "document.querySelector('tr[data-cue=\"c3\"]').dataset.enabled==='0'"
            )
            await page.until(
                "a mixer row",
                "document.querySelector('tr[data-mixer=\"n1/0/1\"] td.num')?.textContent==='0.80'",
            )

            # GO on the page becomes a command event from the UI
            await page.js("document.getElementById('go').click()")
            await page.until(
                "the reply to GO", "document.getElementById('reply').dataset.status === 'ok'"
            )
            go = rig.get("/state")["state"]["commands"]["go"]
            assert go["sender"].startswith("ui:"), go
            assert go["accepted"] is True
            await page.until("running", f"{data_value('running')} === 'yes'")

            # cues play: progress bars and statuses follow the log
            rig.append(
                cue(ActionType.ADD, "n1", "c1", offset="0"),
                cue(ActionType.UPDATE, "n1", "c1", percentage=40),
                status("n1", "timecode", value=83_000),
            )
            await page.until("c1 at 40 %", f"{cue_status('c1')} === '40'")
            assert await page.text("#timecode") == "01:23"
            rig.append(
                cue(ActionType.REMOVE, "n1", "c1"),
                cue(ActionType.ADD, "n1", "c2", offset="0"),
                cue(ActionType.UPDATE, "n1", "c2", percentage=65),
                status(CONTROLLER, "nextcue", nextcue="c3"),
            )
            await page.until("c1 played", f"{cue_status('c1')} === '100'")
            await page.until("c2 at 65 %", f"{cue_status('c2')} === '65'")
            head = rig.get("/state")["seq"]
            await page.until(
                "the head seq", f"document.getElementById('seq').textContent==='{head}'"
            )
            await page.until(
                "the cluster poll", f"document.getElementById('head').textContent === '{head}'"
            )
            assert not [line for line in page.console if line.startswith("uncaught")], page.console

            png = await page.screenshot()
    assert check_png(png) == (WIDTH, HEIGHT)
    (tmp_path / "status-page.png").write_bytes(png)
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_bytes(png)


async def test_the_page_resumes_after_a_drop_and_forgets_what_a_new_show_removed(
    browser: Browser, tmp_path: Path
) -> None:
    with gateway_thread(tmp_path / "c.db", ipc_address(tmp_path)) as rig:
        async with open_page(browser, rig.http + "/") as page:
            await loaded_show(rig, page)
            log_id = rig.get("/state")["log_id"]
            assert await page.js("window.cuelog.logId") == log_id
            # the socket drops; a change happens meanwhile; the page resumes from its seq
            await page.js("window.cuelog.dropConnection()")
            await page.until(
                "the reconnecting indicator",
                "document.getElementById('conn').dataset.state === 'reconnecting'",
            )
            rig.append(command("cue_enabled", "c2 0"))
            await page.until(
                "the page to reconnect",
                "document.getElementById('conn').dataset.state === 'connected'",
            )
            url = await page.js("window.cuelog.url")
            assert "/realtime?since=" in url and f"log={log_id}" in url, url
            await page.until(
                "the change made while away",
                "document.querySelector('tr[data-cue=\"c2\"]').dataset.enabled === '0'",
            )
            # a new show replaces the cue list: cues of the old show are forgotten
            rig.append(command("load", "other", cues=["d1", "d2"]))
            await page.until("the new show", f"{data_value('load')} === 'other'")
            await page.until("only the new cues", f"{CUE_IDS} === 'd1,d2'")


async def test_a_denied_command_asks_for_the_passcode_then_retries(
    browser: Browser, tmp_path: Path
) -> None:
    with gateway_thread(tmp_path / "c.db", ipc_address(tmp_path)) as rig:
        async with open_page(browser, rig.http + "/") as page:
            await loaded_show(rig, page)
            core = rig.gateway.core
            assert core is not None

            async def close_down() -> None:  # on the gateway's loop
                core.read_only = "take control first"

            async def open_up() -> None:
                core.read_only = None
                core.policy.passcode = "1234"

            # loopback always controls, so refuse commands the way a replay gateway does
            rig.call(close_down())
            await page.js("document.getElementById('stop').click()")
            await page.until("the passcode prompt", "document.getElementById('passdlg').open")
            assert await page.js("document.getElementById('reply').dataset.status") == "denied"
            rig.call(open_up())
            await page.js(
                "document.getElementById('passcode').value = 'nope';"
                "document.getElementById('passform').requestSubmit()"
            )
            await page.until(
                "a wrong passcode message",
                "document.getElementById('passmsg').textContent.includes('Wrong')",
            )
            await page.js(
                "document.getElementById('passcode').value = '1234';"
                "document.getElementById('passform').requestSubmit()"
            )
            await page.until(
                "the prompt to close", "!document.getElementById('passdlg').open", timeout=5
            )
            await page.until(
                "the retried STOP",
                "document.getElementById('reply').textContent.includes('command/stop → ok')",
            )
            stop = rig.get("/state")["state"]["commands"]["stop"]
            assert stop["sender"].startswith("ui:"), stop


async def test_the_page_says_replay_and_offers_no_commands_under_replay_serve(
    browser: Browser, tmp_path: Path
) -> None:
    """`replay serve` behind the same page: a REPLAY badge with the position, GO/PAUSE/STOP
    disabled (the gateway would answer them `denied`), the recorded show on screen."""
    from eventlog import EventLog

    db = tmp_path / "show.db"
    with EventLog.open(db, role="controller") as elog:
        elog.append(command("load", "recorded-show", cues=["r1", "r2"]))
        elog.append(status("n1", "nextcue", nextcue="r2"))
    with replay_serve(db) as port:
        async with open_page(browser, f"http://127.0.0.1:{port}/") as page:
            await page.until("the badge", "!document.getElementById('replay').hidden")
            await page.until(
                "the end of the recording",
                "document.getElementById('replay').textContent.includes('seq 2/2')",
            )
            assert await page.js("document.getElementById('go').disabled") is True
            assert await page.js("document.getElementById('stop').disabled") is True
            await page.until("the recorded show", f"{data_value('load')} === 'recorded-show'")
            shot = await page.screenshot()
            check_png(shot)
            (tmp_path / "replay-page.png").write_bytes(shot)


async def test_the_page_follows_the_leader_to_the_standby_s_gateway(
    browser: Browser, tmp_path: Path
) -> None:
    """A hot standby: the page is opened on the leader's gateway, learns every candidate's
    gateway from /cluster, and when the leader is killed it reconnects to the new leader's."""
    from tests.ha_rig import Candidates, Etcd, free_port

    etcd = await asyncio.to_thread(Etcd, tmp_path / "etcd")
    rig = Candidates(tmp_path, etcd.endpoints, ["a", "b"])
    ws = {name: f"127.0.0.1:{free_port()}" for name in ("a", "b")}
    try:
        rig.start("a", "--ws", ws["a"])
        assert await asyncio.to_thread(rig.wait_leader) == "a"
        rig.start("b", "--ws", ws["b"])
        await asyncio.to_thread(rig.wait_synchronous, "a")
        async with open_page(browser, f"http://{ws['a']}/") as page:
            await page.until("connected to a", "window.cuelog.connected")
            await page.until(
                "both gateways known", f"window.cuelog.gateways.includes({json.dumps(ws['b'])})"
            )
            await page.until(
                "the cluster line",
                "document.getElementById('cluster-note').textContent.includes('leader a')",
            )
            rig.kill9("a")
            await page.until(
                "connected to b's gateway",
                f"window.cuelog.connected && window.cuelog.gateway === {json.dumps(ws['b'])}",
                timeout=30,
            )
            await page.until(
                "b named as leader",
                "document.getElementById('cluster-note').textContent.includes('leader b')",
                timeout=10,
            )
            shot = await page.screenshot()
            check_png(shot)
            (tmp_path / "failover-page.png").write_bytes(shot)
    finally:
        rig.stop_all()
        etcd.close()
