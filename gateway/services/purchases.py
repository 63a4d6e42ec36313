"""Purchases from the point of sale earn points; refunds claw them back; actions (review, share,
check-in) earn too and count as engagement. Every call is idempotent on its key."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from privacy.receipts import Purpose

from ..errors import Conflict, GatewayError, IdempotencyMismatch, NotFound, RateLimited
from ..models import Action, Member, Purchase, Refund
from ..runtime import Gateway
from . import consent, ledger, members, rules, tiers


def request_hash(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def _replay(existing, body_hash: str):
    if existing.request_hash != body_hash:
        raise IdempotencyMismatch("this idempotency key was used for a different request")
    return existing


def _earned_that_day(session: Session, member: Member, occurred_at: datetime) -> tuple[str, int, bool]:
    """(day, points already earned that day, whether that day is the member's latest earning day).

    The running counter on the member covers its latest day. An event for a later day starts a new
    one; a late event for an earlier day (a till that was offline) is counted against *that* day's
    cap from the stored events, and leaves the counter alone, so interleaving days cannot reset it."""
    day = occurred_at.date().isoformat()
    if member.earned_day is None or day > member.earned_day:
        return day, 0, True
    if day == member.earned_day:
        return day, member.earned_today, True
    start = datetime.combine(occurred_at.date(), time(), tzinfo=occurred_at.tzinfo).astimezone(UTC)
    end = start + timedelta(days=1)
    earned = session.scalar(select(func.coalesce(func.sum(Purchase.points), 0)).where(
        Purchase.member_id == member.id, Purchase.occurred_at >= start, Purchase.occurred_at < end))
    earned += session.scalar(select(func.coalesce(func.sum(Action.points), 0)).where(
        Action.member_id == member.id, Action.occurred_at >= start, Action.occurred_at < end))
    return day, int(earned), False


def _note_earned(member: Member, day: str, earned_before: int, points: int, latest: bool) -> None:
    if latest:
        member.earned_day, member.earned_today = day, earned_before + points


@dataclass(frozen=True)
class PurchaseResult:
    purchase: Purchase
    member: Member
    replayed: bool
    capped: int  # points the daily cap withheld


def record_purchase(session: Session, gw: Gateway, *, idempotency_key: str, member: Member, amount_minor: int,
                    currency: str, channel: str, eco: bool, occurred_at: datetime, body_hash: str,
                    now: datetime) -> PurchaseResult:
    existing = session.scalars(select(Purchase).where(Purchase.idempotency_key == idempotency_key)).first()
    if existing is not None:
        return PurchaseResult(_replay(existing, body_hash), session.get(Member, existing.member_id), True, 0)
    s = gw.settings
    if occurred_at > now + timedelta(minutes=5):
        raise GatewayError("occurred_at is in the future")
    if amount_minor > s.max_purchase_minor:
        raise GatewayError(f"amount_minor above the plausible maximum of {s.max_purchase_minor}")
    member = members.lock(session, member)
    members.require_active(member)
    consent.require(session, member, Purpose.LOYALTY_CORE)
    recent = session.scalar(select(func.count(Purchase.id)).where(
        Purchase.member_id == member.id, Purchase.received_at > now - timedelta(minutes=1)))
    if recent >= s.purchases_per_member_per_minute:
        raise RateLimited("too many purchases for this member in the last minute")

    earning = rules.purchase_points(s.earn, tiers.tier_rule(s, member.tier), amount_minor,
                                    first_order=member.purchase_count == 0, birth_month=member.birth_month,
                                    eco=eco, occurred_at=occurred_at)
    day, earned_today, latest = _earned_that_day(session, member, occurred_at)
    points = rules.capped(earning.points, earned_today, s.earn.daily_cap)
    # Stored in UTC: SQLite keeps no offset, and the tier window compares stored times with UTC ones.
    purchase = Purchase(purchase_ref=str(uuid.uuid4()), idempotency_key=idempotency_key, request_hash=body_hash,
                        member_id=member.id, amount_minor=amount_minor, refunded_minor=0, currency=currency,
                        channel=channel, eco=eco, occurred_at=occurred_at.astimezone(UTC), received_at=now, points=points,
                        campaign=earning.campaign, clawed_back=0)
    session.add(purchase)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict("a concurrent request with this idempotency key is in progress") from None
    if points:
        txn = ledger.credit(session, member, "earn", points, "issued", now, s.earn.validity_days, ref=purchase.purchase_ref)
        purchase.txn_id = txn.id
    member.purchase_count += 1
    _note_earned(member, day, earned_today, points, latest)
    tiers.evaluate(session, s, member, now)
    return PurchaseResult(purchase, member, False, earning.points - points)


def refund(session: Session, gw: Gateway, *, idempotency_key: str, purchase_ref: str, amount_minor: int,
           body_hash: str, now: datetime) -> tuple[Refund, Purchase, Member, bool]:
    existing = session.scalars(select(Refund).where(Refund.idempotency_key == idempotency_key)).first()
    if existing is not None:
        _replay(existing, body_hash)
        purchase = session.get(Purchase, existing.purchase_id)
        return existing, purchase, session.get(Member, purchase.member_id), True
    purchase = session.scalars(select(Purchase).where(Purchase.purchase_ref == purchase_ref).with_for_update()).first()
    if purchase is None:
        raise NotFound("no such purchase")
    refundable = purchase.amount_minor - purchase.refunded_minor
    if amount_minor > refundable:
        raise Conflict(f"only {refundable} of this purchase is left to refund", refundable=refundable)
    member = members.lock(session, session.get(Member, purchase.member_id))
    points = rules.clawback_points(purchase.points, purchase.amount_minor, purchase.refunded_minor, amount_minor,
                                   purchase.clawed_back)
    record = Refund(idempotency_key=idempotency_key, request_hash=body_hash, purchase_id=purchase.id,
                    amount_minor=amount_minor, points=points, created_at=now)
    session.add(record)
    if points:
        # Clawing back may take the balance below zero (points already spent): a debt, never lost points.
        ledger.debit(session, member, "clawback", points, "issued", now, ref=purchase.purchase_ref, allow_debt=True)
    purchase.refunded_minor += amount_minor
    purchase.clawed_back += points
    tiers.evaluate(session, gw.settings, member, now)
    return record, purchase, member, False


def record_action(session: Session, gw: Gateway, *, idempotency_key: str, member: Member, kind: str,
                  occurred_at: datetime, now: datetime) -> tuple[Action, Member, bool]:
    existing = session.scalars(select(Action).where(Action.idempotency_key == idempotency_key)).first()
    if existing is not None:
        if existing.member_id != member.id or existing.kind != kind:
            raise IdempotencyMismatch("this idempotency key was used for a different request")
        return existing, session.get(Member, existing.member_id), True
    s = gw.settings
    if kind not in s.earn.action_points:
        raise GatewayError(f"unknown action {kind!r}; expected one of {', '.join(s.earn.action_points)}")
    if occurred_at > now + timedelta(minutes=5):
        raise GatewayError("occurred_at is in the future")
    member = members.lock(session, member)
    members.require_active(member)
    consent.require(session, member, Purpose.LOYALTY_CORE)
    day, earned_today, latest = _earned_that_day(session, member, occurred_at)
    points = rules.capped(s.earn.action_points[kind], earned_today, s.earn.daily_cap)
    action = Action(idempotency_key=idempotency_key, member_id=member.id, kind=kind, points=points,
                    occurred_at=occurred_at.astimezone(UTC))
    session.add(action)
    if points:
        ledger.credit(session, member, "action", points, "issued", now, s.earn.validity_days, ref=f"action:{kind}")
    _note_earned(member, day, earned_today, points, latest)
    session.flush()
    tiers.evaluate(session, s, member, now)
    return action, member, False
