"""Data-subject rights: a copy of everything held about a member, and erasure by crypto-shredding."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from privacy.receipts import Purpose

from ..db import as_utc, scrub_wal, transaction
from ..errors import Conflict
from ..models import (
    Action,
    ChainTx,
    Consent,
    Coupon,
    Exchange,
    Gift,
    LedgerEntry,
    LedgerTxn,
    Member,
    MemberIdentifier,
    MemberToken,
    Notice,
    PiiField,
    PointLot,
    Purchase,
    Redemption,
    RewardOrder,
    TierChange,
    WalletChallenge,
    WebhookAttempt,
    WebhookDelivery,
)
from ..runtime import Gateway
from . import audit, consent, datakeys, gifts, members, rewards


def _unlink(session: Session, member: Member) -> None:
    """What stays after an erasure is what the books and the settlement need (amounts, references),
    nothing that joins the member to another record: no wallet address (the same wallet may have an
    account with personal data at another brand), no signature, and times to the day (a till's or a
    card issuer's log matches an exact one). README: "What erasure keeps"."""
    mid = member.id
    # The signed transactions that carried them (their calldata holds the wallet and the signature),
    # unless a pending row still needs one to be broadcast again.
    hashes = {h for model in (Exchange, Redemption) for h in session.scalars(
        select(model.tx_hash).where(model.member_id == mid, model.tx_hash.is_not(None)))}
    needed = {h for model in (Exchange, Redemption) for h in session.scalars(
        select(model.tx_hash).where(model.tx_hash.in_(hashes), model.status == "pending"))} if hashes else set()
    if hashes - needed:
        session.execute(delete(ChainTx).where(ChainTx.hash.in_(hashes - needed)))
    for row in session.scalars(select(Exchange).where(Exchange.member_id == mid)):
        row.wallet_address = None
        row.created_at, row.updated_at = _day(row.created_at), _day(row.updated_at)
    for row in session.scalars(select(Redemption).where(Redemption.member_id == mid)):
        row.owner = row.signature = None
        row.deadline = 0  # the member's own choice of time: not needed once the redemption is final
        row.created_at, row.updated_at = _day(row.created_at), _day(row.updated_at)
    for row in session.scalars(select(Purchase).where(Purchase.member_id == mid)):
        row.occurred_at, row.received_at = _day(row.occurred_at), _day(row.received_at)
    for row in session.scalars(select(Action).where(Action.member_id == mid)):
        row.occurred_at = _day(row.occurred_at)
    for row in session.scalars(select(TierChange).where(TierChange.member_id == mid)):
        row.changed_at = _day(row.changed_at)
    for row in session.scalars(select(PointLot).where(PointLot.member_id == mid)):
        row.earned_at, row.expires_at = _day(row.earned_at), _day(row.expires_at)
    txns = select(LedgerEntry.txn_id).where(LedgerEntry.member_id == mid)
    for row in session.scalars(select(LedgerTxn).where(LedgerTxn.id.in_(txns))):
        row.created_at = _day(row.created_at)
    for row in session.scalars(select(Consent).where(Consent.member_id == mid)):
        row.updated_at = _day(row.updated_at)
    for row in session.scalars(select(RewardOrder).where(RewardOrder.member_id == mid)):
        row.created_at, row.updated_at = _day(row.created_at), _day(row.updated_at)
    for row in session.scalars(select(Gift).where((Gift.sender_id == mid) | (Gift.recipient_id == mid))):
        row.created_at = _day(row.created_at)
    # An open coupon is void: nobody may spend an erased member's coupon (its code still derives from its id).
    session.execute(update(Coupon).where(Coupon.member_id == mid, Coupon.status == "open").values(status="void"))
    member.enrolled_at, member.tier_since = _day(member.enrolled_at), _day(member.tier_since)


def _day(moment: datetime) -> datetime:
    return as_utc(moment).replace(hour=0, minute=0, second=0, microsecond=0)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else as_utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def export(session: Session, gw: Gateway, member: Member) -> dict[str, Any]:
    """Everything the brand holds about the member, decrypted (nothing personal once erased)."""
    m = member
    txns = session.execute(
        select(LedgerTxn.id, LedgerTxn.kind, LedgerTxn.ref, LedgerTxn.created_at, LedgerEntry.amount)
        .join(LedgerEntry, LedgerEntry.txn_id == LedgerTxn.id)
        .where(LedgerEntry.member_id == m.id, LedgerEntry.account == "member").order_by(LedgerTxn.id))
    return {
        "member": {"member_ref": m.member_ref, "status": m.status, "enrolled_at": _iso(m.enrolled_at),
                   "jurisdiction": m.jurisdiction, "tier": m.tier, "tier_since": _iso(m.tier_since),
                   "downgrade_due_at": _iso(m.downgrade_due_at), "birth_month": m.birth_month,
                   "wallet_address": m.wallet_address, "erased_at": _iso(m.erased_at)},
        "personal_data": members.pii(session, gw, m),
        "identifiers": [{"kind": k, "pseudonym": p} for p, k in session.execute(
            select(MemberIdentifier.pseudonym, MemberIdentifier.kind).where(MemberIdentifier.member_id == m.id))],
        "consents": consent.current(session, m.id),
        "consent_history": consent.history(session, m.id),
        "balance": m.balance,
        "ledger": [{"txn": t, "kind": k, "ref": r, "at": _iso(at), "amount": a} for t, k, r, at, a in txns],
        "lots": [{"amount": lot.amount, "remaining": lot.remaining, "earned_at": _iso(lot.earned_at),
                  "expires_at": _iso(lot.expires_at)} for lot in session.scalars(select(PointLot).where(PointLot.member_id == m.id))],
        "purchases": [{"purchase_ref": p.purchase_ref, "amount_minor": p.amount_minor, "refunded_minor": p.refunded_minor,
                       "currency": p.currency, "channel": p.channel, "occurred_at": _iso(p.occurred_at), "points": p.points,
                       "clawed_back": p.clawed_back, "points_burned": p.points_burned, "points_returned": p.points_returned,
                       "discount_minor": p.discount_minor}
                      for p in session.scalars(select(Purchase).where(Purchase.member_id == m.id))],
        "reward_orders": [{"order_ref": o.order_ref, "reward": r.code, "reward_version": o.reward_version, "points": o.points,
                           "status": o.status, "ordered_at": _iso(o.created_at),
                           "coupon": None if c is None else {"value_minor": c.value_minor, "expires_at": _iso(c.expires_at),
                                                             "status": c.status}}
                          for o, r, c in rewards.member_orders(session, m.id)],
        "gifts": [line | {"at": _iso(line["at"])} for line in gifts.history(session, m.id, limit=None)],
        "actions": [{"kind": a.kind, "points": a.points, "occurred_at": _iso(a.occurred_at)}
                    for a in session.scalars(select(Action).where(Action.member_id == m.id))],
        "tier_changes": [{"from": c.from_tier, "to": c.to_tier, "reason": c.reason, "at": _iso(c.changed_at)}
                         for c in session.scalars(select(TierChange).where(TierChange.member_id == m.id))],
        "notices": [{"kind": n.kind, "data": json.loads(n.data), "status": n.status, "queued_at": _iso(n.created_at),
                     "sent_at": _iso(n.sent_at)} for n in session.scalars(select(Notice).where(Notice.member_id == m.id).order_by(Notice.id))],
        "exchanges": [{"exchange_ref": e.exchange_ref, "ap_amount": e.ap_amount, "brand_points": e.brand_points,
                       "status": e.status, "wallet_address": e.wallet_address, "tx_hash": e.tx_hash}
                      for e in session.scalars(select(Exchange).where(Exchange.member_id == m.id))],
        "redemptions": [{"redemption_ref": r.redemption_ref, "ap_amount": r.ap_amount, "reward_points": r.reward_points,
                         "status": r.status, "owner": r.owner, "tx_hash": r.tx_hash}
                        for r in session.scalars(select(Redemption).where(Redemption.member_id == m.id))],
    }


def erase_now(gw: Gateway, pick: Callable[[Session], Member], actor: str) -> dict[str, Any]:
    """`erase` in a transaction of its own, then SQLite's WAL truncated, so no image of a page from
    before the erasure stays in it (the database file overwrites deleted content: secure_delete)."""
    with transaction(gw.sessions) as session:
        result = erase(session, gw, pick(session), actor, gw.now())
    scrub_wal(gw.engine)
    return result


def erase(session: Session, gw: Gateway, member: Member, actor: str, now: datetime) -> dict[str, Any]:
    """Crypto-shred: withdraw every consent, destroy the data key, the encrypted PII, the identifier
    pseudonyms and the login; keep the pseudonymous ledger (it still balances, and settlement with
    other brands needs it) under a member_ref that no longer leads to a person."""
    member = members.lock(session, member)
    if member.status == "erased":
        raise Conflict("the member is already erased")
    for model in (Exchange, Redemption):
        if session.scalar(select(model.id).where(model.member_id == member.id, model.status == "pending").limit(1)) is not None:
            # Its wallet address and signature are what the chain sender still needs.
            raise Conflict("an exchange or redemption of this member is still pending on chain: erase once it has settled")
    for purpose in Purpose:
        if consent.has_consent(session, member.id, purpose):
            consent.set_consent(session, gw, member, purpose, False, "api", now)
    wrapped = members.wrapped_key(gw, member)
    evidence = gw.vault.shred(wrapped, member.member_ref, now=now) if wrapped is not None else None
    # The key goes first, from its own store: should this transaction then fail, the member's data
    # is unreadable and the erasure is asked again (never the reverse: an erased member whose key lives).
    gw.keystore.delete(member.member_ref)
    # Notices were messages to a person who is gone; their times would tie the account to events.
    for model in (PiiField, MemberIdentifier, MemberToken, WalletChallenge, Notice):
        session.execute(delete(model).where(model.member_id == member.id))
    # So were the webhooks about them (the brand's own systems hold what was delivered; erase there too).
    about = select(WebhookDelivery.id).where(WebhookDelivery.payload.contains(member.member_ref)).scalar_subquery()
    session.execute(delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(about)))
    session.execute(delete(WebhookDelivery).where(WebhookDelivery.payload.contains(member.member_ref)))
    member.status, member.erased_at = "erased", now
    member.passphrase_hash = member.birth_month = member.wallet_address = None
    _unlink(session, member)
    session.flush()
    evidence_dict = evidence.to_dict() if evidence else None
    # Copies of the wrapped key outside the key store (its journal, backups of it) still open the data
    # until the KEK that wrapped it is destroyed: at the next rotation, which is when this is final.
    final = _iso(datakeys.final_by(gw, now))
    audit.record(session, actor, "member.erased", now, member_ref=member.member_ref, evidence=evidence_dict, final_by=final)
    return {"member_ref": member.member_ref, "erased_at": _iso(now), "final_by": final, "evidence": evidence_dict,
            "key_absent": gw.keystore.get(member.member_ref) is None}
