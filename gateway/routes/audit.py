from __future__ import annotations

import json

from typing import Literal

from fastapi import APIRouter, Depends, Path, Query
from sqlalchemy import select

from ..auth import Principal, allow
from ..db import as_utc, reading
from ..errors import Conflict, NotFound
from ..models import LogAnchor
from ..runtime import Gateway
from ..schemas import MAX_DB_INT, ProcessingKind, ProcessingsPage
from ..services import liability, logs, processings, reconcile
from . import AUTH, gateway, problems

router = APIRouter(prefix="/v1/audit", tags=["audit"])
reader = allow("auditor", "operator")
LogKind = Literal["consent-log", "audit-log"]
assert set(LogKind.__args__) == set(logs.LOG_MODELS) and set(ProcessingKind.__args__) == set(processings.KINDS)


def _model(kind: str):
    return logs.LOG_MODELS[kind]


def _entry(r) -> dict:
    # created_at is outside the hashed entry: an auditor uses it only to order events within the signed
    # second of the receipt (a processing and a withdrawal in the same second).
    return {"seq": r.seq, "payload": json.loads(r.payload), "prev_hash": r.prev_hash, "entry_hash": r.entry_hash,
            "created_at": as_utc(r.created_at).isoformat()}


@router.get("/logs/{kind}", responses=problems(*AUTH, 503), summary="Entries of a hash-chained log (consent-log or audit-log)")
def log_entries(kind: LogKind, start: int = Query(0, ge=0, le=MAX_DB_INT), limit: int = Query(500, ge=1, le=5000),
                who: Principal = Depends(reader), gw: Gateway = Depends(gateway)) -> dict:
    with reading(gw.sessions) as session:
        model = _model(kind)
        return {"kind": kind, "size": logs.size(session, model), "entries": [_entry(r) for r in logs.entries(session, model, start, limit)]}


@router.get("/logs/{kind}/verification", responses=problems(*AUTH, 503), summary="Re-check the whole hash chain of a log")
def verify_log(kind: LogKind, who: Principal = Depends(reader), gw: Gateway = Depends(gateway)) -> dict:
    with reading(gw.sessions) as session:
        result = logs.verify(session, _model(kind))
        return {"kind": kind, "ok": result.ok, "checked": result.checked, "first_bad_seq": result.first_bad_seq, "reason": result.reason}


@router.get("/logs/{kind}/anchors", responses=problems(*AUTH, 503),
            summary="Roots posted on chain, each with a consistency proof from the one before")
def anchors(kind: LogKind, who: Principal = Depends(reader), gw: Gateway = Depends(gateway)) -> list[dict]:
    with reading(gw.sessions) as session:
        model = _model(kind)
        rows = list(session.scalars(select(LogAnchor).where(LogAnchor.kind == kind).order_by(LogAnchor.period)))
        tree = logs.tree(session, model)
        out, previous = [], None
        for a in rows:
            proof = tree.consistency_proof(previous.size, a.size) if previous is not None else []
            out.append({"period": a.period, "size": a.size, "root": a.root, "tx_hash": a.tx_hash, "block_number": a.block_number,
                        "consistency_from_previous": [p.hex() for p in proof]})
            previous = a
        return out


@router.get("/logs/{kind}/{seq}/proof", responses=problems(*AUTH, 404, 409, 503),
            summary="An entry with its inclusion proof against the latest anchored root")
def proof(kind: LogKind, seq: int = Path(ge=0, le=MAX_DB_INT), who: Principal = Depends(reader), gw: Gateway = Depends(gateway)) -> dict:
    with reading(gw.sessions) as session:
        model = _model(kind)
        record = session.get(model, seq)
        if record is None:
            raise NotFound("no such entry")
        anchor = session.scalars(select(LogAnchor).where(LogAnchor.kind == kind, LogAnchor.size > seq)
                                 .order_by(LogAnchor.period.desc()).limit(1)).first()
        if anchor is None:
            raise Conflict("this entry is not covered by an anchored root yet")
        tree = logs.tree(session, model, anchor.size)
        return {"entry": _entry(record), "leaf_index": seq, "tree_size": anchor.size,
                "proof": [p.hex() for p in tree.inclusion_proof(seq, anchor.size)],
                "anchor": {"period": anchor.period, "root": anchor.root, "tx_hash": anchor.tx_hash,
                           "block_number": anchor.block_number, "brand": gw.brand_address}}


@router.get("/reconciliation", responses=problems(*AUTH, 503), summary="Ledger invariants, and every exchange and redemption against chain events")
def reconciliation(who: Principal = Depends(reader), gw: Gateway = Depends(gateway)) -> dict:
    with reading(gw.sessions) as session:
        books = reconcile.ledger_report(session)
        chain = reconcile.chain_report(session, gw)
        return {"ok": books["ok"] and chain["ok"], "ledger": books, "chain": chain}


@router.get("/liability", responses=problems(*AUTH, 503),
            summary="The brand's points liability: issued, spent, exchanged, expired, clawed back, donated, outstanding and its value")
def liability_report(who: Principal = Depends(reader), gw: Gateway = Depends(gateway)) -> dict:
    with reading(gw.sessions) as session:
        return liability.report(session, gw)


@router.get("/processings", response_model=ProcessingsPage, responses=problems(*AUTH, 400, 503),
            summary="Every processing that relied on consent (exchange, redemption, training, campaign), one item per member")
def processing_list(kind: ProcessingKind | None = Query(None),
                    since: str | None = Query(None, max_length=60, description="the `next` cursor of the previous page"),
                    limit: int = Query(1000, ge=1, le=5000), who: Principal = Depends(reader), gw: Gateway = Depends(gateway)) -> dict:
    with reading(gw.sessions) as session:
        return processings.page(session.connection(), kind, since, limit)
