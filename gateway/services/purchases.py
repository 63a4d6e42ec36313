"""Purchases from the point of sale earn points; refunds claw them back; actions (review, share,
check-in) earn too and count as engagement. Every call is idempotent on its key."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import NamedTuple

from pydantic import BaseModel
from sqlalchemy import exists, func, select, update
from sqlalchemy.orm import Session
from uuid_utils import uuid7

from privacy.receipts import Purpose

from ..db import allocate_ids, as_utc, committed_replaying_conflicts, insert_many, one_of, update_many
from ..errors import (
    Conflict,
    ConsentRequired,
    GatewayError,
    IdempotencyMismatch,
    InsufficientPoints,
    MemberNotActive,
    NotFound,
    RateLimited,
)
from ..models import Action, Consent, Coupon, LedgerTxn, LotDebit, Member, PointLot, Purchase, Refund, RewardOrder, TierChange
from ..runtime import Gateway
from . import consent, ledger, members, programme, rewards, rules, tiers, webhooks


def request_hash(body: BaseModel, *, scope: str = "", exclude: set[str] | None = None) -> str:
    """What a retry must repeat exactly: the request's body, and the resource it was sent to (scope)."""
    # The serializer's bytes are model_dump_json's text, without decoding and encoding it again.
    return hashlib.sha256(scope.encode() + body.__pydantic_serializer__.to_json(body, exclude=exclude)).hexdigest()


def _replay(existing, body_hash: str):
    if existing.request_hash not in (body_hash, None):  # None: an action recorded before requests were hashed
        raise IdempotencyMismatch("this idempotency key was used for a different request")
    return existing


def day_bounds(day: date, tz: tzinfo) -> tuple[datetime, datetime]:
    """The UTC span of one of the brand's calendar days (wall-clock midnights: a DST day is 23 or 25 hours)."""
    return (datetime.combine(day, time(), tzinfo=tz).astimezone(UTC),
            datetime.combine(day + timedelta(days=1), time(), tzinfo=tz).astimezone(UTC))


def _earned_on_day(session: Session, member_id: int, day: date, tz: tzinfo, unsaved: list[tuple[datetime, int]] = ()) -> int:
    """Points the member earned on one of the brand's days: the stored events, plus `unsaved` ones
    (UTC time, points) of the batch being written."""
    start, end = day_bounds(day, tz)
    earned = session.scalar(select(func.coalesce(func.sum(Purchase.points), 0)).where(
        Purchase.member_id == member_id, Purchase.occurred_at >= start, Purchase.occurred_at < end))
    earned += session.scalar(select(func.coalesce(func.sum(Action.points), 0)).where(
        Action.member_id == member_id, Action.occurred_at >= start, Action.occurred_at < end))
    return int(earned) + sum(points for at, points in unsaved if start <= at < end)


def _earned_that_day(session: Session, member, local: datetime, tz: tzinfo,
                     unsaved: list[tuple[datetime, int]] = ()) -> tuple[str, int, bool]:
    """(day, points already earned that day, whether that day is the member's latest earning day), for
    an event at `local`, the brand's wall-clock time of it.

    Days are the brand's calendar days (settings.timezone), whatever offset a till writes: they do not
    overlap, so each caps its points once. (Were days taken in each event's own offset, a till could
    open a fresh day for every purchase by choosing the offset.) The running counter on the member
    covers its latest day. An event for a later day starts a new one; a late event for an earlier day
    (a till that was offline) is counted against *that* day's cap from the stored events, and leaves
    the counter alone, so interleaving days cannot reset it."""
    day = local.date()
    key = day.isoformat()
    if member.earned_day is None or key > member.earned_day:
        return key, 0, True
    if key == member.earned_day:
        return key, member.earned_today, True
    return key, _earned_on_day(session, member.id, day, tz, unsaved), False


def _note_earned(member, day: str, earned_before: int, points: int, latest: bool) -> None:
    if latest:
        member.earned_day, member.earned_today = day, earned_before + points


class Window(NamedTuple):
    """When a purchase or action reported now may have happened (before its member is known)."""

    earliest: datetime  # the backdating window: a till's offline backlog
    latest: datetime  # a till's clock may run a little fast

    @classmethod
    def at(cls, now: datetime, backdating_days: int) -> Window:
        return cls(now - timedelta(days=backdating_days), now + timedelta(minutes=5))

    def refuses(self, occurred_at: datetime) -> GatewayError | None:
        if occurred_at > self.latest:
            return GatewayError("occurred_at is in the future")
        if occurred_at < self.earliest:
            days = (self.latest - self.earliest - timedelta(minutes=5)).days
            return GatewayError(f"occurred_at is more than {days} days ago: older purchases cannot earn points")
        return None


def before_enrolment(occurred_at: datetime, enrolled_at: datetime) -> GatewayError | None:
    if occurred_at < enrolled_at:
        return GatewayError("occurred_at is before the member enrolled")
    return None


class PurchaseEvent(NamedTuple):  # named tuples: a batch builds thousands, and they are cheap to make
    """A purchase as the till reports it; the idempotency key is already scoped to the caller."""

    idempotency_key: str
    body_hash: str
    amount_minor: int
    currency: str
    channel: str
    eco: bool
    occurred_at: datetime  # in UTC; the brand's calendar (settings.timezone) decides its day
    member_ref: str | None = None
    identifier_kind: str | None = None
    identifier: str | None = None
    points_burned: int = 0  # points paying part of it (P-15)
    coupon_code: str | None = None  # a coupon taking part of it off (P-36)


class Earned(NamedTuple):
    purchase_ref: str
    member_ref: str
    points: int
    campaign: str | None
    capped: int  # points the daily cap withheld
    balance: int
    tier: str
    replayed: bool
    points_burned: int = 0
    discount_minor: int = 0  # taken off by a coupon
    paid_minor: int | None = None  # paid otherwise, and earned on (None: a plain purchase, all of it)


Outcome = Earned | GatewayError
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(slots=True)
class _MemberState:
    """A locked member row, carried through a batch: each event sees the ones before it."""

    id: int
    member_ref: str
    status: str
    enrolled_at: datetime
    tier: str
    downgrade_due_at: datetime | None
    birth_month: int | None
    balance: int
    purchase_count: int
    earned_day: str | None
    earned_today: int
    purchase_tat_us: int  # rate limit (rules.pace)
    consented: bool
    activity: tuple[int, int, int]  # tier window: spend, purchases, actions
    touched: bool = False  # took a new purchase in this batch
    tier_changed: bool = False
    unsaved: list[tuple[datetime, int]] = field(default_factory=list)  # this batch's earnings: UTC time, points


_PURCHASE_COLUMNS = ("purchase_ref", "idempotency_key", "request_hash", "member_id", "amount_minor", "refunded_minor",
                     "currency", "channel", "eco", "occurred_at", "received_at", "points", "campaign", "clawed_back", "txn_id")
# A purchase paid in part with points or a coupon also has these (the others take their defaults):
_PAYMENT_COLUMNS = ("id", "points_burned", "burn_value_minor", "discount_minor")
_MEMBER_COLUMNS = ("id", "member_ref", "status", "enrolled_at", "tier", "downgrade_due_at", "birth_month", "balance", "purchase_count",
                   "earned_day", "earned_today", "purchase_tat_us")


def ingest(session: Session, gw: Gateway, events: list[PurchaseEvent], now: datetime) -> list[Outcome]:
    """Record purchases in order, each with exactly the rules a lone purchase gets (idempotency,
    plausibility, active member, `loyalty_core` consent, rate limit, multipliers, daily cap, tier),
    paid in part with points (burned oldest-expiring first) and a coupon (used once) where it says
    so, earning only on what was paid otherwise; a refused payment refuses the purchase.

    One read per kind of fact and one write per table for the whole batch, so a till's backlog and
    many concurrent single purchases (grouped by the caller) cost a few statements, not a dozen each.
    A bad event gets its own error and never stops the others."""
    s, p = gw.settings, programme.current(session, gw)  # the programme in force for this whole batch
    out: list[Outcome | None] = [None] * len(events)
    purchases_t, members_t = Purchase.__table__, Member.__table__

    # Retries first: a replay returns the original outcome whatever has changed since.
    keys = {e.idempotency_key for e in events}
    stored = {row.idempotency_key: row for row in session.execute(
        select(purchases_t.c.idempotency_key, purchases_t.c.request_hash, purchases_t.c.purchase_ref, purchases_t.c.points,
               purchases_t.c.campaign, members_t.c.member_ref, members_t.c.balance, members_t.c.tier, purchases_t.c.amount_minor,
               purchases_t.c.points_burned, purchases_t.c.burn_value_minor, purchases_t.c.discount_minor)
        .join(members_t, members_t.c.id == purchases_t.c.member_id).where(one_of(session, purchases_t.c.idempotency_key, keys)))}
    member_of: list[int | None] = [None] * len(events)
    refs = {e.member_ref for e in events if e.member_ref is not None and e.idempotency_key not in stored}
    ids_by_ref = dict(session.execute(select(members_t.c.member_ref, members_t.c.id).where(one_of(session, members_t.c.member_ref, refs))).all()) if refs else {}
    refused: list[GatewayError | None] = [None] * len(events)  # what the event alone would get
    window = Window.at(now, p.earn.backdating_days)
    for i, e in enumerate(events):
        if (old := stored.get(e.idempotency_key)) is not None:
            out[i] = (IdempotencyMismatch("this idempotency key was used for a different request") if old.request_hash != e.body_hash
                      else Earned(old.purchase_ref, old.member_ref, old.points, old.campaign, 0, old.balance, old.tier, True,
                                  old.points_burned, old.discount_minor,
                                  old.amount_minor - old.discount_minor - old.burn_value_minor if old.points_burned or old.discount_minor else None))
        elif (timing := window.refuses(e.occurred_at)) is not None:
            refused[i] = timing
        elif e.currency not in p.earn.currencies:
            refused[i] = GatewayError(f"currency {e.currency} is not accepted here; accepted: {', '.join(p.earn.currencies)}")
        elif e.amount_minor > s.max_purchase_minor:
            refused[i] = GatewayError(f"amount_minor above the plausible maximum of {s.max_purchase_minor}")
        elif e.points_burned and e.currency != p.earn.home_currency:
            refused[i] = GatewayError(f"points pay only in the home currency, {p.earn.home_currency}")
        elif e.points_burned and (inexact := _inexact_burn(gw, e.points_burned)) is not None:
            refused[i] = inexact
        elif e.member_ref is not None:
            member_of[i] = ids_by_ref.get(e.member_ref)
            if member_of[i] is None:
                refused[i] = NotFound("no such member")
        else:
            try:
                found = members.find_by_identifier(session, gw, e.identifier_kind, e.identifier)
            except GatewayError as exc:
                refused[i] = exc
                continue
            if found is None:
                refused[i] = NotFound("no member with this identifier")
            else:
                member_of[i] = found.id

    ids = sorted({mid for mid in member_of if mid is not None})
    state = _load_members(session, p.tier_window_days, ids, now)
    burning = [i for i, e in enumerate(events) if e.points_burned and out[i] is None and refused[i] is None]
    lots = ledger.lots_of(session, {member_of[i] for i in burning}, now)  # member id -> [[lot id, remaining], ...]
    coupons = _coupons(session, [events[i].coupon_code for i, e in enumerate(events)
                                 if e.coupon_code and out[i] is None and refused[i] is None])
    taken: dict[str, tuple[str, Earned, _MemberState]] = {}  # keys this batch stored so far
    batch = _Writes()
    window_start = now - timedelta(days=p.tier_window_days)
    tz = s.zone
    expires_at = now + timedelta(days=p.earn.validity_days)
    now_us = (now - EPOCH) // timedelta(microseconds=1)
    for i, e in enumerate(events):
        if out[i] is not None:
            continue
        if (first := taken.get(e.idempotency_key)) is not None:  # a retry within the batch
            out[i] = (IdempotencyMismatch("this idempotency key was used for a different request") if first[0] != e.body_hash
                      else first[1]._replace(capped=0, replayed=True, balance=first[2].balance, tier=first[2].tier))
            continue
        if refused[i] is not None:
            out[i] = refused[i]
            continue
        m = state[member_of[i]]
        if m.status != "active":
            out[i] = MemberNotActive(f"the account is {m.status}")
            continue
        if not m.consented:
            out[i] = ConsentRequired(f"the member has not consented to {Purpose.LOYALTY_CORE.value}", purpose=Purpose.LOYALTY_CORE.value)
            continue
        if (early := before_enrolment(e.occurred_at, m.enrolled_at)) is not None:
            out[i] = early
            continue
        tat_us, wait_us = rules.pace(m.purchase_tat_us, now_us, s.purchases_per_member_per_minute)
        if wait_us:
            wait_s = -(-wait_us // 1_000_000)
            out[i] = RateLimited(f"too many purchases for this member; the next one fits in {wait_s} s", retry_after_s=wait_s)
            continue
        coupon, discount = None, 0
        if e.coupon_code:
            coupon = coupons.get(rewards.code_hash(e.coupon_code))
            if (why := _coupon_refusal(coupon, m.id, e.amount_minor, now)) is not None:
                out[i] = why
                continue
            discount = min(coupon.value_minor, e.amount_minor)
        value = burn_value(gw, e.points_burned) if e.points_burned else 0
        if value > e.amount_minor - discount:
            out[i] = GatewayError(f"{e.points_burned} points pay {value}, more than the {e.amount_minor - discount} left to pay")
            continue
        if e.points_burned:
            held = lots.get(m.id, [])
            if sum(lot[1] for lot in held) < e.points_burned and any(p for _, p in m.unsaved):
                # Points this batch credited to the member are not in their lots until written.
                batch.write(session, gw, state, now)
                lots |= ledger.lots_of(session, {m.id}, now)
                held = lots.get(m.id, [])
            available = sum(lot[1] for lot in held)
            if e.points_burned > available:
                out[i] = InsufficientPoints(f"{e.points_burned} points needed, {available} available", needed=e.points_burned,
                                            available=available)
                continue

        local = e.occurred_at.astimezone(tz)  # the brand's day decides the day's multipliers and cap
        paid = e.amount_minor - discount - value
        earning = rules.purchase_points(p.earn, p.earn.currencies[e.currency], tiers.tier_rule(p, m.tier), paid,
                                        first_order=m.purchase_count == 0, birth_month=m.birth_month, eco=e.eco, occurred_at=local,
                                        channel=e.channel, campaigns=p.campaigns)
        day, earned_before, latest = _earned_that_day(session, m, local, tz, m.unsaved)
        points = rules.capped(earning.points, earned_before, p.earn.daily_cap)
        _note_earned(m, day, earned_before, points, latest)
        purchase_ref = str(uuid7())  # time-ordered: appends to the refs' index instead of touching a random page
        occurred_utc = e.occurred_at.astimezone(UTC)  # stored in UTC: SQLite keeps no offset
        m.unsaved.append((occurred_utc, points))
        row = [purchase_ref, e.idempotency_key, e.body_hash, m.id, e.amount_minor, 0, e.currency, e.channel, e.eco,
               occurred_utc, now, points, earning.campaign, 0, None]  # _PURCHASE_COLUMNS
        if e.points_burned or coupon is not None:
            row.append([None, e.points_burned, value, discount])  # _PAYMENT_COLUMNS
        batch.purchases.append(row)
        if e.points_burned:  # burned before the earning is credited, as the till took them first
            batch.debit(m, ledger.Debit(m.id, "burn", e.points_burned, rewards.REDEEMED, purchase_ref,
                                        ledger.take_fifo(lots[m.id], e.points_burned)), lots[m.id])
        if coupon is not None:
            coupon.status = "used"  # a second presentation in this batch finds it used
            batch.coupons.append((coupon, row, m.member_ref))
        if points:
            batch.credits.append(ledger.Credit(m.id, "earn", points, "issued", purchase_ref, max(0, -m.balance), expires_at))
            batch.credited.append(row)
            m.balance += points
        m.purchase_count += 1
        m.purchase_tat_us = tat_us
        m.touched = True
        if window_start < occurred_utc <= now:
            spend, count, actions = m.activity
            m.activity = (spend + e.amount_minor, count + 1, actions)
        tier, m.downgrade_due_at = tiers.decide(p, m.tier, m.downgrade_due_at, m.activity, now)
        if tier != m.tier:
            batch.tier_changes.append((m.id, m.member_ref, m.tier, tier, "qualified"))
            m.tier, m.tier_changed = tier, True
        out[i] = Earned(purchase_ref, m.member_ref, points, earning.campaign, earning.points - points, m.balance, m.tier, False,
                        e.points_burned, discount, paid if e.points_burned or coupon is not None else None)
        taken[e.idempotency_key] = (e.body_hash, out[i], m)

    batch.write(session, gw, state, now)
    return out  # type: ignore[return-value]


@dataclass(slots=True)
class _Writes:
    """What a batch writes, kept until `write` (at its end, or before a burn needs points the batch
    itself credited): one statement per table."""

    purchases: list[list] = field(default_factory=list)  # _PURCHASE_COLUMNS, then _PAYMENT_COLUMNS if paid in part
    credits: list[ledger.Credit] = field(default_factory=list)
    credited: list[list] = field(default_factory=list)  # the purchase rows of `credits`, in order
    debits: list[ledger.Debit] = field(default_factory=list)
    lots_left: dict[int, int] = field(default_factory=dict)  # lot id -> remaining after this batch's burns
    coupons: list[tuple] = field(default_factory=list)  # (coupon row, purchase row, member_ref)
    tier_changes: list[tuple] = field(default_factory=list)  # (member id, member_ref, from, to, reason)

    def debit(self, m: _MemberState, debit: ledger.Debit, lots: list[list[int]]) -> None:
        self.debits.append(debit)
        m.balance -= debit.amount
        for lot_id, _ in debit.takes:
            self.lots_left[lot_id] = next(left for lid, left in lots if lid == lot_id)

    def write(self, session: Session, gw: Gateway, state: dict[int, _MemberState], now: datetime) -> None:
        if not self.purchases:
            return
        conn = session.connection()
        ledger.debit_many(session, self.debits, self.lots_left, now)
        for row, txn_id in zip(self.credited, ledger.credit_many(session, self.credits, now), strict=True):
            row[14] = txn_id  # the last of _PURCHASE_COLUMNS
        plain = [tuple(row) for row in self.purchases if len(row) == len(_PURCHASE_COLUMNS)]
        paid = [row for row in self.purchases if len(row) > len(_PURCHASE_COLUMNS)]
        # Plain purchases (nearly all) leave the payment columns to their defaults: a narrower insert.
        insert_many(conn, Purchase.__table__, _PURCHASE_COLUMNS, plain)
        for row, purchase_id in zip(paid, allocate_ids(conn, Purchase.__table__, len(paid)), strict=True):
            row[-1][0] = purchase_id
        insert_many(conn, Purchase.__table__, _PURCHASE_COLUMNS + _PAYMENT_COLUMNS, [(*row[:-1], *row[-1]) for row in paid])
        if self.coupons:
            update_many(conn, Coupon.__table__, ("status", "purchase_id"), [("used", row[-1][0], c.id) for c, row, _ in self.coupons])
            webhooks.emit(session, "coupon.used", [{"order_ref": c.order_ref, "purchase_ref": row[0], "member_ref": ref,
                                                    "discount_minor": row[-1][3]} for c, row, ref in self.coupons], now)
        insert_many(conn, TierChange.__table__, ("member_id", "from_tier", "to_tier", "reason", "changed_at"),
                    [(mid, old, new, reason, now) for mid, _, old, new, reason in self.tier_changes])
        tiers.announce(session, self.tier_changes, now)
        _store_members(session, [m for m in state.values() if m.touched], now)
        for m in state.values():
            m.tier_changed = False
            m.unsaved.clear()  # written: the stored events count them now
        self.purchases, self.credits, self.credited, self.debits, self.coupons, self.tier_changes = [], [], [], [], [], []
        self.lots_left = {}


def _inexact_burn(gw: Gateway, points: int) -> GatewayError | None:
    try:
        burn_value(gw, points)
    except GatewayError as exc:
        return exc
    return None


def _coupons(session: Session, codes: list[str]) -> dict[str, _Coupon]:
    """The coupons presented, by the hash of their code, locked (in id order) until the batch commits:
    a coupon presented at two tills at once is used by one."""
    if not codes:
        return {}
    coupons_t, orders_t = Coupon.__table__, RewardOrder.__table__
    rows = session.execute(
        select(coupons_t.c.id, coupons_t.c.code_hash, coupons_t.c.member_id, coupons_t.c.status, coupons_t.c.expires_at,
               coupons_t.c.value_minor, coupons_t.c.min_spend_minor, orders_t.c.order_ref)
        .join(orders_t, orders_t.c.id == coupons_t.c.order_id)
        .where(one_of(session, coupons_t.c.code_hash, {rewards.code_hash(c) for c in codes}))
        .order_by(coupons_t.c.id).with_for_update(of=coupons_t))
    return {row.code_hash: _Coupon(*row) for row in rows}


@dataclass(slots=True)
class _Coupon:
    id: int
    code_hash: str
    member_id: int
    status: str
    expires_at: datetime
    value_minor: int
    min_spend_minor: int
    order_ref: str


def _coupon_refusal(coupon: _Coupon | None, member_id: int, amount_minor: int, now: datetime) -> GatewayError | None:
    """Why this coupon cannot take part of this member's purchase (None: it can)."""
    if coupon is None or coupon.member_id != member_id:
        return NotFound("no such coupon for this member")
    if coupon.status != "open":
        return Conflict(f"the coupon is {'already used' if coupon.status == 'used' else 'void'}")
    if as_utc(coupon.expires_at) <= now:
        return Conflict(f"the coupon expired at {as_utc(coupon.expires_at).isoformat()}")
    if amount_minor < coupon.min_spend_minor:
        return Conflict(f"the coupon needs a purchase of at least {coupon.min_spend_minor}", min_spend_minor=coupon.min_spend_minor)
    return None


def _load_members(session: Session, window_days: int, ids: list[int], now: datetime) -> dict[int, _MemberState]:
    """Lock the members (in id order, so concurrent batches cannot deadlock) and read what the rules
    need, each member's consent and tier window with its row: one statement."""
    if not ids:
        return {}
    members_t = Member.__table__
    consented = exists().where(Consent.member_id == members_t.c.id, Consent.purpose == Purpose.LOYALTY_CORE.value,
                               Consent.granted.is_(True))
    rows = session.execute(select(*(members_t.c[c] for c in _MEMBER_COLUMNS), consented,
                                  *tiers.window_columns(members_t.c.id, now, window_days))
                           .where(one_of(session, members_t.c.id, ids)).order_by(members_t.c.id).with_for_update(of=members_t))
    # Selected in _MemberState's field order: its columns, consented, then the window.
    state = {row[0]: _MemberState(*row[:-3], activity=tuple(row[-3:])) for row in rows}
    for m in state.values():
        m.enrolled_at = as_utc(m.enrolled_at)  # SQLite hands it back without its offset
    return state


def _store_members(session: Session, touched: list[_MemberState], now: datetime) -> None:
    members_t = Member.__table__
    update_many(session.connection(), members_t,
                ("balance", "purchase_count", "earned_day", "earned_today", "purchase_tat_us", "tier", "downgrade_due_at"),
                [(m.balance, m.purchase_count, m.earned_day, m.earned_today, m.purchase_tat_us, m.tier, m.downgrade_due_at, m.id)
                 for m in touched])
    changed = [m.id for m in touched if m.tier_changed]
    if changed:
        session.execute(update(members_t).where(members_t.c.id.in_(changed)).values(tier_since=now))


def ingest_committed(gw: Gateway, events: list[PurchaseEvent]) -> list[Outcome]:
    """`ingest` in a transaction of its own (a batch, or concurrent purchases grouped)."""
    return committed_replaying_conflicts(gw.sessions, lambda session: ingest(session, gw, events, gw.now()))


def burn_value(gw: Gateway, points: int) -> int:
    """What `points` pay, in minor units of the home currency; refused unless exact (P-15: one
    simple equation, no rounding a member could not follow)."""
    s = gw.settings
    minor = s.earn.currencies[s.earn.home_currency].minor_per_unit
    value, rest = divmod(points * minor, s.points_per_currency_unit)
    if rest:
        step = s.points_per_currency_unit // math.gcd(s.points_per_currency_unit, minor)
        raise GatewayError(f"points_burned must be a multiple of {step} ({s.points_per_currency_unit} points pay 1 {s.earn.home_currency})")
    return value


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
    # Points that paid part of it come back in the same proportion (all that is left, on the last refund).
    returned = rules.clawback_points(purchase.points_burned, purchase.amount_minor, purchase.refunded_minor, amount_minor,
                                     purchase.points_returned)
    record = Refund(idempotency_key=idempotency_key, request_hash=body_hash, purchase_id=purchase.id,
                    amount_minor=amount_minor, points=points, points_returned=returned, created_at=now)
    session.add(record)
    if returned:
        # Into a lot that lives no longer than those the points were burned from (no refund extends them).
        burned_lots = select(func.max(PointLot.expires_at)).join(LotDebit, LotDebit.lot_id == PointLot.id).join(
            LedgerTxn, LedgerTxn.id == LotDebit.txn_id).where(LedgerTxn.kind == "burn", LedgerTxn.ref == purchase.purchase_ref)
        ledger.credit(session, member, "burn_return", returned, rewards.REDEEMED, now, programme.current(session, gw).earn.validity_days,
                      ref=purchase.purchase_ref, expires_at=as_utc(session.scalar(burned_lots)))
    if points:
        # Clawing back may take the balance below zero (points already spent): a debt, never lost points.
        ledger.debit(session, member, "clawback", points, "issued", now, ref=purchase.purchase_ref, allow_debt=True)
    purchase.refunded_minor += amount_minor
    purchase.clawed_back += points
    purchase.points_returned += returned
    tiers.evaluate(session, programme.current(session, gw), member, now)
    return record, purchase, member, False


def record_action(session: Session, gw: Gateway, *, idempotency_key: str, body_hash: str, member: Member, kind: str,
                  occurred_at: datetime, now: datetime) -> tuple[Action, Member, bool]:
    existing = session.scalars(select(Action).where(Action.idempotency_key == idempotency_key)).first()
    if existing is not None:
        _replay(existing, body_hash)
        return existing, session.get(Member, existing.member_id), True
    s, p = gw.settings, programme.current(session, gw)
    if kind not in p.earn.action_points:
        raise GatewayError(f"unknown action {kind!r}; expected one of {', '.join(p.earn.action_points)}")
    if (timing := Window.at(now, p.earn.backdating_days).refuses(occurred_at)) is not None:
        raise timing
    member = members.lock(session, member)
    members.require_active(member)
    consent.require(session, member, Purpose.LOYALTY_CORE)
    if (early := before_enrolment(occurred_at, as_utc(member.enrolled_at))) is not None:
        raise early
    day, earned_today, latest = _earned_that_day(session, member, occurred_at.astimezone(s.zone), s.zone)
    points = rules.capped(p.earn.action_points[kind], earned_today, p.earn.daily_cap)
    action = Action(idempotency_key=idempotency_key, request_hash=body_hash, member_id=member.id, kind=kind, points=points,
                    occurred_at=occurred_at.astimezone(UTC))
    session.add(action)
    if points:
        ledger.credit(session, member, "action", points, "issued", now, p.earn.validity_days, ref=f"action:{kind}")
    _note_earned(member, day, earned_today, points, latest)
    session.flush()
    tiers.evaluate(session, p, member, now)
    return action, member, False
