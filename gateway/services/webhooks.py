"""Webhooks for the brand's own systems (CRM, e-commerce, fulfilment).

An operator subscribes an endpoint to event types. An event is queued as one delivery per matching
subscription in the transaction that makes it happen (`emit`), so a delivery exists exactly when its
event does. The delivery job (`deliver_due`) posts each one signed by the Standard Webhooks
specification (`standardwebhooks`: the `webhook-id`, `webhook-timestamp` and `webhook-signature`
headers, HMAC-SHA256 over id, timestamp and body), retries what fails with growing back-off, and
logs every attempt; an operator can replay any delivery (same id: the receiver deduplicates on it).

A payload carries references (member_ref, order and purchase refs, reward codes) and amounts, never
personal data. A subscription's secret is never stored: it is an HMAC of (subscription id, secret
version) under the brand's webhook key (keys directory), shown when made or rotated.

Endpoints must be http(s) and, unless `GATEWAY_WEBHOOK_ALLOW_PRIVATE` (tests, a brand's internal
network), resolve to public addresses, checked again at every delivery (no DNS rebinding into the
gateway's own network); redirects are not followed.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import json
import logging
import socket
import time
from datetime import datetime, timedelta, timezone
from typing import NamedTuple, get_args
from urllib.parse import urlsplit

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from standardwebhooks.webhooks import Webhook
from uuid_utils import uuid7

from ..db import as_utc, reading, transaction
from ..errors import GatewayError, NotFound
from ..models import WebhookAttempt, WebhookDelivery, WebhookSubscription
from ..runtime import Gateway
from ..schemas import WebhookEventType
from . import audit

log = logging.getLogger("gateway")
EVENT_TYPES = get_args(WebhookEventType)
# Seconds to wait after the n-th failed attempt (the specification's suggested schedule, shortened at
# the start); after the last, the delivery is `failed` and waits for a replay.
BACKOFF_S = (5, 30, 120, 600, 1800, 3600, 3 * 3600, 6 * 3600)
LEASE_S = 60  # a delivery being posted is not taken by another process for this long
TIMEOUT_S = 10.0
BATCH = 100


class SubscriptionSpec(NamedTuple):
    url: str
    event_types: list[str]
    description: str
    active: bool


def secret(gw: Gateway, sub: WebhookSubscription) -> str:
    raw = hmac.digest(gw.webhook_key, b"webhook:%d:%d" % (sub.id, sub.secret_version), "sha256")
    return "whsec_" + base64.b64encode(raw).decode()


def check_url(gw: Gateway, url: str) -> None:
    """An endpoint the gateway may post to (GatewayError says why not)."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise GatewayError("a webhook URL is http(s)://host/...")
    if parts.username or parts.password:
        raise GatewayError("a webhook URL carries no credentials (the signature authenticates the gateway)")
    if gw.settings.webhook_allow_private:
        return
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP)}
    except (OSError, UnicodeError):
        raise GatewayError(f"the webhook host {parts.hostname!r} does not resolve") from None
    for address in addresses:
        if not ipaddress.ip_address(address.split("%")[0]).is_global:
            raise GatewayError(f"the webhook host {parts.hostname!r} resolves to a non-public address")


def subscribe(session: Session, gw: Gateway, actor: str, spec: SubscriptionSpec, now: datetime) -> WebhookSubscription:
    check_url(gw, spec.url)
    sub = WebhookSubscription(url=spec.url, event_types=json.dumps(sorted(set(spec.event_types))), description=spec.description,
                              secret_version=1, active=spec.active, created_at=now, updated_at=now)
    session.add(sub)
    session.flush()
    session.info.pop("webhook_subscriptions", None)
    audit.record(session, actor, "webhook.subscribed", now, id=sub.id, url=spec.url, event_types=sorted(set(spec.event_types)))
    return sub


def get(session: Session, sub_id: int, *, for_update: bool = False) -> WebhookSubscription:
    query = select(WebhookSubscription).where(WebhookSubscription.id == sub_id)
    sub = session.scalars(query.with_for_update() if for_update else query).first()
    if sub is None:
        raise NotFound("no such webhook subscription")
    return sub


def change(session: Session, gw: Gateway, actor: str, sub_id: int, spec: SubscriptionSpec, now: datetime) -> WebhookSubscription:
    check_url(gw, spec.url)
    sub = get(session, sub_id, for_update=True)
    sub.url, sub.event_types, sub.description = spec.url, json.dumps(sorted(set(spec.event_types))), spec.description
    sub.active, sub.updated_at = spec.active, now
    session.info.pop("webhook_subscriptions", None)
    audit.record(session, actor, "webhook.changed", now, id=sub.id, url=spec.url, event_types=sorted(set(spec.event_types)),
                 active=spec.active)
    return sub


def rotate_secret(session: Session, actor: str, sub_id: int, now: datetime) -> WebhookSubscription:
    sub = get(session, sub_id, for_update=True)
    sub.secret_version += 1
    sub.updated_at = now
    audit.record(session, actor, "webhook.secret_rotated", now, id=sub.id, secret_version=sub.secret_version)
    return sub


def emit(session: Session, event_type: str, items: list[dict], now: datetime) -> None:
    """Queue `event_type` with each of `items` (its data: references and amounts) for every active
    subscription to it, in the caller's transaction."""
    assert event_type in EVENT_TYPES, event_type
    if not items:
        return
    subs = [sub_id for sub_id, types in _active(session) if event_type in types]
    if not subs:
        return
    stamp = as_utc(now).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    rows = [dict(msg_id=f"msg_{uuid7().hex}", subscription_id=sub_id, event_type=event_type,
                 payload=json.dumps({"type": event_type, "timestamp": stamp, "data": data}, sort_keys=True, separators=(",", ":")),
                 status="pending", attempts=0, next_attempt_at=now, created_at=now)
            for data in items for sub_id in subs]
    session.execute(WebhookDelivery.__table__.insert(), rows)


def _active(session: Session) -> list[tuple[int, set[str]]]:
    """The active subscriptions, read once per session (a grouped write emits for many requests)."""
    if "webhook_subscriptions" not in session.info:
        session.info["webhook_subscriptions"] = [(s.id, set(json.loads(s.event_types))) for s in session.scalars(
            select(WebhookSubscription).where(WebhookSubscription.active.is_(True)))]
    return session.info["webhook_subscriptions"]


def replay(session: Session, actor: str, msg_id: str, now: datetime) -> WebhookDelivery:
    """Deliver again (delivered or failed alike), with the same id, as soon as the job runs."""
    row = session.scalars(select(WebhookDelivery).where(WebhookDelivery.msg_id == msg_id).with_for_update()).first()
    if row is None:
        raise NotFound("no such delivery")
    row.status, row.attempts, row.next_attempt_at = "pending", 0, now
    audit.record(session, actor, "webhook.replayed", now, msg_id=msg_id)
    return row


def deliveries(session: Session, sub_id: int, status: str | None, limit: int) -> list[tuple[WebhookDelivery, list[WebhookAttempt]]]:
    get(session, sub_id)
    query = select(WebhookDelivery).where(WebhookDelivery.subscription_id == sub_id).order_by(WebhookDelivery.id.desc()).limit(limit)
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    rows = session.scalars(query).all()
    attempts: dict[int, list[WebhookAttempt]] = {}
    for a in session.scalars(select(WebhookAttempt).where(WebhookAttempt.delivery_id.in_([r.id for r in rows])).order_by(WebhookAttempt.id)):
        attempts.setdefault(a.delivery_id, []).append(a)
    return [(r, attempts.get(r.id, [])) for r in rows]


def deliver_due(gw: Gateway, now: datetime, client: httpx.Client | None = None) -> dict[str, int]:
    """Post every delivery that is due; the counts by outcome."""
    counts = {"delivered": 0, "retrying": 0, "failed": 0}
    with reading(gw.sessions) as session:
        due = session.scalars(select(WebhookDelivery.id).where(
            WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now).order_by(WebhookDelivery.id).limit(BATCH)).all()
    own = client is None
    client = client or httpx.Client(timeout=TIMEOUT_S, follow_redirects=False)
    try:
        for delivery_id in due:
            outcome = _deliver_one(gw, client, delivery_id, now)
            if outcome:
                counts[outcome] += 1
    finally:
        if own:
            client.close()
    return counts


def _deliver_one(gw: Gateway, client: httpx.Client, delivery_id: int, now: datetime) -> str | None:
    with transaction(gw.sessions) as session:
        # Claimed by moving its time on: another process that read it due takes nothing.
        claimed = session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == "pending",
                                                                WebhookDelivery.next_attempt_at <= now)
                                  .values(next_attempt_at=now + timedelta(seconds=LEASE_S))).rowcount
        if claimed != 1:
            return None
        row = session.get(WebhookDelivery, delivery_id)
        sub = session.get(WebhookSubscription, row.subscription_id)
        msg_id, payload, url, signing = row.msg_id, row.payload, sub.url, Webhook(secret(gw, sub))
    code, error = None, None
    started = time.perf_counter()
    try:
        check_url(gw, url)
        stamp = datetime.fromtimestamp(int(time.time()), tz=timezone.utc)  # the wall clock: receivers refuse stale ones
        headers = {"webhook-id": msg_id, "webhook-timestamp": str(int(stamp.timestamp())), "content-type": "application/json",
                   "webhook-signature": signing.sign(msg_id, stamp, payload)}
        code = client.post(url, content=payload.encode(), headers=headers).status_code
        if not 200 <= code < 300:
            error = f"HTTP {code}"
    except GatewayError as exc:
        error = str(exc)
    except httpx.HTTPError as exc:
        error = type(exc).__name__
    elapsed_ms = int((time.perf_counter() - started) * 1000)
    with transaction(gw.sessions) as session:
        row = session.get(WebhookDelivery, delivery_id, with_for_update=True)
        session.add(WebhookAttempt(delivery_id=delivery_id, attempted_at=now, status_code=code, error=error and error[:200],
                                   duration_ms=elapsed_ms))
        row.attempts += 1
        if error is None:
            row.status, row.delivered_at, row.next_attempt_at = "delivered", now, None
            return "delivered"
        if row.attempts > len(BACKOFF_S):
            row.status, row.next_attempt_at = "failed", None
            return "failed"
        row.next_attempt_at = now + timedelta(seconds=BACKOFF_S[row.attempts - 1])
        return "retrying"
