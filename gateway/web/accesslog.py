"""The access log names paths, never secrets: query values other than a few are redacted.

uvicorn logs each request line with its query string, and receipts once travelled as
``?receipt=`` (13 of them in one review's log). The gateway no longer reads credentials from
the query, but a client may still put one there, so the log keeps only the values of the
serving parameters and shortens the rest to their names.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl, quote

# Query parameters whose values are safe and useful in a log line.
KEPT = frozenset({"lang", "region", "site", "rule", "gpc", "format", "group", "from", "to"})
MAX_VALUE = 32
MAX_PARAMS = 8


def redact_target(target: str) -> str:
    """``/path?lang=de&receipt=v1.x`` → ``/path?lang=de&receipt=…``."""
    path, sep, query = target.partition("?")
    if not sep:
        return target
    pairs = parse_qsl(query, keep_blank_values=True)
    shown = []
    for name, value in pairs[:MAX_PARAMS]:
        name = quote(name[:MAX_VALUE], safe="")
        if name in KEPT:
            shown.append(f"{name}={quote(value[:MAX_VALUE], safe='')}")
        else:
            shown.append(f"{name}=…")
    if len(pairs) > MAX_PARAMS:
        shown.append(f"…{len(pairs) - MAX_PARAMS} more")
    return f"{path}?{'&'.join(shown)}"


class RedactQuery(logging.Filter):
    """Rewrites the target in uvicorn's access records: (client, method, target, version,
    status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], redact_target(args[2]), args[3], args[4])
        return True


def install() -> None:
    """Attach the filter to uvicorn's access logger (idempotent)."""
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactQuery) for f in logger.filters):
        logger.addFilter(RedactQuery())
