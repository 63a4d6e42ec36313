"""Enrolment, login and profiles. Identifiers are only ever stored as keyed pseudonyms; name and
contact only encrypted in the vault."""

from __future__ import annotations

import base64
import hashlib
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
from privacy.keystore import StaleKek
from privacy.vault import WrappedKey

from ..db import as_utc, reading, transaction
from ..errors import Conflict, GatewayError, MemberNotActive, NotFound, RateLimited, Unauthorised
from ..models import Member, MemberIdentifier, MemberToken, PiiField
from ..runtime import Gateway
from . import audit, consent, ledger, programme, throttle

IDENTIFIER_KINDS = ("phone", "email", "card")
MAX_AGE_YEARS = 130
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


# What an unknown identifier's login is checked against: the same scrypt work as a member's.
_DUMMY_HASH = hash_passphrase(secrets.token_urlsafe(16))


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(session: Session, gw: Gateway, member: Member, now: datetime) -> str:
    token = "mt_" + secrets.token_urlsafe(32)
    session.add(MemberToken(token_hash=_token_hash(token), member_id=member.id,
                            expires_at=now + timedelta(days=gw.settings.member_token_days)))
    return token


def member_for_token(session: Session, token: str, now: datetime) -> tuple[int, str] | None:
    """(member id, member_ref) of an unexpired token's member: one read, as every member request
    makes it."""
    row = session.execute(select(MemberToken.expires_at, Member.id, Member.member_ref).join(Member, Member.id == MemberToken.member_id)
                          .where(MemberToken.token_hash == _token_hash(token))).first()
    if row is None or as_utc(row.expires_at) <= now:
        return None
    return row.id, row.member_ref


def pseudonymise(gw: Gateway, identifiers: dict[str, str]) -> dict[str, list[str]]:
    """kind -> its pseudonyms under every pepper, current first (a member enrolled before a rotation
    is still found); a clear 4xx for anything that does not normalise."""
    out = {}
    for kind, value in identifiers.items():
        if kind not in IDENTIFIER_KINDS:
            raise GatewayError(f"unknown identifier kind {kind!r}; expected one of {', '.join(IDENTIFIER_KINDS)}")
        try:
            out[kind] = gw.pseudonymiser.lookup_candidates(kind, value)
        except PrivacyError as exc:
            raise GatewayError(f"{kind}: {exc}") from None
    return out


def _lookup(session: Session, gw: Gateway, kind: str, value: str) -> tuple[MemberIdentifier | None, list[str]]:
    """(the identifier's row under any pepper version, the candidate pseudonyms, current first)."""
    try:
        candidates = gw.pseudonymiser.lookup_candidates(kind, value)
    except PrivacyError as exc:
        raise GatewayError(f"{kind}: {exc}") from None
    rows = {r.pseudonym: r for r in session.scalars(select(MemberIdentifier).where(MemberIdentifier.pseudonym.in_(candidates)))}
    return next((rows[p] for p in candidates if p in rows), None), candidates


def find_by_identifier(session: Session, gw: Gateway, kind: str, value: str) -> Member | None:
    """Look a member up under every pepper version (current first), re-keying an old pseudonym so
    rotation completes as members come back."""
    row, candidates = _lookup(session, gw, kind, value)
    if row is None:
        return None
    if row.pseudonym != candidates[0]:
        session.delete(row)
        session.flush()
        session.add(MemberIdentifier(pseudonym=candidates[0], member_id=row.member_id, kind=kind))
    return session.get(Member, row.member_id)


def peek_by_identifier(session: Session, gw: Gateway, kind: str, value: str) -> Member | None:
    """find_by_identifier for a read-only session (no re-keying)."""
    row, _ = _lookup(session, gw, kind, value)
    return None if row is None else session.get(Member, row.member_id)


def check_birthday(birthday: date | None, now: datetime) -> None:
    if birthday is None:
        return
    if birthday > now.date():
        raise GatewayError("birthday is in the future")
    if birthday.year < now.year - MAX_AGE_YEARS:
        raise GatewayError(f"birthday is more than {MAX_AGE_YEARS} years ago")


def seal(gw: Gateway, member_ref: str, identifiers: dict[str, str], name: str, birthday: date | None) -> dict[str, bytes]:
    """Personal data encrypted under a new data key for `member_ref`; the key goes to the brand's key
    store (apart from this database, so a copy of the database alone decrypts nothing)."""
    for _ in range(3):
        wrapped = gw.vault.new_data_key(member_ref)
        try:
            gw.keystore.put(member_ref, wrapped)
            break
        except StaleKek:
            gw.vault.refresh()  # another process rotated the KEK meanwhile: wrap under the new one
    else:
        raise StaleKek("the key-encryption key keeps changing; try again")
    pii = {"name": name, **{kind: gw.pseudonymiser.normalise(kind, value) for kind, value in identifiers.items()}}
    if birthday:
        pii["birthday"] = birthday.isoformat()
    return gw.vault.encrypt_fields(wrapped, member_ref, pii)


def create(session: Session, gw: Gateway, *, member_ref: str, pseudonyms: dict[str, list[str]],
           ciphertexts: dict[str, bytes], birth_month: int | None, passphrase_hash: str | None, jurisdiction: str | None,
           channel: str, identity_proof: str, now: datetime) -> Enrolment:
    """The member, from identifiers already proven (pseudonymised: kind -> its pseudonyms, current
    first) and personal data already sealed: loyalty_core consent only, welcome points, a token.
    Refuses an identifier someone has."""
    every = [p for candidates in pseudonyms.values() for p in candidates]
    taken = session.scalars(select(MemberIdentifier.kind).where(MemberIdentifier.pseudonym.in_(every))).first()
    if taken is not None:
        raise Conflict(f"a member with this {taken} is already enrolled")
    s, in_force = gw.settings, programme.current(session, gw)
    member = Member(member_ref=member_ref, status="active", enrolled_at=now, jurisdiction=jurisdiction or s.jurisdiction,
                    birth_month=birth_month, passphrase_hash=passphrase_hash, tier=in_force.tiers[0].name, tier_since=now, balance=0,
                    purchase_count=0, earned_today=0, identity_proof=identity_proof)
    session.add(member)
    session.flush()
    for kind, candidates in pseudonyms.items():
        session.add(MemberIdentifier(pseudonym=candidates[0], member_id=member.id, kind=kind))
    for field, ciphertext in ciphertexts.items():
        session.add(PiiField(member_id=member.id, field=field, ciphertext=ciphertext))
    # Minimal by default: only what running the programme needs, on the contract itself.
    consent.set_consent(session, gw, member, Purpose.LOYALTY_CORE, True, channel, now, LawfulBasis.CONTRACT)
    welcome = in_force.earn.welcome_points
    if welcome:
        ledger.credit(session, member, "welcome", welcome, "issued", now, in_force.earn.validity_days, ref="welcome")
    return Enrolment(member, issue_token(session, gw, member, now), welcome)


def enrol(session: Session, gw: Gateway, *, identifiers: dict[str, str], name: str, birthday: date | None,
          passphrase: str | None, jurisdiction: str | None, channel: str, now: datetime) -> Enrolment:
    """Enrolment by the brand's own staff (a point of sale or an operator), who see the member and
    their identifiers: nothing to prove by code. Self-enrolment is services/enrolment.py."""
    if not identifiers:
        raise GatewayError("at least one identifier (phone, email or card) is required")
    check_birthday(birthday, now)
    pseudonyms = pseudonymise(gw, identifiers)
    member_ref = str(uuid.uuid4())
    ciphertexts = seal(gw, member_ref, identifiers, name, birthday)
    try:
        return create(session, gw, member_ref=member_ref, pseudonyms=pseudonyms, ciphertexts=ciphertexts,
                      birth_month=birthday.month if birthday else None,
                      passphrase_hash=hash_passphrase(passphrase) if passphrase else None, jurisdiction=jurisdiction,
                      channel=channel, identity_proof="staff", now=now)
    except BaseException:
        gw.keystore.delete(member_ref)  # nobody was enrolled (a rollback after this is swept: sweep_keys)
        raise


def login(gw: Gateway, kind: str, value: str, passphrase: str, client: str, now: datetime) -> tuple[Member, str]:
    """Check a passphrase: rate-limited per identifier and per client address, and locked after
    repeated failures, all by the identifier's pseudonym whether or not a member has it. The scrypt
    check runs outside any write transaction, and costs the same whether or not the member exists."""
    try:
        pseudonym = gw.pseudonymiser.pseudonym(kind, value)
    except PrivacyError as exc:
        raise GatewayError(f"{kind}: {exc}") from None
    t = gw.settings.throttles
    with transaction(gw.sessions) as session:
        throttle.admit(session, [(throttle.key("login", "identifier", pseudonym), t.login_per_identifier),
                                 (throttle.key("login", "address", client), t.login_per_address)], now)
        locked = throttle.locked_for(session, pseudonym, now)
    if locked:
        raise RateLimited(f"too many failed logins: this identifier is locked for {locked} s", retry_after_s=locked)
    with reading(gw.sessions) as session:
        found = peek_by_identifier(session, gw, kind, value)
        stored = found.passphrase_hash if found is not None else None
    ok = check_passphrase(stored or _DUMMY_HASH, passphrase) and stored is not None
    with transaction(gw.sessions) as session:
        if not ok:
            failures, until = throttle.failed(session, gw.settings, pseudonym, now)
            if until is not None:
                audit.record(session, "gateway", "login.locked", now, member_ref=found.member_ref if found else None,
                             failures=failures, until=until.strftime("%Y-%m-%dT%H:%M:%SZ"))
        else:
            throttle.succeeded(session, pseudonym)
            member = find_by_identifier(session, gw, kind, value)  # re-keys an old pseudonym
            # A frozen member still logs in: freezing stops new processing (every processing checks
            # `require_active`), not the member's rights to see their data, export it, erase it or
            # withdraw consent. (An erased member has no identifiers left to log in with.)
            if member is not None and member.status != "erased":
                return member, issue_token(session, gw, member, now)
    raise Unauthorised("identifier or passphrase not recognised")


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


def lock_many(session: Session, member_ids: set[int]) -> dict[int, Member]:
    """`lock` for many members in one statement, by id."""
    query = select(Member).where(Member.id.in_(sorted(member_ids))).order_by(Member.id)
    return {m.id: m for m in session.scalars(query.with_for_update().execution_options(populate_existing=True))}


def require_active(member: Member) -> None:
    if member.status != "active":
        raise MemberNotActive(f"the account is {member.status}")


def wrapped_key(gw: Gateway, member: Member) -> WrappedKey | None:
    return gw.keystore.get(member.member_ref)


def pii(session: Session, gw: Gateway, member: Member) -> dict[str, str]:
    """Decrypted personal data (empty once erased)."""
    wrapped = wrapped_key(gw, member)
    if wrapped is None:
        return {}
    fields = {r.field: r.ciphertext for r in session.scalars(select(PiiField).where(PiiField.member_id == member.id))}
    return gw.vault.decrypt_fields(wrapped, member.member_ref, fields)


MASKS = {"name": mask_name, "phone": mask_phone, "email": mask_email, "card": mask_card}


def masked_pii(session: Session, gw: Gateway, member: Member) -> dict[str, str]:
    return {field: MASKS[field](value) if field in MASKS else "****" for field, value in pii(session, gw, member).items()}


def change_status(session: Session, gw: Gateway, actor: str, member_ref: str, status: str, reason: str | None) -> Member:
    """Freeze or reactivate an account, audited (the API's and the operator console's one way)."""
    member = get_by_ref(session, member_ref, for_update=True)
    set_status(session, member, status)
    audit.record(session, actor, f"member.{status}", gw.now(), member_ref=member_ref, reason=reason)
    return member


def set_status(session: Session, member: Member, status: str) -> None:
    if member.status == "erased":
        raise Conflict("an erased account cannot change state")
    member.status = status
    if status != "active":
        session.execute(delete(MemberToken).where(MemberToken.member_id == member.id))
