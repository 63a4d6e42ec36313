from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Depends, Path, status

from ..auth import Principal, allow, api_keys, create_api_key, revoke_api_key
from ..db import as_utc, reading, transaction
from ..errors import Conflict
from ..models import ApiKey
from ..runtime import Gateway
from ..schemas import MAX_DB_INT, AnchorRequest, ApiKeyInfo, ApiKeyIssued, ApiKeyRequest
from ..services import alliance, anchoring, audit, datakeys, enrolment, ledger, notices, peppers, programme, throttle, tiers, webhooks
from . import AUTH, gateway, problems

router = APIRouter(prefix="/v1/admin", tags=["operator"])
operator = allow("operator")


def key_info(row: ApiKey) -> dict:
    def at(moment):
        return None if moment is None else as_utc(moment)

    return {"id": row.id, "role": row.role, "label": row.label, "created_at": at(row.created_at), "expires_at": at(row.expires_at),
            "revoked_at": at(row.revoked_at), "last_used_at": at(row.last_used_at)}


@router.post("/api-keys", status_code=status.HTTP_201_CREATED, response_model=ApiKeyIssued, responses=problems(*AUTH, 503),
             summary="Issue an API key (its secret is shown once)")
def new_api_key(body: ApiKeyRequest, who: Principal = Depends(operator), gw: Gateway = Depends(gateway)) -> ApiKeyIssued:
    now = gw.now()
    expires_at = now + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    with transaction(gw.sessions) as session:
        row, secret = create_api_key(session, body.role, body.label, now, expires_at)
        audit.record(session, who.subject, "apikey.created", now, key_id=row.id, role=body.role, label=body.label,
                     expires_at=expires_at.strftime("%Y-%m-%dT%H:%M:%SZ") if expires_at else None)
        return ApiKeyIssued(secret=secret, **key_info(row))


@router.get("/api-keys", response_model=list[ApiKeyInfo], responses=problems(*AUTH, 503),
            summary="Every API key: role, label, expiry, revocation, last use (never a secret)")
def list_api_keys(who: Principal = Depends(operator), gw: Gateway = Depends(gateway)) -> list[ApiKeyInfo]:
    with reading(gw.sessions) as session:
        return [ApiKeyInfo(**key_info(row)) for row in api_keys(session)]


@router.delete("/api-keys/{key_id}", response_model=ApiKeyInfo, responses=problems(*AUTH, 404, 503),
               summary="Revoke an API key: every worker refuses it within GATEWAY_API_KEY_CACHE_S (5 s by default)")
def revoke(key_id: int = Path(ge=1, le=MAX_DB_INT), who: Principal = Depends(operator), gw: Gateway = Depends(gateway)) -> ApiKeyInfo:
    now = gw.now()
    with transaction(gw.sessions) as session:
        row, revoked = revoke_api_key(session, key_id, now)
        if revoked:
            audit.record(session, who.subject, "apikey.revoked", now, key_id=row.id, role=row.role, label=row.label)
        return ApiKeyInfo(**key_info(row))


@router.post("/anchors", responses=problems(*AUTH, 409, 503), summary="Post the log's current Merkle root on chain now")
def anchor_now(body: AnchorRequest, who: Principal = Depends(operator), gw: Gateway = Depends(gateway)) -> dict:
    if gw.alliance is None:
        raise Conflict("this gateway is not connected to the alliance chain")
    row = anchoring.anchor(gw, body.kind, who.subject)
    if row is None:
        return {"anchored": False, "reason": "nothing logged since the last anchor"}
    return {"anchored": True, "period": row.period, "size": row.size, "root": row.root, "tx_hash": row.tx_hash}


@router.post("/maintenance", responses=problems(*AUTH, 503),
             summary="Expire due points, review tiers, forget stale enrolments and limits, retry pending chain operations, "
                     "send expiry reminders and other notices, post due webhooks")
def maintenance(who: Principal = Depends(operator), gw: Gateway = Depends(gateway)) -> dict:
    return run_maintenance(gw, who.subject)


def run_maintenance(gw: Gateway, actor: str) -> dict:
    now = gw.now()
    with transaction(gw.sessions) as session:
        expired = ledger.expire_due(session, now)
        in_force = programme.current(session, gw)
        tiers.start_grace_where_due(session, in_force, now)
        downgraded = tiers.review(session, in_force, now)
        enrolments = enrolment.expire(session, gw, now)
        throttle.forget_idle(session, now)
        audit.record(session, actor, "maintenance", now, expired=expired, downgraded=downgraded, enrolments_expired=enrolments)
    chain = alliance.retry_pending(gw) if gw.alliance else {}
    rekeyed = peppers.rekey(gw)
    swept = datakeys.sweep(gw, now)
    return {"points_expired": expired, "tiers_downgraded": downgraded, "enrolments_expired": enrolments, "chain_operations": chain,
            "identifiers_rekeyed": rekeyed.rekeyed, "orphan_data_keys_destroyed": swept, "notices": notices.run(gw, now),
            "webhooks": webhooks.deliver_due(gw, now)}
