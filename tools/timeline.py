"""A picture of a show: `replay timeline LOG -o FILE` (self-contained SVG, or HTML around it).

A time axis in the show's zone; one lane per node with its cues as bars from start to end,
coloured by outcome; GO/STOP/LOAD markers across every lane (refused ones dashed red);
offline stretches shaded and restarts marked. Hovering any mark shows its event (SVG
``<title>``, which every browser shows as a tooltip). Cues that overlap on a node are stacked
in sub-rows, so a 3-hour show with 500 cues stays readable; the picture widens with the show.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Callable
from pathlib import Path
from typing import Final

from tools.formats import clock, duration
from tools.reading import atomic_output
from tools.show import OUTCOMES, CueRun, NodeLife, Show

Scale = Callable[[float], float]

COLOURS: Final = {
    "played": "#2e9d52",
    "stopped": "#e0a100",
    "error": "#d62c2c",
    "refused": "#8e44ad",
    "unfinished": "#8a8f98",
}
MARKERS: Final = {"go": "#1f6feb", "stop": "#e67e22", "load": "#222222", "unload": "#555555"}
LEFT: Final = 150
TOP: Final = 70
ROW: Final = 16
LANE_GAP: Final = 14
#: width per minute of show (px), within these bounds
PX_PER_MIN: Final = 14.0
MIN_WIDTH: Final = 1120
MAX_WIDTH: Final = 24000
#: the width a cue bar of typical length gets (px), so its label fits
MIN_BAR: Final = 48.0
#: GO markers closer than this (px, on average) become ticks on the axis, not lines
DENSE_GO: Final = 12.0
#: tick spacings (seconds): the first that gives at most 16 ticks
TICKS: Final = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400)


#: characters XML 1.0 does not allow (an accepted id may hold them): shown as U+FFFD
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _esc(text: str) -> str:
    return html.escape(_NOT_XML.sub("\ufffd", text), quote=True)


def _rows(runs: list[CueRun], end_ts: float) -> list[list[CueRun]]:
    """Stack runs into sub-rows where none overlaps another."""
    rows: list[list[CueRun]] = []
    ends: list[float] = []
    for run in sorted(runs, key=lambda r: r.start_ts):
        stop = run.end_ts if run.end_ts is not None else end_ts
        for i, last in enumerate(ends):
            if run.start_ts >= last:
                rows[i].append(run)
                ends[i] = max(stop, run.start_ts + 1e-3)
                break
        else:
            rows.append([run])
            ends.append(max(stop, run.start_ts + 1e-3))
    return rows or [[]]


def render_svg(show: Show, title: str) -> str:
    """The timeline of `show` as one SVG document (no external resources)."""
    tz = show.tz
    start = show.first_ts if show.first_ts is not None else 0.0
    end = show.last_ts if show.last_ts is not None else start + 1.0
    end = max(end, start + 1.0)
    # wide enough that a typical cue bar is readable (scroll the HTML), within bounds
    lengths = sorted((r.end_ts if r.end_ts is not None else end) - r.start_ts for r in show.runs)
    typical = lengths[len(lengths) // 2] if lengths else 0.0
    per_second = max(PX_PER_MIN / 60, MIN_BAR / typical if typical > 0 else 0.0)
    width = int(min(MAX_WIDTH, max(MIN_WIDTH, LEFT + 40 + (end - start) * per_second)))
    span_px = width - LEFT - 40

    def x(ts: float) -> float:
        return LEFT + (ts - start) / (end - start) * span_px

    nodes = sorted(show.nodes) or []
    by_node: dict[str, list[CueRun]] = {node: [] for node in nodes}
    for run in show.runs:
        by_node.setdefault(run.node or "?", []).append(run)
    lanes = [(node, _rows(by_node[node], end)) for node in sorted(by_node)]
    height = TOP + sum(len(rows) * ROW + LANE_GAP for _, rows in lanes) + 70
    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        "<style>rect.cue:hover,line.mark:hover{stroke:#000;stroke-width:2}</style>",
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="10" y="18" font-size="14" font-weight="bold">{_esc(title)}</text>',
        f'<text x="10" y="34" fill="#555">{_esc(_subtitle(show, start, end))}</text>',
    ]
    # time axis: a tick every `step` seconds, on round clock times
    seconds = end - start
    # a label at least every ~90 px apart, on round clock times
    step = next((t for t in TICKS if t * span_px / seconds >= 90), TICKS[-1])
    fmt = "%H:%M:%S" if step < 60 else "%H:%M"
    axis_y = TOP - 8
    offset = dt.datetime.fromtimestamp(start, tz).utcoffset() or dt.timedelta()
    local_start = start + offset.total_seconds()
    ts = start + (-local_start % step)
    while ts <= end:
        px = x(ts)
        out.append(
            f'<line x1="{px:.1f}" y1="{axis_y}" x2="{px:.1f}" y2="{height - 60}" stroke="#e4e6ea"/>'
        )
        out.append(
            f'<text x="{px:.1f}" y="{axis_y - 4}" text-anchor="middle" fill="#444">'
            f"{dt.datetime.fromtimestamp(ts, tz).strftime(fmt)}</text>"
        )
        ts += step
    # lanes
    y = TOP
    for node, rows in lanes:
        lane_h = len(rows) * ROW
        out.append(
            f'<text x="{LEFT - 8}" y="{y + min(lane_h, ROW) - 4}" text-anchor="end" '
            f'font-weight="bold">{_esc(node)}</text>'
        )
        out.append(f'<rect x="{LEFT}" y="{y}" width="{span_px}" height="{lane_h}" fill="#f7f8fa"/>')
        life = show.nodes.get(node)
        if life is not None:
            out.extend(_offline(life, start, end, x, y, lane_h, tz))
        for r, row in enumerate(rows):
            for run in row:
                out.append(_bar(run, x, y + r * ROW, end, tz))
        y += lane_h + LANE_GAP
    # command markers across every lane (GOs as ticks on the axis when they come thick)
    gos = sum(1 for m in show.markers if m.command == "go" and m.refused is None)
    dense = gos > 1 and span_px / gos < DENSE_GO
    for mark in show.markers:
        colour = MARKERS.get(mark.command)
        if colour is None:
            continue
        refused = mark.refused is not None
        px = x(mark.ts)
        if dense and mark.command == "go" and not refused:
            out.append(
                f'<line class="mark" x1="{px:.1f}" y1="{TOP - 6}" x2="{px:.1f}" y2="{TOP}" '
                f'stroke="{colour}" stroke-width="1.5"><title>'
                f"{_esc(f'GO at {clock(mark.ts, tz)} (seq {mark.seq}) by {mark.sender}')}"
                "</title></line>"
            )
            continue
        tip = (
            f"{mark.command.upper()} at {clock(mark.ts, tz)} (seq {mark.seq}) by {mark.sender}"
            + (f": REFUSED, {mark.refused}" if refused else "")
        )
        dash = ' stroke-dasharray="4 3"' if refused else ""
        out.append(
            f'<line class="mark" x1="{px:.1f}" y1="{TOP - 4}" x2="{px:.1f}" y2="{y - LANE_GAP}" '
            f'stroke="{"#d62c2c" if refused else colour}" stroke-width="1.5"{dash}>'
            f"<title>{_esc(tip)}</title></line>"
        )
    out.extend(_legend(height - 40))
    out.append("</svg>")
    return "\n".join(out)


def _subtitle(show: Show, start: float, end: float) -> str:
    day = dt.datetime.fromtimestamp(start, show.tz).strftime("%Y-%m-%d")
    counts = {o: sum(1 for r in show.runs if r.outcome == o) for o in OUTCOMES}
    refused = sum(1 for m in show.markers if m.refused is not None)
    parts = ", ".join(f"{n} {o}" for o, n in counts.items() if n)
    return (
        f"log {show.log_id} · {day} {clock(start, show.tz, ms=False)}-"
        f"{clock(end, show.tz, ms=False)} ({duration(end - start)}, times in {show.tz_name}) · "
        f"{len(show.runs)} cue runs{': ' + parts if parts else ''} · "
        f"{len(show.markers)} commands, {refused} refused"
    )


def _bar(run: CueRun, x: Scale, y: int, end: float, tz: dt.tzinfo) -> str:
    stop = run.end_ts if run.end_ts is not None else end
    x0 = x(run.start_ts)
    w = max(2.0, x(stop) - x0)
    tip = (
        f"{run.cue} on {run.node}: {run.outcome} · {clock(run.start_ts, tz)}"
        + (f"-{clock(run.end_ts, tz)}" if run.end_ts is not None else " to the end")
        + f" · seq {run.start_seq}"
        + (f"-{run.end_seq}" if run.end_seq is not None else "")
        + (f" · GO seq {run.go_seq}" if run.go_seq is not None else "")
        + (f" · {run.why}" if run.why else "")
    )
    label = (
        f'<text x="{x0 + 3:.1f}" y="{y + ROW - 5}" fill="#fff" font-size="10" '
        f'pointer-events="none">{_esc(run.cue)}</text>'
        if w > 7 * len(run.cue)
        else ""
    )
    return (
        f'<rect class="cue" x="{x0:.1f}" y="{y + 1}" width="{w:.1f}" height="{ROW - 2}" rx="2" '
        f'fill="{COLOURS[run.outcome]}"><title>{_esc(tip)}</title></rect>{label}'
    )


def _offline(
    life: NodeLife, start: float, end: float, x: Scale, y: int, h: int, tz: dt.tzinfo
) -> list[str]:
    out: list[str] = []
    cursor = start
    gaps: list[tuple[float, float, str]] = []
    for period in life.periods:
        if period.joined_ts > cursor:
            gaps.append((cursor, period.joined_ts, "offline"))
        cursor = period.left_ts if period.left_ts is not None else end + 1
    if cursor < end:
        gaps.append((cursor, end, "offline"))
    for a, b, what in gaps:
        x0, x1 = x(a), x(b)
        if x1 - x0 < 0.5:
            continue
        tip = f"{life.node} {what} {clock(a, tz)}-{clock(b, tz)} ({duration(b - a)})"
        out.append(
            f'<rect x="{x0:.1f}" y="{y}" width="{x1 - x0:.1f}" height="{h}" fill="#c9ccd1" '
            f'fill-opacity="0.6"><title>{_esc(tip)}</title></rect>'
        )
    for r in life.restarts:
        px = x(r["ts"])
        tip = (
            f"{life.node} restarted at {clock(r['ts'], tz)}: away {r.get('away_s')} s, "
            f"resumed from seq {r.get('resumed_from')} by {r.get('catchup')}"
        )
        out.append(
            f'<line class="mark" x1="{px:.1f}" y1="{y}" x2="{px:.1f}" y2="{y + h}" '
            f'stroke="#000" stroke-width="3"><title>{_esc(tip)}</title></line>'
        )
        out.append(f'<text x="{px + 3:.1f}" y="{y + 10}" font-size="10">restart</text>')
    return out


def _legend(y: int) -> list[str]:
    out: list[str] = []
    px = LEFT
    for outcome in OUTCOMES:
        out.append(f'<rect x="{px}" y="{y}" width="12" height="12" fill="{COLOURS[outcome]}"/>')
        out.append(f'<text x="{px + 16}" y="{y + 10}">{outcome}</text>')
        px += 90
    for name, colour in MARKERS.items():
        out.append(
            f'<line x1="{px}" y1="{y - 1}" x2="{px}" y2="{y + 13}" stroke="{colour}" '
            'stroke-width="2"/>'
        )
        out.append(f'<text x="{px + 5}" y="{y + 10}">{name.upper()}</text>')
        px += 70
    out.append(
        f'<line x1="{px}" y1="{y - 1}" x2="{px}" y2="{y + 13}" stroke="#d62c2c" '
        'stroke-width="2" stroke-dasharray="4 3"/>'
    )
    out.append(f'<text x="{px + 5}" y="{y + 10}">refused</text>')
    px += 80
    out.append(f'<rect x="{px}" y="{y}" width="12" height="12" fill="#c9ccd1"/>')
    out.append(f'<text x="{px + 16}" y="{y + 10}">offline</text>')
    return out


def write(show: Show, path: str | Path, title: str) -> Path:
    """Write the timeline to `path`: ``.html`` gets a page around the SVG, else plain SVG."""
    path = Path(path)
    svg = render_svg(show, title)
    if path.suffix.lower() in (".html", ".htm"):
        text = (
            "<!doctype html>\n<html><head><meta charset='utf-8'>"
            f"<title>{_esc(title)}</title>"
            "<style>body{margin:12px;font-family:sans-serif}div{overflow-x:auto}</style>"
            f"</head><body><div>{svg}</div></body></html>\n"
        )
    else:
        text = '<?xml version="1.0" encoding="UTF-8"?>\n' + svg + "\n"
    with atomic_output(path) as out:
        out.write(text)
    return path
