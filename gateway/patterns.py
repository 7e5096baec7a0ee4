"""OSC 1.0 address patterns, and the table of application OSC handlers that uses them.

`compile_pattern` turns ``* ? [..] [!..] {..}`` into a regular expression (use ``fullmatch``);
`OscRouter` finds the handler of an address: an exact address from a dict first, then the
patterns in registration order (compiled once; the first match wins). No I/O.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any, Final

OscHandler = Callable[[str, list[Any]], Any]

_WILDCARDS: Final = frozenset("*?[]{}")


def unprintable(text: str) -> bool:
    """Whether `text` holds whitespace or control characters (no OSC address we take may)."""
    return any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in text)


def is_pattern(text: str) -> bool:
    """Whether `text` uses any OSC 1.0 pattern syntax (else it is an exact address)."""
    return any(c in _WILDCARDS for c in text)


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """An OSC 1.0 address pattern as a regular expression (use ``fullmatch``).

    ``?`` is one character and ``*`` any run of characters, neither crossing ``/``;
    ``[abc]``, ``[a-z]`` one of those characters, ``[!...]`` one not among them (never
    ``/``; a ``-`` first or last is literal); ``{foo,bar}`` one of the strings. Every other
    character is itself. Raises `ValueError` naming what is wrong.
    """
    if not isinstance(pattern, str) or not pattern.startswith("/"):
        raise ValueError(f"an OSC address pattern starts with '/': {pattern!r}")
    if unprintable(pattern):
        raise ValueError(f"an OSC address pattern has no spaces or control characters: {pattern!r}")
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            regex, i = _char_class(pattern, i)
            out.append(regex)
        elif c == "{":
            regex, i = _alternatives(pattern, i)
            out.append(regex)
        elif c in "]}":
            raise ValueError(f"{pattern!r}: {c!r} at {i} closes nothing")
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out))


def _char_class(pattern: str, start: int) -> tuple[str, int]:
    """``[...]`` at `start` -> (regex, index after ``]``)."""
    i = start + 1
    negate = i < len(pattern) and pattern[i] == "!"
    if negate:
        i += 1
    items: list[str] = []
    while True:
        if i >= len(pattern):
            raise ValueError(f"{pattern!r}: '[' at {start} is never closed")
        c = pattern[i]
        if c == "]":
            break
        if c in "[{}":
            raise ValueError(f"{pattern!r}: {c!r} inside [...] at {i}")
        if i + 2 < len(pattern) and pattern[i + 1] == "-" and pattern[i + 2] != "]":
            low, high = c, pattern[i + 2]
            if low > high:
                raise ValueError(f"{pattern!r}: range {low}-{high} at {i} runs backwards")
            items.append(f"{re.escape(low)}-{re.escape(high)}")
            i += 3
        else:
            items.append(re.escape(c))
            i += 1
    if not items:
        raise ValueError(f"{pattern!r}: empty [...] at {start}")
    body = "".join(items)
    # neither form may match '/': a character class never crosses a part of the address
    return (f"[^/{body}]" if negate else f"(?!/)[{body}]"), i + 1


def _alternatives(pattern: str, start: int) -> tuple[str, int]:
    """``{a,b}`` at `start` -> (regex, index after ``}``)."""
    end = pattern.find("}", start + 1)
    if end < 0:
        raise ValueError(f"{pattern!r}: '{{' at {start} is never closed")
    body = pattern[start + 1 : end]
    nested = sorted(set(body) & set("*?[]{"))
    if nested:
        raise ValueError(f"{pattern!r}: {''.join(nested)!r} inside {{...}} at {start}")
    return "(?:" + "|".join(re.escape(word) for word in body.split(",")) + ")", end + 1


class OscRouter:
    """Handlers by exact address (a dict) and by pattern (compiled once, first match wins).

    Registration may happen on any thread while the loop matches: patterns are kept in a
    tuple that is replaced, never changed in place.
    """

    def __init__(self) -> None:
        self._exact: dict[str, OscHandler] = {}
        self._patterns: tuple[tuple[str, re.Pattern[str], OscHandler], ...] = ()
        self._lock = threading.Lock()

    def register(self, pattern: str, handler: OscHandler) -> None:
        """Add (or replace, keeping its place) the handler of `pattern`."""
        if not is_pattern(pattern):
            compile_pattern(pattern)  # the same checks as a pattern
            self._exact[pattern] = handler
            return
        compiled = compile_pattern(pattern)
        with self._lock:
            found = [p for p in self._patterns if p[0] == pattern]
            if found:
                self._patterns = tuple(
                    (p[0], compiled, handler) if p[0] == pattern else p for p in self._patterns
                )
            else:
                self._patterns = (*self._patterns, (pattern, compiled, handler))

    def unregister(self, pattern: str) -> bool:
        if self._exact.pop(pattern, None) is not None:
            return True
        with self._lock:
            kept = tuple(p for p in self._patterns if p[0] != pattern)
            removed = len(kept) != len(self._patterns)
            self._patterns = kept
        return removed

    def match(self, address: str) -> OscHandler | None:
        handler = self._exact.get(address)
        if handler is not None:
            return handler
        for _, compiled, found in self._patterns:
            if compiled.fullmatch(address):
                return found
        return None
