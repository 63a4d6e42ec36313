"""The append-only, hash-chained log of administrative actions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from ..models import AuditLogEntry
from . import logs


def record(session: Session, actor: str, action: str, now: datetime, **details: Any) -> AuditLogEntry:
    payload = {"actor": actor, "action": action, "at": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "details": details}
    return logs.append(session, AuditLogEntry, payload, now)
