"""Personal models of released global models (federation.personalise), kept in the brand's database.

Each is written by the brand's ClientApp at the end of a federated run and read by campaign scoring;
it never leaves the gateway. One per global model: a retried adaptation replaces it.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, insert, select

from gateway.models import PersonalModel


def store(conn: Any, *, global_sha256: str, task: str, choice: str, model: bytes) -> str:
    """Keep ``model`` as this brand's personal model of the global model ``global_sha256``; returns its SHA-256."""
    digest = hashlib.sha256(model).hexdigest()
    conn.execute(delete(PersonalModel).where(PersonalModel.global_sha256 == global_sha256))
    conn.execute(insert(PersonalModel).values(global_sha256=global_sha256, task=task, choice=choice, model=model,
                                              model_sha256=digest, created_at=datetime.now(UTC)))
    return digest


def load(conn: Any, global_sha256: str) -> bytes | None:
    """The personal model of that global model, or None; refused if its bytes no longer hash to what was stored."""
    row = conn.execute(select(PersonalModel.model, PersonalModel.model_sha256)
                       .where(PersonalModel.global_sha256 == global_sha256)).first()
    if row is None:
        return None
    if hashlib.sha256(row.model).hexdigest() != row.model_sha256:
        raise ValueError("the personal model's bytes do not match their recorded SHA-256")
    return bytes(row.model)
