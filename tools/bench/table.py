"""The printed report of every suite, driven by tables of rows.

A suite's report is a tuple of `Section` s, each a part of the figures (``at``, a dotted key
path such as ``"dump.core"``) and the `Row` s read from it. A row says:

- ``name``: what is measured, a ``str.format`` template over the section's figures;
- ``figure``: how the measured figure is read, a template (``"{ops_s:,.0f}"``) or a function
  of the section's figures, then its ``unit``;
- ``baseline``: the same-run baseline shown beside it (a template, with its unit);
- ``ratio``: how the ratio column is formed, a `Ratio` of two key paths in the section;
- ``target``: what the figure (or the ratio) is held to, and so the ``meets`` column.

A template may read the whole figures as ``top`` (``"{top[clients]}"``). A figure that is
missing or not a number prints ``n/a``; a section whose phase failed prints one ``error`` row
and its reason under the table, and the sections inside it print nothing. `render` returns
the lines and the names of missed targets.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from tools.bench.common import Figures, ratio

Text = str | Callable[[Figures], str]
HEADS: Final = ("measure", "figure", "baseline", "ratio", "target", "meets")
_OPS: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
}


def lookup(figures: Any, path: str) -> Any:
    """The value at dotted key path `path` (``""`` is `figures` itself), or None."""
    value = figures
    for key in path.split(".") if path else ():
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


@dataclass(frozen=True, slots=True)
class Ratio:
    """``top / bottom``: two dotted key paths, read from the same figures."""

    top: str
    bottom: str

    def of(self, figures: Figures) -> float | None:
        return ratio(lookup(figures, self.top), lookup(figures, self.bottom))


@dataclass(frozen=True, slots=True)
class Target:
    """A figure is held to ``figure <op> limit``; ``key`` says which figure (a key path in the
    section, ``"ratio"`` for the row's ratio, or a function of the section's figures). The
    ``unit`` is printed right after the limit: give it its leading space (``" ms"``)."""

    op: str
    limit: float | bool
    unit: str = ""
    key: str | Callable[[Figures], Any] = ""
    #: the target applies only to the items for which this says True
    applies: Callable[[Figures], bool] | None = None
    #: what the target column says, when not ``<op> <limit><unit>``
    shown: str = ""

    @property
    def text(self) -> str:
        if self.shown:
            return self.shown
        shown = str(self.limit) if isinstance(self.limit, bool) else f"{self.limit:,g}"
        op = "" if self.op == "==" else f"{self.op} "
        return f"{op}{shown}{self.unit}"

    def meets(self, value: Any) -> bool | None:
        if isinstance(self.limit, bool):
            return value is self.limit
        if not isinstance(value, int | float) or isinstance(value, bool):
            return None
        return _OPS[self.op](value, self.limit)


@dataclass(frozen=True, slots=True)
class Row:
    """One line of a report (see the module docstring); a row with no figure is a heading."""

    name: str
    figure: Text = ""
    unit: str = ""
    baseline: Text = ""
    ratio: Ratio | None = None
    ratio_format: str = ".2f"
    #: printed right after the ratio (``"x"``)
    ratio_unit: str = ""
    target: Target | None = None


@dataclass(frozen=True, slots=True)
class Section:
    """The rows read from one part of the figures (``at``, a dotted key path)."""

    at: str
    name: str
    rows: tuple[Row, ...] = ()
    #: when the part was not measured, print nothing (instead of an ``n/a`` row)
    optional: bool = False
    #: the part is a list: the rows once for each item
    each: bool = False
    #: print nothing unless the part has this key (so neither failed nor lacks the figure)
    when: str = ""


@dataclass(slots=True)
class Report:
    """A rendered table: its lines, the errors under it, and the names of missed targets."""

    lines: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)


def _fill(text: Text, part: Figures, top: Figures) -> str:
    if callable(text):
        try:
            return text(part)
        except (KeyError, TypeError, ValueError, IndexError):
            return "n/a"
    try:
        return text.format_map({**part, "top": top})
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        return "n/a"


def _with_unit(figure: str, unit: str) -> str:
    return f"{figure} {unit}" if figure and unit and figure != "n/a" else figure


def _cells(row: Row, part: Figures, top: Figures) -> tuple[tuple[str, ...], bool | None]:
    figure = _with_unit(_fill(row.figure, part, top), row.unit)
    baseline = _fill(row.baseline, part, top)
    value = None if row.ratio is None else row.ratio.of(part)
    shown = (
        ""
        if row.ratio is None
        else ("n/a" if value is None else f"{value:{row.ratio_format}}{row.ratio_unit}")
    )
    target, ok = "", None
    if row.target is not None and (row.target.applies is None or row.target.applies(part)):
        key = row.target.key
        if callable(key):
            try:
                checked = key(part)
            except (KeyError, TypeError, ValueError):
                checked = None
        else:
            checked = value if key == "ratio" else lookup(part, key)
        target, ok = row.target.text, row.target.meets(checked)
    meets = "" if ok is None else ("yes" if ok else "NO")
    return (_fill(row.name, part, top), figure, baseline, shown, target, meets), ok


def _under_failed(figures: Figures, at: str) -> bool:
    """Whether a part that holds `at` failed (an ``error`` figure above it)."""
    keys = at.split(".") if at else []
    for end in range(1, len(keys)):
        above = lookup(figures, ".".join(keys[:end]))
        if isinstance(above, Mapping) and "error" in above:
            return True
    return False


def _rows(
    sections: Sequence[Section], figures: Figures, report: Report
) -> Iterator[tuple[str, ...]]:
    notes: list[str] = []
    for section in sections:
        part = lookup(figures, section.at)
        if section.when and (not isinstance(part, Mapping) or section.when not in part):
            continue
        if _under_failed(figures, section.at):
            continue  # the failed part's own row says so
        if not part:
            if not section.optional:
                yield (section.name, "n/a", "", "", "", "")
            continue
        if isinstance(part, Mapping) and "error" in part:
            yield (section.name, "error", "", "", "", "")
            notes.append(f"error: {section.name.strip()}: {part['error']}")
            continue
        for item in part if section.each else [part]:
            for row in section.rows:
                cells, ok = _cells(row, item, figures)
                if ok is False:
                    report.missed.append(cells[0].strip())
                yield cells
    report.lines.extend(notes)  # printed after the table


def render(sections: Sequence[Section], figures: Figures) -> Report:
    """The table of `sections` over `figures`: aligned columns, empty ones left out."""
    report = Report()
    rows = list(_rows(sections, figures, report))
    notes, report.lines = report.lines, []
    used = [i for i in range(len(HEADS)) if i == 0 or any(r[i] for r in rows)]
    widths = {i: max(len(HEADS[i]), *(len(r[i]) for r in rows)) for i in used}
    right = {1, 2, 3}  # numbers line up on the right

    def line(cells: Sequence[str]) -> str:
        out = [
            f"{cells[i]:>{widths[i]}}" if i in right else f"{cells[i]:<{widths[i]}}" for i in used
        ]
        return "  ".join(out).rstrip()

    report.lines.append(line(HEADS))
    report.lines.extend(line(r) for r in rows)
    report.lines.extend(notes)
    return report


def print_report(title: str, sections: Sequence[Section], figures: Figures) -> Report:
    """Print `title` and the table of `sections`; return it (for the missed targets)."""
    report = render(sections, figures)
    print(title)
    for text in report.lines:
        print(text)
    return report


def whole_run(figures: Figures) -> Iterator[str]:
    """The closing line of a suite that timed its whole run."""
    if "elapsed_s" in figures:
        yield (
            f"(whole run {figures['elapsed_s']:.1f} s; figures vary with the machine: "
            "compare the ratios)"
        )
