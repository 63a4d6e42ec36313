"""Consent per purpose: minimal by default, every change a receipt signed by the brand and appended
to the hash-chained consent log, and every processing checks consent at the moment it runs."""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from privacy.receipts import ConsentReceipt, Controller, JwsReceipt, LawfulBasis, Purpose, SignedReceipt, load_receipt, policy_digest, sign_kantara

from ..errors import ConsentRequired
from ..models import Consent, ConsentLogEntry, Member
from ..runtime import Gateway
from . import logs

PURPOSES = tuple(p.value for p in Purpose)


def _receipt(gw: Gateway, member: Member, purpose: Purpose, granted: bool, basis: LawfulBasis, channel: str,
             now: datetime) -> JwsReceipt:
    s = gw.settings
    controller = Controller(s.brand_name, s.controller_email, s.controller_url, s.policy_url)
    return sign_kantara(receipt_facts(gw, member, purpose, granted, basis, channel, now), controller, gw.signing_key)


def receipt_facts(gw: Gateway, member: Member, purpose: Purpose, granted: bool, basis: LawfulBasis, channel: str,
                  now: datetime) -> ConsentReceipt:
    """What a receipt for this change states (signed by `_receipt`)."""
    s = gw.settings
    return ConsentReceipt.create(
        # The member_ref, not the identifier pseudonym: after erasure nothing in the log (which can
        # never be edited) still points at a person.
        pseudonym=member.member_ref,
        purpose=purpose,
        state="granted" if granted else "withdrawn",
        policy_version=s.policy_version,
        policy_sha256=policy_digest(s.policy_text),
        lawful_basis=basis,
        jurisdiction=member.jurisdiction,
        channel=channel,
        issuer=s.brand_id,
        key_id=gw.signing_key.key_id,
        issued_at=now.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


def set_consent(session: Session, gw: Gateway, member: Member, purpose: Purpose, granted: bool, channel: str,
                now: datetime, basis: LawfulBasis = LawfulBasis.CONSENT) -> tuple[JwsReceipt | SignedReceipt, bool]:
    """Grant or withdraw; returns (receipt, changed). Repeating the current state under the same
    policy changes nothing and returns the receipt already given (idempotent)."""
    current = session.get(Consent, (member.id, purpose.value), with_for_update=True)
    if current is not None and current.granted == granted:
        existing = receipt_of(session, current.log_seq)
        if existing.receipt.policy_version == gw.settings.policy_version:
            return existing, False
    signed = _receipt(gw, member, purpose, granted, basis, channel, now)
    entry = logs.append(session, ConsentLogEntry, signed.to_dict(), now, member_id=member.id)
    if current is None:
        session.add(Consent(member_id=member.id, purpose=purpose.value, granted=granted,
                            receipt_id=signed.receipt.receipt_id, log_seq=entry.seq, updated_at=now))
    else:
        current.granted, current.receipt_id, current.log_seq, current.updated_at = granted, signed.receipt.receipt_id, entry.seq, now
    return signed, True


def receipt_of(session: Session, seq: int) -> JwsReceipt | SignedReceipt:
    """The receipt of a consent-log entry: a Kantara JWS receipt, or one of the earlier format."""
    return load_receipt(json.loads(session.get(ConsentLogEntry, seq).payload))


def has_consent(session: Session, member_id: int, purpose: Purpose | str) -> bool:
    value = purpose.value if isinstance(purpose, Purpose) else purpose
    return bool(session.scalar(select(Consent.granted).where(Consent.member_id == member_id, Consent.purpose == value)))


def require(session: Session, member: Member, purpose: Purpose) -> Consent:
    """The consent a processing relies on, read at the moment it runs (or ConsentRequired)."""
    consent = session.get(Consent, (member.id, purpose.value))
    if consent is None or not consent.granted:
        raise ConsentRequired(f"the member has not consented to {purpose.value}", purpose=purpose.value)
    return consent


def hold(conn) -> None:
    """Until this transaction ends no consent can change, so what a processing checks is still true
    at the time it records. (SQLite's write transactions already exclude every other writer.)"""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("LOCK TABLE consents IN SHARE MODE")


def current(session: Session, member_id: int) -> dict[str, bool]:
    granted = dict(session.execute(select(Consent.purpose, Consent.granted).where(Consent.member_id == member_id)).all())
    return {p: bool(granted.get(p, False)) for p in PURPOSES}


def history(session: Session, member_id: int) -> list[dict]:
    rows = session.scalars(select(ConsentLogEntry).where(ConsentLogEntry.member_id == member_id).order_by(ConsentLogEntry.seq))
    # "consent": the receipt's facts in one shape whatever its format (Kantara JWS, or the earlier one).
    return [{"seq": r.seq, "entry_hash": r.entry_hash, "consent": load_receipt(payload).receipt.to_dict(), **payload}
            for r in rows for payload in [json.loads(r.payload)]]
