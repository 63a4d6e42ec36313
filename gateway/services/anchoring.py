"""Post the Merkle root of a hash-chained log on chain (ConsentAnchor), so an auditor can check any
entry's inclusion proof against a root the brand cannot change afterwards."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db import transaction
from ..models import LogAnchor
from ..runtime import Gateway
from . import audit, logs
from .outbox import LEASE_S


def latest(session: Session, kind: str) -> LogAnchor | None:
    return session.scalars(select(LogAnchor).where(LogAnchor.kind == kind).order_by(LogAnchor.period.desc()).limit(1)).first()


def anchor(gw: Gateway, kind: str, actor: str) -> LogAnchor | None:
    """Anchor the log's current root as the next period; None when nothing new was logged. Sent as
    the brand's chain sender (in order with its batches, by whichever process holds its lease)."""
    from .alliance import sender

    with sender(gw).exclusive(wait_s=LEASE_S), transaction(gw.sessions) as session:
        return _anchor(session, gw, kind, actor, gw.now())


def _anchor(session: Session, gw: Gateway, kind: str, actor: str, now: datetime) -> LogAnchor | None:
    model = logs.LOG_MODELS[kind]
    size = logs.size(session, model)
    last = latest(session, kind)
    if size == 0 or (last is not None and last.size == size):
        return None
    root = logs.tree(session, model, size).root()
    period = 1 if last is None else last.period + 1
    tx = gw.transactor()
    receipt = gw.alliance.anchor.post(tx, kind, period, size, root)
    row = LogAnchor(kind=kind, period=period, size=size, root=root.hex(), tx_hash="0x" + bytes(receipt["transactionHash"]).hex(),
                    block_number=receipt["blockNumber"], anchored_at=now)
    session.add(row)
    audit.record(session, actor, "log.anchored", now, kind=kind, period=period, size=size, root=root.hex())
    return row
