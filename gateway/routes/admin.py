from __future__ import annotations

from fastapi import APIRouter, Depends, status

from ..auth import Principal, allow, create_api_key
from ..db import transaction
from ..errors import Conflict
from ..runtime import Gateway
from ..schemas import AnchorRequest, ApiKeyRequest
from ..services import alliance, anchoring, audit, ledger, outbox, tiers
from . import gateway

router = APIRouter(prefix="/v1/admin", tags=["operator"])
operator = allow("operator")


@router.post("/api-keys", status_code=status.HTTP_201_CREATED, summary="Issue an API key (shown once)")
def new_api_key(body: ApiKeyRequest, who: Principal = Depends(operator), gw: Gateway = Depends(gateway)) -> dict:
    with transaction(gw.sessions) as session:
        row, secret = create_api_key(session, body.role, body.label, gw.now())
        audit.record(session, who.subject, "apikey.created", gw.now(), key_id=row.id, role=body.role, label=body.label)
        return {"id": row.id, "role": row.role, "label": row.label, "secret": secret}


@router.post("/anchors", summary="Post the log's current Merkle root on chain now")
def anchor_now(body: AnchorRequest, who: Principal = Depends(operator), gw: Gateway = Depends(gateway)) -> dict:
    if gw.alliance is None:
        raise Conflict("this gateway is not connected to the alliance chain")
    with transaction(gw.sessions) as session:
        row = anchoring.anchor(session, gw, body.kind, who.subject, gw.now())
        if row is None:
            return {"anchored": False, "reason": "nothing logged since the last anchor"}
        return {"anchored": True, "period": row.period, "size": row.size, "root": row.root, "tx_hash": row.tx_hash}


@router.post("/maintenance", summary="Expire due points, review tiers and retry pending chain operations")
def maintenance(who: Principal = Depends(operator), gw: Gateway = Depends(gateway)) -> dict:
    return run_maintenance(gw, who.subject)


def run_maintenance(gw: Gateway, actor: str) -> dict:
    now = gw.now()
    with transaction(gw.sessions) as session:
        expired = ledger.expire_due(session, now)
        tiers.start_grace_where_due(session, gw.settings, now)
        downgraded = tiers.review(session, gw.settings, now)
        audit.record(session, actor, "maintenance", now, expired=expired, downgraded=downgraded)
    chain = outbox.process_all(gw, [alliance.EXCHANGE_JOB, alliance.REDEMPTION_JOB]) if gw.alliance else {}
    return {"points_expired": expired, "tiers_downgraded": downgraded, "chain_operations": chain}
