"""Exceptions of the event log.

`CuelogError` is the root of every error cuelog raises on purpose. Bad input from a peer or a
user (`ValidationError`, `DecodeError`) is kept apart from a damaged or foreign log file
(`LogFileError`) and from a caller using the API in the wrong state (`UsageError`).
"""

from __future__ import annotations


class CuelogError(Exception):
    """Root of every error cuelog raises on purpose."""


class InputError(CuelogError):
    """Input from a peer, a file or a user was refused. Nothing was changed."""


class ValidationError(InputError):
    """An operation breaks one rule.

    `field` names where (``"data.percentage"``, ``"type"``, ``"$"`` for the whole value) and
    `rule` names the rule (``"unknown-type"``, ``"not-finite"`` …) so callers can test on it.
    """

    def __init__(self, field: str, rule: str, detail: str) -> None:
        self.field = field
        self.rule = rule
        self.detail = detail
        #: position in a batch, set by `EventLog.append_batch`
        self.index: int | None = None
        super().__init__(f"{field}: {detail} [{rule}]")

    def to_dict(self) -> dict[str, str]:
        return {"field": self.field, "rule": self.rule, "detail": self.detail}


class DecodeError(InputError):
    """Bytes that should hold an encoded value could not be decoded."""


class LogFileError(CuelogError):
    """A log file cannot be used: not a cuelog log, a newer schema, or damaged.

    The message names the file and says what to do next.
    """

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class UsageError(CuelogError):
    """The API was called in a state where the call makes no sense (a caller bug)."""
