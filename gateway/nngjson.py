"""JSON over the controller's local NNG channels (the editor's, nodeconf's, hwdiscovery's).

Both ways a message is one JSON document of at most `MAX_JSON_BYTES`, UTF-8, with no NaN or
infinity. `loads` and `dumps` are those rules; each channel says what a bad message means.
"""

from __future__ import annotations

import json
from typing import Any, Final

#: largest editor request or service reply accepted
MAX_JSON_BYTES: Final = 16 * 1024 * 1024


def loads(raw: bytes) -> Any:
    """One JSON document from `raw`. Raises ValueError saying why it is not one."""
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValueError(str(exc)) from None


def dumps(message: Any) -> bytes:
    """`message` as JSON bytes. Raises ValueError (or TypeError) if JSON cannot carry it."""
    return json.dumps(message, allow_nan=False).encode()
