"""Gifts and donations (P-14): a member gives brand points to another member of the brand, or donates
them to a cause the brand lists.

Points for sale on a black market (P-38 pattern 3) come from accounts registered in bulk and farmed,
and are gathered by the buyer's account. So (P-39, P-41): an account younger than
`gift_min_tenure_days` cannot give, a member gives at most `gift_daily_points` in `gift_daily_count`
gifts and donations a day, and receives at most `gift_received_daily_points` a day (days of the
brand's calendar). The limits are counted under both members' row locks, taken in id order, so
concurrent gifts cannot pass a limit together or deadlock. Given points keep their expiry
(ledger.transfer), so passing them around never makes them live longer. Both members see the gift
in their history (`gift_out`, `gift_in`, one reference); a donation is `donation`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from uuid_utils import uuid7

from privacy.receipts import Purpose

from ..db import as_utc
from ..errors import Conflict, GatewayError, IdempotencyMismatch, NotFound
from ..models import Cause, Gift, Member
from ..runtime import Gateway
from . import audit, consent, ledger, members, webhooks
from .purchases import day_bounds

GIFTS = "gifts"  # the ledger account a gift passes through (its two postings net to zero there)
DONATED = "donated"


class Given(NamedTuple):
    gift: Gift
    recipient_ref: str | None
    cause: str | None
    balance: int  # the giver's, after
    replayed: bool


def define_cause(session: Session, actor: str, code: str, name: str, description: str, active: bool, now: datetime) -> Cause:
    """List a cause for donations, or change it as a new version (in the admin audit log)."""
    cause = session.scalars(select(Cause).where(Cause.code == code).with_for_update()).first()
    if cause is None:
        cause = Cause(code=code, version=0)
        session.add(cause)
    cause.name, cause.description, cause.active, cause.updated_at = name, description, active, now
    cause.version += 1
    session.flush()
    audit.record(session, actor, "cause.defined", now, code=code, version=cause.version, name=name, description=description, active=active)
    return cause


def causes(session: Session, include_inactive: bool = False) -> list[tuple[Cause, int]]:
    """The causes with the points donated to each so far."""
    donated = (select(Gift.cause_id, func.sum(Gift.points).label("points")).where(Gift.cause_id.is_not(None))
               .group_by(Gift.cause_id).subquery())
    query = select(Cause, func.coalesce(donated.c.points, 0)).outerjoin(donated, donated.c.cause_id == Cause.id).order_by(Cause.code)
    if not include_inactive:
        query = query.where(Cause.active)
    return [(c, int(points)) for c, points in session.execute(query)]


def _replay(session: Session, key: str, body_hash: str) -> Given | None:
    gift = session.scalars(select(Gift).where(Gift.idempotency_key == key)).first()
    if gift is None:
        return None
    if gift.request_hash != body_hash:
        raise IdempotencyMismatch("this idempotency key was used for a different request")
    return _given(session, gift, replayed=True)


def _given(session: Session, gift: Gift, replayed: bool) -> Given:
    recipient = session.get(Member, gift.recipient_id) if gift.recipient_id is not None else None
    cause = session.get(Cause, gift.cause_id) if gift.cause_id is not None else None
    return Given(gift, recipient.member_ref if recipient else None, cause.code if cause else None,
                 session.get(Member, gift.sender_id).balance, replayed)


def _check_sender(gw: Gateway, session: Session, sender: Member, points: int, now: datetime) -> None:
    members.require_active(sender)
    consent.require(session, sender, Purpose.LOYALTY_CORE)
    s = gw.settings
    if now - as_utc(sender.enrolled_at) < timedelta(days=s.gift_min_tenure_days):
        raise Conflict(f"an account can give points {s.gift_min_tenure_days} days after it was opened", reason="new_account")
    start, end = day_bounds(now.astimezone(s.zone).date(), s.zone)
    # (int(): PostgreSQL sums BIGINT as NUMERIC)
    given, count = session.execute(select(func.coalesce(func.sum(Gift.points), 0), func.count())
                                   .where(Gift.sender_id == sender.id, Gift.created_at >= start, Gift.created_at < end)).one()
    given = int(given)
    if count >= s.gift_daily_count:
        raise Conflict(f"at most {s.gift_daily_count} gifts and donations a day", reason="daily_count")
    if given + points > s.gift_daily_points:
        raise Conflict(f"at most {s.gift_daily_points} points given a day; {s.gift_daily_points - given} left today",
                       reason="daily_points", left=s.gift_daily_points - given)


def give(session: Session, gw: Gateway, sender: Member, recipient_ref: str, points: int, *, idempotency_key: str, body_hash: str,
         now: datetime) -> Given:
    """The member gives `points` to another member of the brand (idempotent on the key)."""
    if (replayed := _replay(session, idempotency_key, body_hash)) is not None:
        return replayed
    recipient = session.scalars(select(Member).where(Member.member_ref == recipient_ref)).first()
    if recipient is None or recipient.status != "active" or not consent.has_consent(session, recipient.id, Purpose.LOYALTY_CORE):
        raise NotFound("no member with this reference can receive points")  # one answer: no status is revealed
    if recipient.id == sender.id:
        raise GatewayError("a member cannot give points to themselves")
    locked = members.lock_many(session, {sender.id, recipient.id})
    sender, recipient = locked[sender.id], locked[recipient.id]
    _check_sender(gw, session, sender, points, now)
    s = gw.settings
    start, end = day_bounds(now.astimezone(s.zone).date(), s.zone)
    received = int(session.scalar(select(func.coalesce(func.sum(Gift.points), 0))
                              .where(Gift.recipient_id == recipient.id, Gift.created_at >= start, Gift.created_at < end)))
    if received + points > s.gift_received_daily_points:
        raise Conflict("the recipient cannot receive that many points today", reason="recipient_daily_points")
    gift = Gift(gift_ref=str(uuid7()), idempotency_key=idempotency_key, request_hash=body_hash, sender_id=sender.id,
                recipient_id=recipient.id, points=points, created_at=now)
    ledger.transfer(session, sender, recipient, points, "gift", GIFTS, now, ref=gift.gift_ref)
    session.add(gift)
    session.flush()
    webhooks.emit(session, "gift.given", [{"gift_ref": gift.gift_ref, "member_ref": sender.member_ref,
                                           "recipient_member_ref": recipient.member_ref, "points": points}], now)
    return _given(session, gift, replayed=False)


def donate(session: Session, gw: Gateway, sender: Member, cause_code: str, points: int, *, idempotency_key: str, body_hash: str,
           now: datetime) -> Given:
    """The member donates `points` to one of the brand's causes (idempotent on the key)."""
    if (replayed := _replay(session, idempotency_key, body_hash)) is not None:
        return replayed
    cause = session.scalars(select(Cause).where(Cause.code == cause_code, Cause.active)).first()
    if cause is None:
        raise NotFound("no such cause")
    sender = members.lock(session, sender)
    _check_sender(gw, session, sender, points, now)
    gift = Gift(gift_ref=str(uuid7()), idempotency_key=idempotency_key, request_hash=body_hash, sender_id=sender.id,
                cause_id=cause.id, points=points, created_at=now)
    ledger.debit(session, sender, "donation", points, DONATED, now, ref=gift.gift_ref)
    session.add(gift)
    session.flush()
    webhooks.emit(session, "donation.made", [{"gift_ref": gift.gift_ref, "member_ref": sender.member_ref, "cause": cause.code,
                                              "points": points}], now)
    return _given(session, gift, replayed=False)


def history(session: Session, member_id: int, limit: int | None = 100) -> list[dict]:
    """The member's gifts given and received and their donations, newest first."""
    rows = session.scalars(select(Gift).where((Gift.sender_id == member_id) | (Gift.recipient_id == member_id))
                           .order_by(Gift.id.desc()).limit(limit)).all()
    out = []
    for g in rows:
        given = _given(session, g, replayed=False)
        if g.cause_id is not None:
            direction, other = "donated", None
        elif g.sender_id == member_id:
            direction, other = "given", given.recipient_ref
        else:
            direction, other = "received", session.get(Member, g.sender_id).member_ref
        out.append({"gift_ref": g.gift_ref, "direction": direction, "points": g.points, "member_ref": other,
                    "cause": given.cause, "at": as_utc(g.created_at)})
    return out
