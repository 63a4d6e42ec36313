"""Notices to members about their own account: points about to expire (P-28, P-31), a coupon about to
expire (P-36), a tier change, a reward ordered or shipped.

A notice is queued as a row: by the transaction that causes it (`queue`), or by the reminder scan
(`remind`), which finds points and coupons expiring within their notice window. Each point lot is
reminded once per window (`point_lots.reminded_days`), in one message per member that names every
lot newly due; each coupon once. `send_pending` then renders and hands the notices to the gateway's
notifier, to the member's e-mail (else phone), decrypted only for that: only to a member who is
active and whose `loyalty_core` consent (running the membership, which covers telling the member
about it) holds when it is sent; otherwise the notice is `skipped`. A crash between handing a notice
over and marking it sent sends it again on the next run (at least once: no notifier confirms more).

The wording says which points, how many, the exact date and what they buy, and that the rest of the
balance stays (P-32: an ambiguous "points expiry reminder" drove members away). A notice's `data`
holds amounts, dates and reward codes, never personal data.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta

from sqlalchemy import String, and_, case, cast, exists, literal, or_, select, update
from sqlalchemy.orm import Session

from privacy.receipts import Purpose

from ..db import as_utc, reading, transaction
from ..models import Consent, Coupon, Member, Notice, PiiField, PointLot, Reward
from ..notify import Message, NotifierUnavailable
from ..runtime import Gateway
from . import programme

log = logging.getLogger("gateway")
KINDS = ("points_expiring", "coupon_expiring", "tier_changed", "reward_ordered", "reward_shipped")
COUPON_NOTICE_DAYS = 2  # a coupon lasts 7 days by default (P-36): remind two days before it lapses
BATCH = 1000
MAX_ATTEMPTS = 3
CLAIM_LEASE = timedelta(minutes=5)


def queue(session: Session, items: list[tuple[int, str, str, dict]], now: datetime) -> None:
    """Queue notices, (member id, kind, subject, data) each, in the caller's transaction (sent by
    `send_pending`)."""
    if items:
        session.execute(Notice.__table__.insert(), [
            dict(member_id=member_id, kind=kind, subject=subject, data=json.dumps(data, sort_keys=True), status="pending", attempts=0,
                 created_at=now) for member_id, kind, subject, data in items])


def _allowed():
    """Members a notice may reach now: active, with loyalty_core granted."""
    return and_(Member.status == "active", exists().where(Consent.member_id == Member.id, Consent.purpose == Purpose.LOYALTY_CORE.value,
                                                        Consent.granted.is_(True)))


def remind(gw: Gateway, now: datetime) -> int:
    """Queue reminders for points and coupons expiring within their windows: one notice per member
    and run naming every lot newly due. Returns how many notices were queued."""
    queued = 0
    with transaction(gw.sessions) as session:
        days = programme.current(session, gw).earn.expiry_notice_days
        due = session.execute(
            select(PointLot.id, PointLot.member_id, PointLot.remaining, PointLot.expires_at).join(Member, Member.id == PointLot.member_id)
            .where(PointLot.remaining > 0, PointLot.expires_at > now, PointLot.expires_at <= now + timedelta(days=days),
                   or_(PointLot.reminded_days.is_(None), PointLot.reminded_days > days), _allowed())
            .order_by(PointLot.member_id, PointLot.expires_at)).all()
        by_member: dict[int, list] = {}
        for lot in due:
            by_member.setdefault(lot.member_id, []).append(lot)
        if by_member:
            ids = list(by_member)
            balances = {}
            for start in range(0, len(ids), BATCH):
                balances.update(session.execute(select(Member.id, Member.balance).where(Member.id.in_(ids[start:start + BATCH]))).all())
            offers = [(r.name, r.points_price) for r in session.scalars(
                select(Reward).where(Reward.active.is_(True), Reward.available_from <= now,
                                     or_(Reward.available_until.is_(None), Reward.available_until > now),
                                     or_(Reward.stock.is_(None), Reward.stock > 0)).order_by(Reward.points_price.desc()))]
            rows = []
            for member_id, lots in by_member.items():
                balance = balances[member_id]
                expiring = [{"points": lot.remaining, "expires_on": as_utc(lot.expires_at).strftime("%Y-%m-%d")} for lot in lots]
                buys = [{"reward": name, "points": price} for name, price in offers if price <= balance][:3]
                rows.append((member_id, "points_expiring", f"lot:{lots[0].id}:{days}d", {"lots": expiring, "balance": balance, "buys": buys}))
            queue(session, rows, now)
            ids = [lot.id for lot in due]
            for start in range(0, len(ids), BATCH):
                session.execute(update(PointLot).where(PointLot.id.in_(ids[start:start + BATCH])).values(reminded_days=days)
                                .execution_options(synchronize_session=False))
            queued += len(rows)
        coupons = session.execute(
            select(Coupon.id, Coupon.member_id, Coupon.value_minor, Coupon.min_spend_minor, Coupon.expires_at)
            .join(Member, Member.id == Coupon.member_id)
            .where(Coupon.status == "open", Coupon.expires_at > now, Coupon.expires_at <= now + timedelta(days=COUPON_NOTICE_DAYS),
                   ~exists().where(Notice.kind == "coupon_expiring", Notice.subject == literal("coupon:") + cast(Coupon.id, String)),
                   _allowed())).all()
        queue(session, [(c.member_id, "coupon_expiring", f"coupon:{c.id}",
                         {"value_minor": c.value_minor, "min_spend_minor": c.min_spend_minor,
                          "expires_at": as_utc(c.expires_at).strftime("%Y-%m-%d %H:%M UTC")}) for c in coupons], now)
        queued += len(coupons)
    return queued


def run(gw: Gateway, now: datetime) -> dict[str, int]:
    """The scheduled job: queue what is due, then send everything pending."""
    return {"reminders_queued": remind(gw, now)} | send_pending(gw, now)


def send_pending(gw: Gateway, now: datetime) -> dict[str, int]:
    """Hand every pending notice to the notifier; the counts by outcome. Each batch is claimed first
    (`sending`), so runs in several processes, or the schedule and an operator's maintenance at
    once, never send one notice twice; a claim a dead run left is freed after CLAIM_LEASE."""
    counts = {"sent": 0, "skipped": 0, "failed": 0}
    with transaction(gw.sessions) as session:
        session.execute(update(Notice).where(Notice.status == "sending", Notice.sent_at < now - CLAIM_LEASE).values(status="pending"))
    while True:
        with transaction(gw.sessions) as session:
            due = session.scalars(select(Notice.id).where(Notice.status == "pending").order_by(Notice.id).limit(BATCH)).all()
            if not due:
                return counts
            claimed = session.scalars(update(Notice).where(Notice.id.in_(due), Notice.status == "pending")
                                      .values(status="sending", sent_at=now).returning(Notice.id)).all()
        if not claimed:
            continue  # another run took these
        with reading(gw.sessions) as session:
            batch = session.execute(
                select(Notice.id, Notice.member_id, Notice.kind, Notice.data, Member.member_ref, _allowed().label("allowed"))
                .join(Member, Member.id == Notice.member_id).where(Notice.id.in_(claimed)).order_by(Notice.id)).all()
            refs = {notice.member_id: notice.member_ref for notice in batch if notice.allowed}
            fields: dict[int, dict[str, bytes]] = {}
            for member_id, name, ciphertext in session.execute(select(PiiField.member_id, PiiField.field, PiiField.ciphertext).where(
                    PiiField.member_id.in_(list(refs)), PiiField.field.in_(("email", "phone")))):
                fields.setdefault(member_id, {})[name] = ciphertext
        keys = gw.keystore.get_many(list(refs.values()))
        outcome: dict[str, list[int]] = {"sent": [], "skipped": [], "failed": []}
        for notice in batch:
            message, ref = None, notice.member_ref
            if notice.allowed and ref in keys:
                message = _message(gw, notice.kind, notice.data, _contact(gw, keys[ref], ref, fields.get(notice.member_id, {})))
            if message is None:
                outcome["skipped"].append(notice.id)
                continue
            try:
                gw.notifier.send(message)
                outcome["sent"].append(notice.id)
            except NotifierUnavailable:
                outcome["failed"].append(notice.id)
        with transaction(gw.sessions) as session:
            for status, ids in outcome.items():
                if ids:
                    values = {"status": status, "attempts": Notice.attempts + 1} | ({} if status == "sent" else {"sent_at": None})
                    if status == "failed":  # tried again on the next runs, three times in all
                        values["status"] = case((Notice.attempts + 1 >= MAX_ATTEMPTS, "failed"), else_="pending")
                    session.execute(update(Notice).where(Notice.id.in_(ids), Notice.status == "sending").values(**values))
                counts[status] += len(ids)
        if outcome["failed"]:
            return counts  # the notifier is down: the next run tries again


def _contact(gw: Gateway, wrapped, member_ref: str, ciphertexts: dict[str, bytes]) -> tuple[str, str] | None:
    """(channel, address) the notifier can reach the member at: e-mail first, else phone."""
    for field, channel in (("email", "email"), ("phone", "sms")):
        if field in ciphertexts and channel in gw.notifier.channels:
            return channel, gw.vault.decrypt_field(wrapped, member_ref, field, ciphertexts[field])
    return None


def _points(n: int) -> str:
    return f"{n:,} point{'' if n == 1 else 's'}"


def _message(gw: Gateway, kind: str, data_json: str, contact: tuple[str, str] | None) -> Message | None:
    if contact is None:
        return None
    brand = gw.settings.brand_name
    data = json.loads(data_json)
    if kind == "points_expiring":
        total = sum(lot["points"] for lot in data["lots"])
        lines = [f"- {_points(lot['points'])} expire at the end of {lot['expires_on']} (UTC)" for lot in data["lots"]]
        kept = data["balance"] - total
        text = (f"{_points(total)} of your {brand} points will expire unless you use them:\n" + "\n".join(lines) +
                f"\nYour balance today is {_points(data['balance'])}; "
                + (f"the other {_points(kept)} are not affected by these dates." if kept > 0 else "all of it is in the lines above.")
                + ("\nWhat they buy now: " + "; ".join(f"{b['reward']} ({_points(b['points'])})" for b in data["buys"]) + "."
                   if data["buys"] else "")
                + "\nUsing points spends the oldest first, so the ones expiring soonest go first.")
        subject = f"{brand}: {_points(total)} expire on {data['lots'][0]['expires_on']}"
    elif kind == "coupon_expiring":
        text = (f"Your {brand} coupon worth {data['value_minor']} (minor units) expires at {data['expires_at']}."
                + (f" It needs a purchase of at least {data['min_spend_minor']}." if data["min_spend_minor"] else "")
                + " Show its code (in your orders) at the till before then.")
        subject = f"{brand}: your coupon expires at {data['expires_at']}"
    elif kind == "tier_changed":
        text = f"Your {brand} tier changed from {data['from']} to {data['to']} ({data['reason']})."
        subject = f"{brand}: you are now {data['to']}"
    elif kind == "reward_ordered":
        text = (f"You ordered {data['reward']} for {_points(data['points'])}. "
                + ("Its code is in your orders; it expires at " + data["coupon_expires_at"] + "." if data.get("coupon_expires_at")
                   else "We will tell you when it ships." if data["kind"] == "good" else "It is yours now."))
        subject = f"{brand}: order of {data['reward']} confirmed"
    else:  # reward_shipped
        text = f"Your {data['reward']} has shipped."
        subject = f"{brand}: {data['reward']} has shipped"
    channel, to = contact
    return Message(channel=channel, to=to, subject=subject, text=text)
