"""Enrolment, login and profiles. Identifiers are only ever stored as keyed pseudonyms; name and
contact only encrypted in the vault."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from privacy.errors import PrivacyError
from privacy.masking import mask_card, mask_email, mask_name, mask_phone
from privacy.receipts import LawfulBasis, Purpose
from privacy.vault import WrappedKey

from ..db import as_utc
from ..errors import Conflict, GatewayError, MemberNotActive, NotFound, Unauthorised
from ..models import DataKey, Member, MemberIdentifier, MemberToken, PiiField
from ..runtime import Gateway
from . import consent, ledger

IDENTIFIER_KINDS = ("phone", "email", "card")
_SCRYPT = {"length": 32, "n": 2**14, "r": 8, "p": 1}


@dataclass(frozen=True)
class Enrolment:
    member: Member
    token: str
    welcome_points: int


def hash_passphrase(passphrase: str) -> str:
    salt = secrets.token_bytes(16)
    key = Scrypt(salt=salt, **_SCRYPT).derive(passphrase.encode())
    return "scrypt$" + base64.b64encode(salt).decode() + "$" + base64.b64encode(key).decode()


def check_passphrase(stored: str | None, passphrase: str) -> bool:
    if not stored:
        return False
    _, salt, key = stored.split("$")
    try:
        Scrypt(salt=base64.b64decode(salt), **_SCRYPT).verify(passphrase.encode(), base64.b64decode(key))
        return True
    except InvalidKey:
        return False


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(session: Session, gw: Gateway, member: Member, now: datetime) -> str:
    token = "mt_" + secrets.token_urlsafe(32)
    session.add(MemberToken(token_hash=_token_hash(token), member_id=member.id,
                            expires_at=now + timedelta(days=gw.settings.member_token_days)))
    return token


def member_for_token(session: Session, token: str, now: datetime) -> Member | None:
    row = session.get(MemberToken, _token_hash(token))
    if row is None or as_utc(row.expires_at) <= now:
        return None
    return session.get(Member, row.member_id)


def pseudonymise(gw: Gateway, identifiers: dict[str, str]) -> dict[str, str]:
    """kind -> pseudonym under the current pepper; a clear 4xx for anything that does not normalise."""
    out = {}
    for kind, value in identifiers.items():
        if kind not in IDENTIFIER_KINDS:
            raise GatewayError(f"unknown identifier kind {kind!r}; expected one of {', '.join(IDENTIFIER_KINDS)}")
        try:
            out[kind] = gw.pseudonymiser.pseudonym(kind, value)
        except PrivacyError as exc:
            raise GatewayError(f"{kind}: {exc}") from None
    return out


def find_by_identifier(session: Session, gw: Gateway, kind: str, value: str) -> Member | None:
    """Look a member up under every pepper version (current first), re-keying an old pseudonym so
    rotation completes as members come back."""
    try:
        candidates = gw.pseudonymiser.lookup_candidates(kind, value)
    except PrivacyError as exc:
        raise GatewayError(f"{kind}: {exc}") from None
    for i, pseudonym in enumerate(candidates):
        row = session.get(MemberIdentifier, pseudonym)
        if row is not None:
            if i > 0:
                session.delete(row)
                session.flush()
                session.add(MemberIdentifier(pseudonym=candidates[0], member_id=row.member_id, kind=kind))
            return session.get(Member, row.member_id)
    return None


def enrol(session: Session, gw: Gateway, *, identifiers: dict[str, str], name: str, birthday: date | None,
          passphrase: str | None, jurisdiction: str | None, channel: str, now: datetime) -> Enrolment:
    if not identifiers:
        raise GatewayError("at least one identifier (phone, email or card) is required")
    pseudonyms = pseudonymise(gw, identifiers)
    for kind, value in identifiers.items():
        if find_by_identifier(session, gw, kind, value) is not None:
            raise Conflict(f"a member with this {kind} is already enrolled")
    s = gw.settings
    member = Member(member_ref=str(uuid.uuid4()), status="active", enrolled_at=now,
                    jurisdiction=jurisdiction or s.jurisdiction, birth_month=birthday.month if birthday else None,
                    passphrase_hash=hash_passphrase(passphrase) if passphrase else None,
                    tier=s.tiers[0].name, tier_since=now, balance=0, purchase_count=0, earned_today=0)
    session.add(member)
    session.flush()
    for kind, pseudonym in pseudonyms.items():
        session.add(MemberIdentifier(pseudonym=pseudonym, member_id=member.id, kind=kind))
    wrapped = gw.vault.new_data_key(member.member_ref)
    session.add(DataKey(member_id=member.id, kek_id=wrapped.kek_id, record=json.dumps(wrapped.to_record())))
    pii = {"name": name, **{kind: gw.pseudonymiser.normalise(kind, value) for kind, value in identifiers.items()}}
    if birthday:
        pii["birthday"] = birthday.isoformat()
    for field, ciphertext in gw.vault.encrypt_fields(wrapped, member.member_ref, pii).items():
        session.add(PiiField(member_id=member.id, field=field, ciphertext=ciphertext))
    # Minimal by default: only what running the programme needs, on the contract itself.
    consent.set_consent(session, gw, member, Purpose.LOYALTY_CORE, True, channel, now, LawfulBasis.CONTRACT)
    welcome = s.earn.welcome_points
    if welcome:
        ledger.credit(session, member, "welcome", welcome, "issued", now, s.earn.validity_days, ref="welcome")
    return Enrolment(member, issue_token(session, gw, member, now), welcome)


def login(session: Session, gw: Gateway, kind: str, value: str, passphrase: str, now: datetime) -> tuple[Member, str]:
    member = find_by_identifier(session, gw, kind, value)
    # The same answer and about the same work whether or not the member exists.
    ok = check_passphrase(member.passphrase_hash if member else hash_passphrase("x" * 12), passphrase)
    if member is None or not ok:
        raise Unauthorised("identifier or passphrase not recognised")
    # A frozen member still logs in: freezing stops new processing (every processing checks
    # `require_active`), not the member's rights to see their data, export it, erase it or withdraw
    # consent. (An erased member has no identifiers left to log in with.)
    if member.status == "erased":
        raise MemberNotActive(f"the account is {member.status}")
    return member, issue_token(session, gw, member, now)


def get_by_ref(session: Session, member_ref: str, *, for_update: bool = False) -> Member:
    try:
        uuid.UUID(member_ref)
    except ValueError:
        raise GatewayError(f"malformed member reference {member_ref!r}") from None
    query = select(Member).where(Member.member_ref == member_ref)
    member = session.scalars(query.with_for_update() if for_update else query).first()
    if member is None:
        raise NotFound("no such member")
    return member


def lock(session: Session, member: Member) -> Member:
    """Re-read the member row under a write lock (PostgreSQL: SELECT ... FOR UPDATE)."""
    return session.scalars(select(Member).where(Member.id == member.id).with_for_update().execution_options(populate_existing=True)).one()


def require_active(member: Member) -> None:
    if member.status != "active":
        raise MemberNotActive(f"the account is {member.status}")


def wrapped_key(session: Session, member: Member) -> WrappedKey | None:
    row = session.get(DataKey, member.id)
    return None if row is None else WrappedKey.from_record(json.loads(row.record))


def pii(session: Session, gw: Gateway, member: Member) -> dict[str, str]:
    """Decrypted personal data (empty once erased)."""
    wrapped = wrapped_key(session, member)
    if wrapped is None:
        return {}
    fields = {r.field: r.ciphertext for r in session.scalars(select(PiiField).where(PiiField.member_id == member.id))}
    return gw.vault.decrypt_fields(wrapped, member.member_ref, fields)


MASKS = {"name": mask_name, "phone": mask_phone, "email": mask_email, "card": mask_card}


def masked_pii(session: Session, gw: Gateway, member: Member) -> dict[str, str]:
    return {field: MASKS[field](value) if field in MASKS else "****" for field, value in pii(session, gw, member).items()}


def set_status(session: Session, member: Member, status: str) -> None:
    if member.status == "erased":
        raise Conflict("an erased account cannot change state")
    member.status = status
    if status != "active":
        session.execute(delete(MemberToken).where(MemberToken.member_id == member.id))
