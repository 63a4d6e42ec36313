"""The brand's rewards catalogue: members spend their points on coupons, goods, digital benefits and
experiences (P-10, P-11), and coupons are used at the till (P-36).

Concurrency is settled by locks, not by reading first: concurrent orders are written in one
transaction (`order_many`) that locks their members, then their rewards, in id order, and counts
stock and per-member limits down under those locks; a coupon presented at the till is locked with
its purchase (purchases.ingest). So no interleaving oversells, double-uses or exceeds a limit, on
SQLite (one writer) as on PostgreSQL (row locks, always members first: no lock-order cycle).

Points leave through the ledger's `redeemed` account; a cancelled order puts them back into the very
lots they came from (ledger.reverse_debit) and returns its item to stock.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import exists, func, select, update
from sqlalchemy.orm import Session
from uuid_utils import uuid7

from privacy.receipts import Purpose

from ..db import allocate_ids, as_utc, committed_replaying_conflicts, insert_many, one_of, update_many
from ..errors import Conflict, ConsentRequired, GatewayError, IdempotencyMismatch, InsufficientPoints, MemberNotActive, NotFound
from ..models import Consent, Coupon, LedgerTxn, Member, Reward, RewardOrder
from ..runtime import Gateway
from ..settings import Programme
from . import audit, ledger, members, notices, programme, tiers, webhooks

KINDS = ("coupon", "good", "digital", "experience")
REDEEMED = "redeemed"  # the ledger account points spent at the brand go to
# Status a new order starts in, by kind; then where each status may go (cancelled returns the points).
FIRST_STATUS = {"coupon": "issued", "good": "ordered", "digital": "granted", "experience": "granted"}
NEXT_STATUS = {"awaiting_payment": set(), "ordered": {"shipped", "cancelled"}, "shipped": {"delivered", "cancelled"}, "issued": {"cancelled"},
               "granted": {"cancelled"}, "delivered": set(), "cancelled": set()}
COUPON_DAYS = 7  # P-36: 7 days (with a minimum spend) were used more, and wasted less, than 30


class RewardSpec(NamedTuple):
    """What an operator defines (schemas.RewardDefinition has the bounds)."""

    kind: str
    name: str
    description: str
    points_price: int
    stock: int | None
    available_from: datetime
    available_until: datetime | None
    min_tier: str | None
    per_member_limit: int | None
    coupon_value_minor: int | None
    coupon_min_spend_minor: int | None
    coupon_valid_days: int | None
    active: bool


def _spec_json(spec: RewardSpec) -> dict[str, Any]:
    out = spec._asdict()
    for key in ("available_from", "available_until"):
        if out[key] is not None:
            out[key] = as_utc(out[key]).strftime("%Y-%m-%dT%H:%M:%SZ")
    return out


def define(session: Session, gw: Gateway, actor: str, code: str, spec: RewardSpec, now: datetime) -> Reward:
    """Create a reward or replace its definition with a new version (the whole definition goes into
    the admin audit log, so every version can be read back)."""
    if spec.kind == "coupon":
        if spec.coupon_value_minor is None:
            raise GatewayError("a coupon needs coupon_value_minor: what it takes off a purchase")
    elif spec.coupon_value_minor is not None or spec.coupon_min_spend_minor is not None or spec.coupon_valid_days is not None:
        raise GatewayError("coupon_value_minor, coupon_min_spend_minor and coupon_valid_days are for coupons only")
    ladder = programme.current(session, gw).tiers
    if spec.min_tier is not None and spec.min_tier not in {t.name for t in ladder}:
        raise GatewayError(f"unknown tier {spec.min_tier!r}; the tiers are {', '.join(t.name for t in ladder)}")
    if spec.available_until is not None and spec.available_until <= spec.available_from:
        raise GatewayError("available_until must be after available_from")
    if spec.kind == "coupon" and spec.coupon_valid_days is None:
        spec = spec._replace(coupon_valid_days=COUPON_DAYS)
    reward = session.scalars(select(Reward).where(Reward.code == code).with_for_update()).first()
    if reward is None:
        reward = Reward(code=code, version=0)
        session.add(reward)
    elif reward.kind != spec.kind:
        raise Conflict(f"reward {code!r} is a {reward.kind}; a reward keeps its kind (define a new one)")
    for key, value in spec._asdict().items():
        setattr(reward, key, value)
    reward.version += 1
    reward.updated_at = now
    session.flush()
    audit.record(session, actor, "reward.defined", now, code=code, version=reward.version, definition=_spec_json(spec))
    return reward


def get(session: Session, code: str, *, for_update: bool = False) -> Reward:
    query = select(Reward).where(Reward.code == code)
    reward = session.scalars(query.with_for_update() if for_update else query).first()
    if reward is None:
        raise NotFound("no such reward")
    return reward


def on_offer(reward: Reward, now: datetime) -> bool:
    return (reward.active and as_utc(reward.available_from) <= now
            and (reward.available_until is None or now < as_utc(reward.available_until)))


def catalogue(session: Session, now: datetime, include_inactive: bool = False) -> list[Reward]:
    rewards = session.scalars(select(Reward).order_by(Reward.points_price, Reward.code)).all()
    return [r for r in rewards if include_inactive or on_offer(r, now)]


def ordered_counts(session: Session, member_id: int) -> dict[int, int]:
    """Reward id -> the member's orders of it that were not cancelled."""
    return dict(session.execute(select(RewardOrder.reward_id, func.count()).where(
        RewardOrder.member_id == member_id, RewardOrder.status != "cancelled").group_by(RewardOrder.reward_id)).all())


def refusal(in_force: Programme, reward: Reward, member: Member, ordered: int, now: datetime) -> str | None:
    """Why this member cannot order this reward now (None: they can, points permitting)."""
    if not on_offer(reward, now):
        return "not on offer now"
    if reward.min_tier is not None and tiers.rank(in_force, member.tier) < tiers.rank(in_force, reward.min_tier):
        return f"for {reward.min_tier} members and above"
    if reward.per_member_limit is not None and ordered >= reward.per_member_limit:
        return f"limited to {reward.per_member_limit} per member"
    if reward.stock is not None and reward.stock <= 0:
        return "out of stock"
    return None


class Ordered(NamedTuple):
    order: RewardOrder
    reward: Reward
    coupon: Coupon | None
    balance: int
    replayed: bool


class OrderItem(NamedTuple):
    member_id: int
    code: str
    idempotency_key: str
    body_hash: str
    pay_now: bool = True  # False: paid with AP later (it waits, holding its item, as awaiting_payment)


def order(session: Session, gw: Gateway, member: Member, code: str, *, idempotency_key: str, body_hash: str,
          now: datetime, pay_now: bool = True) -> Ordered:
    """One order (`order_many` of one): its refusal is raised."""
    [out] = order_many(session, gw, [OrderItem(member.id, code, idempotency_key, body_hash, pay_now)], now)
    if isinstance(out, GatewayError):
        raise out
    return out


def order_many(session: Session, gw: Gateway, items: list[OrderItem], now: datetime) -> list[Ordered | GatewayError]:
    """Members order rewards, in order, each with exactly the rules a lone order gets (idempotency,
    active member, loyalty_core consent, offer window, tier, per-member limit, stock, points): one
    read per kind of fact and one write per table for the whole batch, so concurrent orders grouped
    into one transaction cost a few statements, not a dozen each. A refused order gets its own error
    and never stops the others.

    The members and the rewards are locked (in id order) and stock is counted down here, so no
    interleaving oversells or exceeds a limit on SQLite (one writer) or PostgreSQL (row locks)."""
    out: list[Ordered | GatewayError | None] = [None] * len(items)
    in_force = programme.current(session, gw)
    stored = {row.idempotency_key: row for row in session.scalars(
        select(RewardOrder).where(one_of(session, RewardOrder.idempotency_key, {it.idempotency_key for it in items})))}
    for i, it in enumerate(items):
        if (old := stored.get(it.idempotency_key)) is not None:
            out[i] = (IdempotencyMismatch("this idempotency key was used for a different request") if old.request_hash != it.body_hash
                      else _outcome(session, old, replayed=True))
    todo = [i for i in range(len(items)) if out[i] is None]
    if not todo:
        return out  # type: ignore[return-value]
    members_t, rewards_t = Member.__table__, Reward.__table__
    member_ids = sorted({items[i].member_id for i in todo})
    consented = exists().where(Consent.member_id == members_t.c.id, Consent.purpose == Purpose.LOYALTY_CORE.value, Consent.granted.is_(True))
    people = {row.id: _Buyer(row.id, row.member_ref, row.status, row.tier, row.balance, row.consented) for row in session.execute(
        select(members_t.c.id, members_t.c.member_ref, members_t.c.status, members_t.c.tier, members_t.c.balance, consented.label("consented"))
        .where(one_of(session, members_t.c.id, member_ids)).order_by(members_t.c.id).with_for_update(of=members_t))}
    offered = {row.code: Reward(**row._mapping) for row in session.execute(
        select(rewards_t).where(one_of(session, rewards_t.c.code, {items[i].code for i in todo})).order_by(rewards_t.c.id).with_for_update())}
    limited = [r.id for r in offered.values() if r.per_member_limit is not None]
    counts: dict[tuple[int, int], int] = {}
    if limited:
        counts = {(m, r): n for m, r, n in session.execute(
            select(RewardOrder.member_id, RewardOrder.reward_id, func.count())
            .where(one_of(session, RewardOrder.member_id, member_ids), RewardOrder.reward_id.in_(limited), RewardOrder.status != "cancelled")
            .group_by(RewardOrder.member_id, RewardOrder.reward_id))}
    lots = ledger.lots_of(session, {items[i].member_id for i in todo if items[i].pay_now}, now)
    taken: dict[str, int] = {}  # keys this batch ordered so far -> their index
    retries: list[tuple[int, int]] = []  # (index, index of the first with its key)
    placed: list[tuple[int, RewardOrder, Reward, _Buyer]] = []
    for i in todo:
        it = items[i]
        if (first := taken.get(it.idempotency_key)) is not None:  # a retry within the batch
            if items[first].body_hash != it.body_hash:
                out[i] = IdempotencyMismatch("this idempotency key was used for a different request")
            else:
                retries.append((i, first))
            continue
        buyer, reward = people.get(it.member_id), offered.get(it.code)
        if buyer is None or reward is None:
            out[i] = NotFound("no such reward" if buyer is not None else "no such member")
            continue
        if buyer.status != "active":
            out[i] = MemberNotActive(f"the account is {buyer.status}")
            continue
        if not buyer.consented:
            out[i] = ConsentRequired(f"the member has not consented to {Purpose.LOYALTY_CORE.value}", purpose=Purpose.LOYALTY_CORE.value)
            continue
        if (why := refusal(in_force, reward, buyer, counts.get((buyer.id, reward.id), 0), now)) is not None:
            out[i] = Conflict(f"reward {it.code!r} cannot be ordered: {why}", reason=why)
            continue
        if it.pay_now and (available := sum(lot[1] for lot in lots.get(buyer.id, []))) < reward.points_price:
            out[i] = InsufficientPoints(f"{reward.points_price} points needed, {available} available", needed=reward.points_price,
                                        available=available)
            continue
        if reward.stock is not None:
            reward.stock -= 1
        counts[(buyer.id, reward.id)] = counts.get((buyer.id, reward.id), 0) + 1
        row = RewardOrder(order_ref=str(uuid7()), idempotency_key=it.idempotency_key, request_hash=it.body_hash, member_id=buyer.id,
                          reward_id=reward.id, reward_version=reward.version, points=reward.points_price, status="awaiting_payment",
                          debit_txn_id=None, created_at=now, updated_at=now)
        placed.append((i, row, reward, buyer))
        taken[it.idempotency_key] = i
        out[i] = Ordered(row, reward, None, buyer.balance, False)
    if placed:
        _place(session, gw, items, placed, lots, out, now)
    for i, first in retries:
        out[i] = out[first]._replace(replayed=True)
    return out  # type: ignore[return-value]


def _place(session: Session, gw: Gateway, items: list[OrderItem], placed: list[tuple[int, RewardOrder, Reward, _Buyer]],
           lots: dict[int, list[list[int]]], out: list, now: datetime) -> None:
    """Write the orders `order_many` accepted and their stock, and grant those paid with points now."""
    conn = session.connection()
    for (_, row, _, _), order_id in zip(placed, allocate_ids(conn, RewardOrder.__table__, len(placed)), strict=True):
        row.id = order_id
    insert_many(conn, RewardOrder.__table__, _ORDER_COLUMNS, [tuple(getattr(row, c) for c in _ORDER_COLUMNS) for _, row, _, _ in placed])
    update_many(conn, Reward.__table__, ("stock",), [(r.stock, r.id) for r in {r.id: r for _, _, r, _ in placed}.values() if r.stock is not None])
    paying = [(i, row, reward, buyer) for i, row, reward, buyer in placed if items[i].pay_now]
    coupons = grant(session, gw, [(row, reward, buyer) for _, row, reward, buyer in paying], lots, now)
    for (i, row, reward, buyer), coupon in zip(paying, coupons, strict=True):
        out[i] = Ordered(row, reward, coupon, buyer.balance, False)


def order_committed(gw: Gateway, items: list[OrderItem]) -> list[Ordered | GatewayError]:
    """`order_many` in a transaction of its own (concurrent orders, grouped: gateway/groupcommit.py)."""
    return committed_replaying_conflicts(gw.sessions, lambda session: order_many(session, gw, items, gw.now()))


@dataclass(slots=True)
class _Buyer:
    """A locked member, as an order needs it."""

    id: int
    member_ref: str
    status: str
    tier: str
    balance: int
    consented: bool = True


_ORDER_COLUMNS = ("id", "order_ref", "idempotency_key", "request_hash", "member_id", "reward_id", "reward_version", "points", "status",
                  "debit_txn_id", "created_at", "updated_at")


def grant(session: Session, gw: Gateway, orders: list[tuple[RewardOrder, Reward, _Buyer]], lots: dict[int, list[list[int]]],
          now: datetime) -> list[Coupon | None]:
    """Pay orders awaiting payment with their members' points (locked by the caller, with `lots` from
    ledger.lots_of) and grant them: a coupon is issued, a good is to ship, a digital benefit or
    experience is the member's; the member is told and the brand's systems hear of it. Returns each
    order's coupon (None if not a coupon)."""
    if not orders:
        return []
    conn = session.connection()
    debits, lots_left = [], {}
    for row, reward, buyer in orders:
        takes = ledger.take_fifo(lots[buyer.id], row.points)
        debits.append(ledger.Debit(buyer.id, "reward", row.points, REDEEMED, row.order_ref, takes))
        for lot_id, _ in takes:
            lots_left[lot_id] = next(left for lid, left in lots[buyer.id] if lid == lot_id)
        buyer.balance -= row.points
    txn_ids = ledger.debit_many(session, debits, lots_left, now)
    update_many(conn, RewardOrder.__table__, ("debit_txn_id", "status", "updated_at"),
                [(txn_id, FIRST_STATUS[reward.kind], now, row.id) for (row, reward, _), txn_id in zip(orders, txn_ids, strict=True)])
    update_many(conn, Member.__table__, ("balance",), [(buyer.balance, buyer.id) for buyer in {b.id: b for _, _, b in orders}.values()])
    coupons: list[Coupon | None] = []
    for (row, reward, buyer), txn_id in zip(orders, txn_ids, strict=True):
        row.debit_txn_id, row.status, row.updated_at = txn_id, FIRST_STATUS[reward.kind], now
        coupons.append(None if reward.kind != "coupon" else Coupon(
            order_id=row.id, member_id=buyer.id, value_minor=reward.coupon_value_minor, min_spend_minor=reward.coupon_min_spend_minor or 0,
            status="open", expires_at=now + timedelta(days=reward.coupon_valid_days or COUPON_DAYS), purchase_id=None))
    issued = [c for c in coupons if c is not None]
    for coupon, coupon_id in zip(issued, allocate_ids(conn, Coupon.__table__, len(issued)), strict=True):
        coupon.id = coupon_id
        coupon.code_hash = code_hash(coupon_code(gw, coupon_id))
    insert_many(conn, Coupon.__table__, _COUPON_COLUMNS, [tuple(getattr(c, k) for k in _COUPON_COLUMNS) for c in issued])
    webhooks.emit(session, "reward_order.granted", [_event(row, reward, buyer.member_ref) for row, reward, buyer in orders], now)
    notices.queue(session, [(buyer.id, "reward_ordered", f"order:{row.order_ref}",
                             {"reward": reward.name, "kind": reward.kind, "points": row.points,
                              "coupon_expires_at": None if coupon is None else as_utc(coupon.expires_at).strftime("%Y-%m-%d %H:%M UTC")})
                            for (row, reward, buyer), coupon in zip(orders, coupons, strict=True)], now)
    return coupons


_COUPON_COLUMNS = ("id", "order_id", "member_id", "code_hash", "value_minor", "min_spend_minor", "expires_at", "status", "purchase_id")


def pay_awaited(session: Session, gw: Gateway, order_refs: list[str], now: datetime) -> None:
    """The alliance points for these orders were burned on chain and their points credited: grant
    them. Their members are locked by the caller."""
    session.flush()  # the credits the caller made through the ORM, before the statements below read the lots
    rows = session.scalars(select(RewardOrder).where(RewardOrder.order_ref.in_(order_refs), RewardOrder.status == "awaiting_payment")
                           .with_for_update()).all()
    if not rows:
        return
    buyers = {m.id: _Buyer(m.id, m.member_ref, m.status, m.tier, m.balance) for m in
              session.scalars(select(Member).where(Member.id.in_({r.member_id for r in rows})))}
    lots = ledger.lots_of(session, set(buyers), now)
    grant(session, gw, [(row, session.get(Reward, row.reward_id), buyers[row.member_id]) for row in rows], lots, now)
    for row in rows:
        session.expire(row)  # written by the statements above
    for member in session.scalars(select(Member).where(Member.id.in_(set(buyers)))):
        session.expire(member, ["balance"])


def release_awaited(session: Session, order_ref: str, reason: str, now: datetime) -> None:
    """The chain refused the payment of this order: it is cancelled and its item goes back to stock
    (no point was taken)."""
    row = get_order(session, order_ref, for_update=True)
    if row.status != "awaiting_payment":
        return
    session.execute(update(Reward).where(Reward.id == row.reward_id, Reward.stock.is_not(None)).values(stock=Reward.stock + 1))
    row.status, row.updated_at = "cancelled", now
    audit.record(session, "alliance-chain", "reward_order.cancelled", now, order_ref=order_ref, reason=reason[:200])
    webhooks.emit(session, "reward_order.cancelled",
                  [_event(row, session.get(Reward, row.reward_id), session.get(Member, row.member_id).member_ref)], now)


def _event(row: RewardOrder, reward: Reward, member_ref: str) -> dict:
    return {"order_ref": row.order_ref, "member_ref": member_ref, "reward": reward.code, "kind": reward.kind, "points": row.points,
            "status": row.status}


def _outcome(session: Session, row: RewardOrder, replayed: bool) -> Ordered:
    coupon = session.scalars(select(Coupon).where(Coupon.order_id == row.id)).first()
    return Ordered(row, session.get(Reward, row.reward_id), coupon, session.get(Member, row.member_id).balance, replayed)


def get_order(session: Session, order_ref: str, *, for_update: bool = False) -> RewardOrder:
    query = select(RewardOrder).where(RewardOrder.order_ref == order_ref)
    row = session.scalars(query.with_for_update().execution_options(populate_existing=True) if for_update else query).first()
    if row is None:
        raise NotFound("no such order")
    return row


def change_status(session: Session, gw: Gateway, actor: str, order_ref: str, status: str, now: datetime,
                  member_id: int | None = None) -> Ordered:
    """Move an order on (shipped, delivered) or cancel it: its points go back to the member, its item
    back to stock, its coupon is void. Asking for the status it already has changes nothing (a retry).
    `member_id`: the member asking (they may only cancel their own order, and only before it ships)."""
    # The member first, then the order and its coupon: every writer locks members before anything
    # else (orders, purchases), so no two can wait for each other (PostgreSQL).
    member = members.lock(session, session.get(Member, get_order(session, order_ref).member_id))
    row = get_order(session, order_ref, for_update=True)
    if member_id is not None and row.member_id != member_id:
        raise NotFound("no such order")
    if row.status == status:
        return _outcome(session, row, replayed=True)
    if status not in NEXT_STATUS[row.status]:
        raise Conflict(f"an order {row.status} cannot become {status}")
    coupon = session.scalars(select(Coupon).where(Coupon.order_id == row.id).with_for_update()).first()
    if status == "cancelled":
        if member_id is not None and row.status not in ("ordered", "issued"):
            raise Conflict("an order already shipped or granted is cancelled by the brand, not the member")
        if coupon is not None:
            voided = session.execute(update(Coupon).where(Coupon.id == coupon.id, Coupon.status == "open")
                                     .values(status="void")).rowcount
            if voided != 1:
                raise Conflict("the coupon was already used: its order cannot be cancelled")
        ledger.reverse_debit(session, member, session.get(LedgerTxn, row.debit_txn_id), "reward_cancel", REDEEMED, now)
        session.execute(update(Reward).where(Reward.id == row.reward_id, Reward.stock.is_not(None))
                        .values(stock=Reward.stock + 1))
    row.status, row.updated_at = status, now
    audit.record(session, actor, f"reward_order.{status}", now, order_ref=order_ref)
    webhooks.emit(session, f"reward_order.{status}", [_event(row, session.get(Reward, row.reward_id), member.member_ref)], now)
    if status == "shipped":
        notices.queue(session, [(row.member_id, "reward_shipped", f"order:{order_ref}:shipped",
                                 {"reward": session.get(Reward, row.reward_id).name})], now)
    session.flush()
    return _outcome(session, row, replayed=False)


def member_orders(session: Session, member_id: int) -> list[tuple[RewardOrder, Reward, Coupon | None]]:
    rows = session.execute(select(RewardOrder, Reward, Coupon).join(Reward, Reward.id == RewardOrder.reward_id)
                           .outerjoin(Coupon, Coupon.order_id == RewardOrder.id)
                           .where(RewardOrder.member_id == member_id).order_by(RewardOrder.id.desc())).all()
    return [tuple(r) for r in rows]


# Coupons -----------------------------------------------------------------------------------------

_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud and typed at a till


def coupon_code(gw: Gateway, coupon_id: int) -> str:
    """The coupon's code: 12 characters of _CODE_ALPHABET in three groups of four (60 bits), from an HMAC
    of its id under the brand's coupon key."""
    digest = int.from_bytes(hmac.digest(gw.coupon_key, b"coupon:%d" % coupon_id, "sha256")[:8], "big")
    chars = [_CODE_ALPHABET[(digest >> (5 * i)) & 31] for i in range(12)]
    return "-".join("".join(chars[i:i + 4]) for i in (0, 4, 8))


def code_hash(code: str) -> str:
    return hashlib.sha256(normalise_code(code).encode()).hexdigest()


def normalise_code(code: str) -> str:
    """As typed: case, spaces and dashes do not matter."""
    plain = "".join(ch for ch in code.upper() if ch not in " -")
    return "-".join(plain[i:i + 4] for i in range(0, len(plain), 4))

