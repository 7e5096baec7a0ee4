"""The printed report of ``cuelog bench gateway``: its table of rows, then the latency by hop
and, for each missed target, which part of the path took the time.

Each row reads one figure of `tools.bench.gateway_measure`; the ratios are formed by the
`Ratio` s the measurements store in the JSON figures too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

from tools.bench.common import Figures
from tools.bench.gateway_dump import RATIOS as DUMP_RATIOS
from tools.bench.gateway_latency import PARTS
from tools.bench.gateway_measure import FAN_RATIO, FLOOR_RATIO
from tools.bench.gateway_sizes import LOAD_RATE
from tools.bench.table import Row, Section, Target, print_report, whole_run

TARGET_DUMP_MS: Final = 100.0
TARGET_IDLE_P50_MS: Final = 1.5
TARGET_IDLE_P99_MS: Final = 3.0
TARGET_LOADED_P99_MS: Final = 10.0


def _dump_target(key: str) -> Target:
    return Target("<", TARGET_DUMP_MS, " ms", key=key)


def _both(key: str, fmt: str = ".1f") -> str:
    """The lean / websockets clients' figure `key` under a part of the dump."""
    return f"{{{key}[lean][p50_ms]:{fmt}}} / {{{key}[websockets][p50_ms]:{fmt}}}"


def _baseline_server(key: str, label: str) -> Section:
    return Section(
        f"dump.{key}",
        label,
        (Row(f"{label}, lean / websockets client", _both(key.join(["top[dump][", "]"])), "ms"),),
        optional=True,
    )


def _p50_p99(key: str, label: str) -> Row:
    return Row(label, f"{{{key}[p50_ms]:.2f}} / {{{key}[p99_ms]:.2f}}", "ms")


def _never_fired(lat: Figures) -> str:
    idle, loaded = lat["idle"], lat["loaded"]
    lost = sum(p["commands"] - p["fired"] for p in (idle, loaded))
    return f"{lost} / {idle['refused'] + loaded['refused']}"


def _resyncs_drops(gw: Figures) -> int:
    return int(gw.get("server_resyncs", 0)) + int(gw.get("server_drops", 0))


SECTIONS: Final = (
    Section(
        "dump",
        "dump",
        (
            Row("dump: {cues:,} cues, {mixer_channels:,} mixer channels", "{messages:,} msgs"),
            Row(
                "  GatewayCore: connect + take until empty, p50",
                "{core[p50_ms]:.2f}",
                "ms",
                baseline="{naive[p50_ms]:.2f} ms python-osc",
                ratio=DUMP_RATIOS["core_vs_naive"],
                target=_dump_target("core.p50_ms"),
            ),
            Row(
                "    of which connect (the copy of the address map)",
                "{core[connect_p50_ms]:.2f}",
                "ms",
            ),
            Row("    first dump of a process (address cache cold)", "{core[cold_ms]:.2f}", "ms"),
            Row(
                "  baseline: python-osc OscMessageBuilder, same messages",
                "{naive[p50_ms]:.2f}",
                "ms",
            ),
            Row("    same bytes as the gateway's", "{naive[same_bytes]}"),
            Row(
                "  lean client (frames counted), connect -> dump_end, p50",
                "{gateway[lean][p50_ms]:.1f}",
                "ms",
                baseline="{raw_send[lean][p50_ms]:.1f} ms await send",
                ratio=DUMP_RATIOS["lean_vs_raw_send"],
                target=_dump_target("gateway.lean.p50_ms"),
            ),
            Row(
                "    first connection (the server's caches cold)",
                "{gateway[lean][first_ms]:.1f}",
                "ms",
            ),
            Row(
                "    of which the websocket handshake",
                "{gateway[lean][handshake_p50_ms]:.1f}",
                "ms",
            ),
            Row(
                "  websockets client (asyncio), connect -> dump_end, p50",
                "{gateway[websockets][p50_ms]:.1f}",
                "ms",
                baseline="{raw_send[websockets][p50_ms]:.1f} ms await send",
                ratio=DUMP_RATIOS["websockets_vs_raw_send"],
                target=_dump_target("gateway.websockets.p50_ms"),
            ),
        ),
    ),
    _baseline_server("raw_send", "  baseline: bare server, await send per frame"),
    _baseline_server("raw_write", "  baseline: bare server, broadcast write per frame"),
    _baseline_server("raw_batch", "  baseline: bare server, one write per 256 frames"),
    Section(
        "dump.big_show_reply",
        "  command reply with this show loaded",
        (
            _p50_p99(
                "top[dump][big_show_reply]",
                "  cue_enabled command -> durable reply with this show loaded, p50 / p99",
            ),
            _p50_p99(
                "top[dump][big_show_commit]",
                "    of which the commit in its worker thread, p50 / p99",
            ),
            Row(
                "    digest of the controller's state (after the answers, off their path)",
                "{top[dump][state_digest_ms]:.2f}",
                "ms",
            ),
        ),
    ),
    Section(
        "dump",
        "dump",
        (
            Row(
                "  (once per log open: fold / StatusView of the state)",
                "{fold_ms:.0f} / {view_build_ms:.0f}",
                "ms",
            ),
        ),
    ),
    Section("fanout", "fan-out"),
    Section(
        "fanout.gateway",
        "fan-out to the websocket clients",
        (
            Row("fan-out to {clients} websocket clients, {events:,} events of one message each"),
            Row("  events/s delivered to every client", "{events_s:,.0f}", "ev/s"),
            Row("  messages/s sent (events x clients)", "{messages_s:,.0f}", "/s"),
            Row(
                "  events/s committed meanwhile (append_local, durable)",
                "{committed_events_s:,.0f}",
                "ev/s",
            ),
            Row(
                "  first / last client complete after", "{first_client_s:.2f} / {seconds:.2f}", "s"
            ),
            Row(
                "  server CPU (the whole process) per message sent",
                "{server_cpu_us_per_message:.1f}",
                "µs",
            ),
            Row("  the 50 clients' CPU (one process)", "{bench_clients_cpu_s:.2f}", "s"),
            Row(
                "  resyncs / drops",
                lambda gw: f"{gw.get('server_resyncs', 0)} / {gw.get('server_drops', 0)}",
                target=Target("==", 0, key=_resyncs_drops, shown="0 / 0"),
            ),
        ),
    ),
    *(
        Section(
            f"fanout.{key}",
            label,
            (
                Row(label, "{events_s:,.0f}", "ev/s"),
                Row("    its CPU per message sent", "{server_cpu_us_per_message:.1f}", "µs"),
            ),
        )
        for key, label in (
            ("raw_broadcast", "  baseline: bare server, websockets broadcast per frame"),
            ("raw_batch", "  baseline: bare server, one write per client per 256 frames"),
        )
    ),
    Section(
        "fanout",
        "fan-out",
        (
            Row(
                "  ratio gateway / bare broadcast",
                "{gateway[events_s]:,.0f} / {raw_broadcast[events_s]:,.0f}",
                "ev/s",
                ratio=FAN_RATIO,
            ),
        ),
    ),
    Section(
        "latency",
        "command latency",
        (
            Row(
                "command latency, websocket GO -> node callback ({idle[commands]:,} a phase, "
                "~{idle[rate]:.0f}/s)"
            ),
        ),
    ),
    Section(
        "latency.idle",
        "  idle",
        (
            Row(
                "  idle p50",
                "{total[p50_ms]:.2f}",
                "ms",
                target=Target("<", TARGET_IDLE_P50_MS, " ms", key="total.p50_ms"),
            ),
            Row(
                "  idle p99",
                "{total[p99_ms]:.2f}",
                "ms",
                target=Target("<", TARGET_IDLE_P99_MS, " ms", key="total.p99_ms"),
            ),
        ),
    ),
    Section(
        "latency.loaded",
        "  loaded",
        (
            Row(
                "  loaded ({top[latency][load][rate]:,.0f} ev/s background, asked "
                f"{LOAD_RATE:,}) p50",
                "{total[p50_ms]:.2f}",
                "ms",
            ),
            Row(
                "  loaded p99",
                "{total[p99_ms]:.2f}",
                "ms",
                target=Target("<", TARGET_LOADED_P99_MS, " ms", key="total.p99_ms"),
            ),
        ),
    ),
    Section(
        "latency",
        "command latency",
        (Row("  GOs that never fired / refused", _never_fired),),
    ),
    Section(
        "floor",
        "floor",
        (
            Row("floor, same run: p50 / p99"),
            _p50_p99("commit", "  one sqlite3 FULL commit of one row"),
            _p50_p99("ws_round_trip", "  websockets round trip, loopback"),
            _p50_p99("nng_round_trip", "  NNG REQ/REP round trip, loopback"),
            _p50_p99("floor", "  floor: the commit + both round trips"),
        ),
    ),
    Section(
        "",
        "ratio idle p50 / floor p50",
        (
            Row(
                "  ratio idle p50 / floor p50",
                "{latency[idle][total][p50_ms]:.2f} / {floor[floor][p50_ms]:.2f}",
                "ms",
                ratio=FLOOR_RATIO,
            ),
        ),
    ),
)


def print_gateway(figures: Figures) -> None:
    """The gateway suite's table, the latency by hop, and where the time of a miss went."""
    quick = " (quick)" if figures.get("quick") else ""
    report = print_report(
        f"cuelog gateway bench: controller log synchronous=FULL, tcp loopback, every role its "
        f"own process, {figures.get('cpus')} CPUs (load average "
        f"{figures.get('loadavg_1m', 0.0):.1f} at the start){quick}",
        SECTIONS,
        figures,
    )
    for line in _breakdown(figures.get("latency", {})):
        print(line)
    for line in _where_time_goes(figures, report.missed):
        print(line)
    for line in whole_run(figures):
        print(line)


def _num(value: Any, fmt: str = ".2f", unit: str = " ms") -> str:
    return "n/a" if not isinstance(value, int | float) else f"{value:{fmt}}{unit}"


def _pair(part: Figures, key: str = "p50_ms") -> str:
    return f"{_num(part['lean'][key], '.1f', '')} / {_num(part['websockets'][key], '.1f')}"


def _breakdown(lat: Figures) -> Iterator[str]:
    """The command latency split by hop, and the CPU each process used."""
    idle, loaded = lat.get("idle", {}), lat.get("loaded", {})
    if "total" not in idle or "total" not in loaded:
        return
    width = max(len(label) for _, label in PARTS) + 2
    yield ""
    yield f"{'where a command spends its time, ms':<{width}}  idle p50   p99  loaded p50   p99"
    for key, label in PARTS:
        a, b = idle[key], loaded[key]
        yield (
            f"  {label:<{width - 2}}  {_num(a['p50_ms'], '8.2f', '')} "
            f"{_num(a['p99_ms'], '5.2f', '')}  {_num(b['p50_ms'], '10.2f', '')} "
            f"{_num(b['p99_ms'], '5.2f', '')}"
        )
    for phase, part in (("idle", idle), ("loaded", loaded)):
        cpu = ", ".join(f"{k} {_num(v, '.2f', '')}" for k, v in part.get("cpu_s", {}).items())
        yield f"  CPU s used in the {phase} phase ({part['seconds']:.1f} s): {cpu}"


def _where_time_goes(figures: Figures, missed: list[str]) -> Iterator[str]:
    """One sentence per missed target saying which part of the path took the time."""
    dump = figures.get("dump", {})
    if any("dump_end" in m or "GatewayCore" in m for m in missed) and "gateway" in dump:
        gateway = dump["gateway"]
        send, batch = dump.get("raw_send", {}), dump.get("raw_batch", {})
        yield (
            f"missed (dump): GatewayCore makes the {dump['messages']:,} frames in "
            f"{dump['core']['p50_ms']:.1f} ms; the rest is the socket: connect -> dump_end "
            f"takes {_pair(gateway)} (lean / websockets client), a bare server sending the "
            f"same frames with one await send each {_pair(send) if 'lean' in send else 'n/a'}, "
            f"and writing them 256 frames at a time {_pair(batch) if 'lean' in batch else 'n/a'}."
        )
    big, commit = dump.get("big_show_reply", {}), dump.get("big_show_commit", {})
    if isinstance(big.get("p50_ms"), float) and big["p50_ms"] > TARGET_IDLE_P50_MS:
        yield (
            f"note: with the {dump['cues']:,}-cue show loaded a command's durable reply takes "
            f"{big['p50_ms']:.2f} ms (p50), its commit {_num(commit.get('p50_ms'), '.2f')}; "
            f"a digest of the whole state takes {_num(dump.get('state_digest_ms'), '.2f')} "
            "at this size (done after the answers, between commits)."
        )
    lat, floor = figures.get("latency", {}), figures.get("floor", {})
    #: the floor figure each hop compares with
    floors = {
        "client_to_gateway": ("a websockets round trip", "ws_round_trip"),
        "commit": ("a raw sqlite FULL commit of one row", "commit"),
        "durable_to_applied": ("an NNG round trip", "nng_round_trip"),
    }
    for phase in ("idle", "loaded"):
        part = lat.get(phase, {})
        if "total" not in part:
            continue
        for q in ("p50", "p99"):
            if f"{phase} {q}" not in missed:
                continue
            key_q = f"{q}_ms"
            hops = sorted(
                ((part[key][key_q] or 0.0, key, label) for key, label in PARTS[:6]),
                reverse=True,
            )
            shares = []
            for value, key, label in hops:
                text = f"{label.split(' (')[0]} {value:.2f}"
                if key in floors and isinstance(floor.get(floors[key][1]), dict):
                    what, where = floors[key]
                    text += f" ({what}: {_num(floor[where][key_q], '.2f', '')})"
                shares.append(text)
            yield (
                f"missed ({phase} {q}, {_num(part['total'][key_q])}), biggest hop first, ms: "
                + "; ".join(shares)
            )
