"""RFC 3339 timestamps in UTC with second precision (``2025-03-01T08:30:00Z``).

One fixed spelling matters because timestamps end up inside signed and hashed
bytes: ``+00:00`` versus ``Z`` or a stray microsecond would change a signature.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

_RFC3339_UTC_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")


def format_rfc3339(moment: datetime) -> str:
    """Format an aware datetime as UTC, second precision, with a ``Z`` suffix."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("timestamp must be timezone-aware")
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_now_rfc3339() -> str:
    """The current time as :func:`format_rfc3339` spells it."""
    return format_rfc3339(datetime.now(UTC))


def parse_rfc3339(text: str) -> datetime:
    """Parse exactly the spelling :func:`format_rfc3339` produces; raise ``ValueError`` otherwise."""
    if not isinstance(text, str) or not _RFC3339_UTC_RE.fullmatch(text):
        raise ValueError("timestamp must look like 2025-01-31T23:59:59Z (UTC, second precision)")
    return datetime.fromisoformat(text)  # Python 3.11+ reads the "Z" suffix as UTC
