"""Data-subject rights: a copy of everything held about a member, and erasure by crypto-shredding."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from privacy.receipts import Purpose

from ..db import as_utc
from ..errors import Conflict
from ..models import (
    Action,
    DataKey,
    Exchange,
    LedgerEntry,
    LedgerTxn,
    Member,
    MemberIdentifier,
    MemberToken,
    PiiField,
    PointLot,
    Purchase,
    Redemption,
    TierChange,
    WalletChallenge,
)
from ..runtime import Gateway
from . import audit, consent, members


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
                       "clawed_back": p.clawed_back} for p in session.scalars(select(Purchase).where(Purchase.member_id == m.id))],
        "actions": [{"kind": a.kind, "points": a.points, "occurred_at": _iso(a.occurred_at)}
                    for a in session.scalars(select(Action).where(Action.member_id == m.id))],
        "tier_changes": [{"from": c.from_tier, "to": c.to_tier, "reason": c.reason, "at": _iso(c.changed_at)}
                         for c in session.scalars(select(TierChange).where(TierChange.member_id == m.id))],
        "exchanges": [{"exchange_ref": e.exchange_ref, "ap_amount": e.ap_amount, "brand_points": e.brand_points,
                       "status": e.status, "wallet_address": e.wallet_address, "tx_hash": e.tx_hash}
                      for e in session.scalars(select(Exchange).where(Exchange.member_id == m.id))],
        "redemptions": [{"redemption_ref": r.redemption_ref, "ap_amount": r.ap_amount, "reward_points": r.reward_points,
                         "status": r.status, "owner": r.owner, "tx_hash": r.tx_hash}
                        for r in session.scalars(select(Redemption).where(Redemption.member_id == m.id))],
    }


def erase(session: Session, gw: Gateway, member: Member, actor: str, now: datetime) -> dict[str, Any]:
    """Crypto-shred: withdraw every consent, destroy the data key, the encrypted PII, the identifier
    pseudonyms and the login; keep the pseudonymous ledger (it still balances, and settlement with
    other brands needs it) under a member_ref that no longer leads to a person."""
    member = members.lock(session, member)
    if member.status == "erased":
        raise Conflict("the member is already erased")
    for purpose in Purpose:
        if consent.has_consent(session, member.id, purpose):
            consent.set_consent(session, gw, member, purpose, False, "api", now)
    wrapped = members.wrapped_key(session, member)
    evidence = gw.vault.shred(wrapped, member.member_ref, now=now) if wrapped is not None else None
    for model in (PiiField, DataKey, MemberIdentifier, MemberToken, WalletChallenge):
        session.execute(delete(model).where(model.member_id == member.id))
    member.status, member.erased_at = "erased", now
    member.passphrase_hash = member.birth_month = member.wallet_address = None
    session.flush()
    evidence_dict = evidence.to_dict() if evidence else None
    audit.record(session, actor, "member.erased", now, member_ref=member.member_ref, evidence=evidence_dict)
    return {"member_ref": member.member_ref, "erased_at": _iso(now), "evidence": evidence_dict,
            "key_absent": session.get(DataKey, member.id) is None}
