"""The brand's rewards catalogue: members spend their points on coupons, goods, digital benefits and
experiences (P-10, P-11), and coupons are used at the till (P-36).

Concurrency is settled by the database, not by reading first: stock is taken by one conditional
UPDATE (`stock > 0`), a coupon is used by one (`status = 'open'`), and a member's orders are counted
under the member's row lock, so no interleaving oversells, double-uses or exceeds a limit, on SQLite
(one writer) as on PostgreSQL (the second UPDATE waits for the first and re-checks its condition).

Points leave through the ledger's `redeemed` account; a cancelled order puts them back into the very
lots they came from (ledger.reverse_debit) and returns its item to stock.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from uuid_utils import uuid7

from privacy.receipts import Purpose

from ..db import as_utc
from ..errors import Conflict, GatewayError, IdempotencyMismatch, NotFound
from ..models import Coupon, LedgerTxn, Member, Reward, RewardOrder
from ..runtime import Gateway
from . import audit, consent, ledger, members, notices, tiers, webhooks

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
    if spec.min_tier is not None and spec.min_tier not in {t.name for t in gw.settings.tiers}:
        raise GatewayError(f"unknown tier {spec.min_tier!r}; the tiers are {', '.join(t.name for t in gw.settings.tiers)}")
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


def refusal(gw: Gateway, reward: Reward, member: Member, ordered: int, now: datetime) -> str | None:
    """Why this member cannot order this reward now (None: they can, points permitting)."""
    if not on_offer(reward, now):
        return "not on offer now"
    if reward.min_tier is not None and tiers.rank(gw.settings, member.tier) < tiers.rank(gw.settings, reward.min_tier):
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


def order(session: Session, gw: Gateway, member: Member, code: str, *, idempotency_key: str, body_hash: str,
          now: datetime) -> Ordered:
    """The member orders one of a reward, paying its points price now (idempotent on the key)."""
    existing = replay(session, idempotency_key, body_hash)
    if existing is not None:
        return existing
    member = members.lock(session, member)  # serialises the member's orders: the limit is counted under it
    row = reserve(session, gw, member, code, idempotency_key=idempotency_key, body_hash=body_hash, now=now)
    pay(session, gw, member, row, now)
    return _outcome(session, row, replayed=False)


def replay(session: Session, idempotency_key: str, body_hash: str) -> Ordered | None:
    """The order this key already made, or None (a different request under the key is refused)."""
    existing = session.scalars(select(RewardOrder).where(RewardOrder.idempotency_key == idempotency_key)).first()
    if existing is None:
        return None
    if existing.request_hash != body_hash:
        raise IdempotencyMismatch("this idempotency key was used for a different request")
    return _outcome(session, existing, replayed=True)


def reserve(session: Session, gw: Gateway, member: Member, code: str, *, idempotency_key: str, body_hash: str,
            now: datetime) -> RewardOrder:
    """An order awaiting payment: the member (locked by the caller) may order the reward, and one of
    its stock is taken for them."""
    members.require_active(member)
    consent.require(session, member, Purpose.LOYALTY_CORE)
    reward = get(session, code)
    why = refusal(gw, reward, member, ordered_counts(session, member.id).get(reward.id, 0), now)
    if why is not None:
        raise Conflict(f"reward {code!r} cannot be ordered: {why}", reason=why)
    if reward.stock is not None:
        taken = session.execute(update(Reward).where(Reward.id == reward.id, Reward.stock > 0)
                                .values(stock=Reward.stock - 1)).rowcount
        if taken != 1:
            raise Conflict(f"reward {code!r} cannot be ordered: out of stock", reason="out of stock")
    row = RewardOrder(order_ref=str(uuid7()), idempotency_key=idempotency_key, request_hash=body_hash, member_id=member.id,
                      reward_id=reward.id, reward_version=reward.version, points=reward.points_price,
                      status="awaiting_payment", debit_txn_id=None, created_at=now, updated_at=now)
    session.add(row)
    session.flush()
    return row


def pay(session: Session, gw: Gateway, member: Member, row: RewardOrder, now: datetime) -> None:
    """Take an awaiting order's points from the member (locked by the caller) and grant it: a coupon
    is issued, a good is to ship, a digital benefit or experience is the member's."""
    reward = session.get(Reward, row.reward_id)
    txn = ledger.debit(session, member, "reward", row.points, REDEEMED, now, ref=row.order_ref)
    row.debit_txn_id, row.status, row.updated_at = txn.id, FIRST_STATUS[reward.kind], now
    if reward.kind == "coupon":
        coupon = Coupon(order_id=row.id, member_id=member.id, code_hash="", value_minor=reward.coupon_value_minor,
                        min_spend_minor=reward.coupon_min_spend_minor or 0, status="open",
                        expires_at=now + timedelta(days=reward.coupon_valid_days or COUPON_DAYS))
        session.add(coupon)
        session.flush()  # its id makes its code
        coupon.code_hash = code_hash(coupon_code(gw, coupon.id))
    webhooks.emit(session, "reward_order.granted", [_event(row, reward, member.member_ref)], now)
    notices.queue(session, member.id, "reward_ordered", f"order:{row.order_ref}",
                  {"reward": reward.name, "kind": reward.kind, "points": row.points,
                   "coupon_expires_at": None if reward.kind != "coupon" else as_utc(coupon.expires_at).strftime("%Y-%m-%d %H:%M UTC")}, now)


def pay_awaited(session: Session, gw: Gateway, locked: dict[int, Member], order_refs: list[str], now: datetime) -> None:
    """The alliance points for these orders were burned on chain and their points credited: grant them.
    `locked`: their members, locked by the caller."""
    for row in session.scalars(select(RewardOrder).where(RewardOrder.order_ref.in_(order_refs)).with_for_update()):
        if row.status == "awaiting_payment":
            pay(session, gw, locked[row.member_id], row, now)


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
    row = session.scalars(query.with_for_update() if for_update else query).first()
    if row is None:
        raise NotFound("no such order")
    return row


def change_status(session: Session, gw: Gateway, actor: str, order_ref: str, status: str, now: datetime,
                  member_id: int | None = None) -> Ordered:
    """Move an order on (shipped, delivered) or cancel it: its points go back to the member, its item
    back to stock, its coupon is void. Asking for the status it already has changes nothing (a retry).
    `member_id`: the member asking (they may only cancel their own order, and only before it ships)."""
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
        member = members.lock(session, session.get(Member, row.member_id))
        ledger.reverse_debit(session, member, session.get(LedgerTxn, row.debit_txn_id), "reward_cancel", REDEEMED, now)
        session.execute(update(Reward).where(Reward.id == row.reward_id, Reward.stock.is_not(None))
                        .values(stock=Reward.stock + 1))
    row.status, row.updated_at = status, now
    audit.record(session, actor, f"reward_order.{status}", now, order_ref=order_ref)
    webhooks.emit(session, f"reward_order.{status}",
                  [_event(row, session.get(Reward, row.reward_id), session.get(Member, row.member_id).member_ref)], now)
    if status == "shipped":
        notices.queue(session, row.member_id, "reward_shipped", f"order:{order_ref}:shipped",
                      {"reward": session.get(Reward, row.reward_id).name}, now)
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

