from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Path, Query, status

from ..auth import Principal, allow
from ..db import as_utc, reading, transaction
from ..models import WebhookSubscription
from ..runtime import Gateway
from ..schemas import WebhookAttemptInfo, WebhookDeliveryInfo, WebhookSubscriptionInfo, WebhookSubscriptionRequest
from ..services import webhooks
from . import AUTH, gateway, problems

router = APIRouter(prefix="/v1/admin", tags=["operator"])
operator = allow("operator")
SubscriptionId = Path(ge=1, le=2**53, description="the subscription's id")


def _info(gw: Gateway, sub: WebhookSubscription, with_secret: bool = False) -> WebhookSubscriptionInfo:
    return WebhookSubscriptionInfo(id=sub.id, url=sub.url, event_types=json.loads(sub.event_types), description=sub.description,
                                   active=sub.active, secret_version=sub.secret_version, created_at=as_utc(sub.created_at),
                                   secret=webhooks.secret(gw, sub) if with_secret else None)


def _spec(body: WebhookSubscriptionRequest) -> webhooks.SubscriptionSpec:
    return webhooks.SubscriptionSpec(body.url, list(body.event_types), body.description, body.active)


@router.post("/webhooks", response_model=WebhookSubscriptionInfo, status_code=status.HTTP_201_CREATED, responses=problems(*AUTH, 400, 503),
             summary="Subscribe an endpoint of the brand's systems to event types; the answer carries its signing secret, once")
def subscribe(body: WebhookSubscriptionRequest, who: Principal = Depends(operator), gw: Gateway = Depends(gateway)) -> WebhookSubscriptionInfo:
    with transaction(gw.sessions) as session:
        return _info(gw, webhooks.subscribe(session, gw, who.subject, _spec(body), gw.now()), with_secret=True)


@router.get("/webhooks", response_model=list[WebhookSubscriptionInfo], responses=problems(*AUTH, 503), summary="The subscriptions")
def subscriptions(who: Principal = Depends(operator), gw: Gateway = Depends(gateway)) -> list[WebhookSubscriptionInfo]:
    with reading(gw.sessions) as session:
        return [_info(gw, sub) for sub in session.query(WebhookSubscription).order_by(WebhookSubscription.id)]


@router.put("/webhooks/{sub_id}", response_model=WebhookSubscriptionInfo, responses=problems(*AUTH, 400, 404, 503),
            summary="Change a subscription's endpoint, event types or activity (audited)")
def change(body: WebhookSubscriptionRequest, sub_id: int = SubscriptionId, who: Principal = Depends(operator),
           gw: Gateway = Depends(gateway)) -> WebhookSubscriptionInfo:
    with transaction(gw.sessions) as session:
        return _info(gw, webhooks.change(session, gw, who.subject, sub_id, _spec(body), gw.now()))


@router.post("/webhooks/{sub_id}/secret", response_model=WebhookSubscriptionInfo, responses=problems(*AUTH, 404, 503),
             summary="Rotate the signing secret: the answer carries the new one; later deliveries are signed with it")
def rotate(sub_id: int = SubscriptionId, who: Principal = Depends(operator), gw: Gateway = Depends(gateway)) -> WebhookSubscriptionInfo:
    with transaction(gw.sessions) as session:
        return _info(gw, webhooks.rotate_secret(session, who.subject, sub_id, gw.now()), with_secret=True)


def _delivery(row, attempts) -> WebhookDeliveryInfo:
    at = lambda t: None if t is None else as_utc(t)  # noqa: E731
    return WebhookDeliveryInfo(msg_id=row.msg_id, event_type=row.event_type, status=row.status, attempts=row.attempts,
                               next_attempt_at=at(row.next_attempt_at), created_at=as_utc(row.created_at), delivered_at=at(row.delivered_at),
                               payload=json.loads(row.payload),
                               log=[WebhookAttemptInfo(attempted_at=as_utc(a.attempted_at), status_code=a.status_code, error=a.error,
                                                       duration_ms=a.duration_ms) for a in attempts])


@router.get("/webhooks/{sub_id}/deliveries", response_model=list[WebhookDeliveryInfo], responses=problems(*AUTH, 404, 503),
            summary="The delivery log of a subscription, newest first: every attempt with its answer")
def deliveries(sub_id: int = SubscriptionId, delivery_status: str | None = Query(None, alias="status", pattern=r"^(pending|delivered|failed)$"),
               limit: int = Query(100, ge=1, le=1000), who: Principal = Depends(operator), gw: Gateway = Depends(gateway)) -> list[WebhookDeliveryInfo]:
    with reading(gw.sessions) as session:
        return [_delivery(row, attempts) for row, attempts in webhooks.deliveries(session, sub_id, delivery_status, limit)]


@router.post("/webhook-deliveries/{msg_id}/replay", response_model=WebhookDeliveryInfo, responses=problems(*AUTH, 404, 503),
             summary="Deliver again, with the same webhook-id, at the next delivery run")
def replay(msg_id: str = Path(pattern=r"^msg_[0-9a-f]{32}$"), who: Principal = Depends(operator),
           gw: Gateway = Depends(gateway)) -> WebhookDeliveryInfo:
    with transaction(gw.sessions) as session:
        return _delivery(webhooks.replay(session, who.subject, msg_id, gw.now()), [])
