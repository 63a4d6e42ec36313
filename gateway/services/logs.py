"""The gateway's hash-chained logs (consent log, admin audit log), stored one entry per row, with
Merkle roots and proofs over their entries for anchoring on chain."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from privacy.hashchain import ChainEntry, HashChain, verify_chain
from privacy.merkle import MerkleTree

from ..models import AuditLogEntry, ConsentLogEntry, LogEntry

LOG_MODELS: dict[str, type[LogEntry]] = {"consent-log": ConsentLogEntry, "audit-log": AuditLogEntry}


def _lock(session: Session, model: type[LogEntry]) -> None:
    """Serialise appends to one log: each entry commits to the one before."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": model.__tablename__})
    # SQLite: write transactions already start with BEGIN IMMEDIATE (see db.py).


def append(session: Session, model: type[LogEntry], payload: dict[str, Any], now: datetime, **columns) -> LogEntry:
    _lock(session, model)
    last = session.execute(select(model.seq, model.entry_hash).order_by(model.seq.desc()).limit(1)).first()
    chain = HashChain(head=(last.seq, last.entry_hash) if last else None)
    entry = chain.append(payload)
    row = entry.to_row()
    record = model(seq=entry.seq, payload=row["payload_json"], prev_hash=entry.prev_hash,
                   entry_hash=entry.entry_hash, created_at=now, **columns)
    session.add(record)
    session.flush()
    return record


def as_chain_entry(record: LogEntry) -> ChainEntry:
    return ChainEntry.from_row({"seq": record.seq, "payload_json": record.payload,
                                "prev_hash": record.prev_hash, "entry_hash": record.entry_hash})


def entries(session: Session, model: type[LogEntry], start: int = 0, limit: int | None = None) -> list[LogEntry]:
    query = select(model).where(model.seq >= start).order_by(model.seq)
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query))


def size(session: Session, model: type[LogEntry]) -> int:
    last = session.scalar(select(model.seq).order_by(model.seq.desc()).limit(1))
    return 0 if last is None else last + 1


def tree(session: Session, model: type[LogEntry], tree_size: int | None = None) -> MerkleTree:
    """The Merkle tree over the first `tree_size` entries (all by default)."""
    records = entries(session, model, 0, tree_size)
    return MerkleTree([as_chain_entry(r).leaf() for r in records])


def verify(session: Session, model: type[LogEntry]):
    """Check the whole stored chain (links and hashes)."""
    return verify_chain([as_chain_entry(r) for r in entries(session, model)])
