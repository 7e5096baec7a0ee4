"""cuelog's pure core and its SQLite store.

Operations (the upstream ``NodeOperation`` shape) are validated into `Operation`s, accepted into
numbered `Event`s, folded by `apply` into a `State` whose `digest` is the same everywhere, and
kept in an `EventLog` file with periodic `Snapshot`s.
"""

from eventlog.errors import (
    CuelogError,
    DecodeError,
    InputError,
    LogFileError,
    UsageError,
    ValidationError,
)
from eventlog.event import Event, decode_event, dumps, encode_event, event_from_dict, loads
from eventlog.operation import (
    MAX_DATA_BYTES,
    ActionType,
    Operation,
    OperationType,
    OpId,
    Submission,
    check_node_id,
    validate_op_id,
    validate_operation,
    validate_submission,
)
from eventlog.reducer import CONTROLLER, LEADER, NODE_JOINED, NODE_LEFT, apply, fires, fold
from eventlog.snapshot import Snapshot, restore, take
from eventlog.state import State, digest
from eventlog.store import DEFAULT_SNAPSHOT_EVERY, SCHEMA_VERSION, AppendResult, EventLog

__version__ = "0.1.0"

__all__ = [
    "CONTROLLER",
    "DEFAULT_SNAPSHOT_EVERY",
    "LEADER",
    "MAX_DATA_BYTES",
    "NODE_JOINED",
    "NODE_LEFT",
    "SCHEMA_VERSION",
    "ActionType",
    "AppendResult",
    "CuelogError",
    "DecodeError",
    "Event",
    "EventLog",
    "InputError",
    "LogFileError",
    "OpId",
    "Operation",
    "OperationType",
    "Snapshot",
    "State",
    "Submission",
    "UsageError",
    "ValidationError",
    "__version__",
    "apply",
    "check_node_id",
    "decode_event",
    "digest",
    "dumps",
    "encode_event",
    "event_from_dict",
    "fires",
    "fold",
    "loads",
    "restore",
    "take",
    "validate_op_id",
    "validate_operation",
    "validate_submission",
]
