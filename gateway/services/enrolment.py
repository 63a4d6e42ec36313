"""Self-enrolment, proven by one-time codes, that tells nobody whether an identifier is a member.

`start` answers every request the same way (the same status, body shape and work), whether or not
an identifier already belongs to a member: it seals the personal data, stores a pending enrolment
and sends a message to each contact identifier (phone, e-mail). A new identifier gets a code; one
that already has an account gets a notice saying so, which only its owner can read. `verify` turns
the pending enrolment into a member once every code comes back: only then does the account exist,
can it log in, and are the welcome points credited. Codes expire, a wrong one counts against a
small allowance, and attempts are rate-limited per identifier and per client address.

A loyalty card number cannot be proven by a message, so self-enrolment takes phones and e-mail
addresses; a card is registered by staff (`members.enrol`, recorded as identity_proof "staff")."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import uuid
from base64 import b64decode, b64encode
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session


from ..db import as_utc, transaction
from ..errors import CodeInvalid, Conflict, GatewayError, NotFound, NotifierDown
from ..models import PendingEnrolment
from ..notify import CHANNEL_OF, Message, NotifierUnavailable
from ..runtime import Gateway
from . import members, throttle

CONTACT_KINDS = tuple(CHANNEL_OF)  # phone, email


@dataclass(frozen=True)
class Started:
    enrolment_id: str
    expires_at: datetime
    sent_to: list[str]  # the identifier kinds a code (or notice) went to


def _code_hash(enrolment_id: str, kind: str, code: str) -> str:
    return hashlib.sha256(f"{enrolment_id}:{kind}:{code}".encode()).hexdigest()


def start(gw: Gateway, *, identifiers: dict[str, str], name: str, birthday: date | None, passphrase: str,
          jurisdiction: str | None, channel: str, client: str, now: datetime) -> Started:
    s = gw.settings
    if not identifiers:
        raise GatewayError("at least one identifier (phone or email) is required")
    if "card" in identifiers:
        raise GatewayError("a loyalty card is registered at the till; enrol with a phone number or an e-mail address")
    unreachable = [kind for kind in identifiers if CHANNEL_OF[kind] not in gw.notifier.channels]
    if unreachable:
        raise GatewayError(f"this gateway cannot send codes to a {unreachable[0]}; enrol with another identifier")
    members.check_birthday(birthday, now)
    pseudonyms = members.pseudonymise(gw, identifiers)
    with transaction(gw.sessions) as session:
        t = s.throttles
        throttle.admit(session, [(throttle.key("enrol", "address", client), t.enrol_per_address)]
                       + [(throttle.key("enrol", "identifier", p[0]), t.enrol_per_identifier) for p in pseudonyms.values()], now)
    # The expensive, identical work outside any write transaction: the passphrase hash, the sealing.
    passphrase_hash = members.hash_passphrase(passphrase)
    member_ref = str(uuid.uuid4())
    ciphertexts = members.seal(gw, member_ref, identifiers, name, birthday)
    enrolment_id = str(uuid.uuid4())
    codes = {kind: f"{secrets.randbelow(10**6):06d}" for kind in identifiers}
    expires_at = now + timedelta(seconds=s.enrolment_code_ttl_s)
    with transaction(gw.sessions) as session:
        enrolled = {kind: members.find_by_identifier(session, gw, kind, value) is not None for kind, value in identifiers.items()}
        session.add(PendingEnrolment(id=enrolment_id, member_ref=member_ref, pseudonyms=json.dumps(pseudonyms),
                            code_hashes=json.dumps({k: _code_hash(enrolment_id, k, c) for k, c in codes.items()}),
                            sealed=json.dumps({"fields": {f: b64encode(c).decode() for f, c in ciphertexts.items()}}),
                            passphrase_hash=passphrase_hash, birth_month=birthday.month if birthday else None,
                            jurisdiction=jurisdiction or s.jurisdiction, channel=channel, attempts=0, created_at=now,
                            expires_at=expires_at))
    minutes = s.enrolment_code_ttl_s // 60
    for kind, value in identifiers.items():
        to = gw.pseudonymiser.normalise(kind, value)
        if enrolled[kind]:
            message = Message(CHANNEL_OF[kind], to, f"{s.brand_name}: you are already a member",
                              f"Someone asked to join {s.brand_name} with this {kind}, which already has an account. "
                              "If it was you, log in instead. If it was not, you need do nothing.")
        else:
            message = Message(CHANNEL_OF[kind], to, f"{s.brand_name} verification code",
                              f"Your {s.brand_name} code is {codes[kind]}. It expires in {minutes} minutes. "
                              "Never share it: we will never ask you for it.", codes[kind])
        try:
            gw.notifier.send(message)
        except NotifierUnavailable:
            raise NotifierDown("the code could not be sent now; try again later", retry_after_s=60) from None
    return Started(enrolment_id, expires_at, sorted(identifiers))


def verify(gw: Gateway, enrolment_id: str, codes: dict[str, str], client: str, now: datetime) -> members.Enrolment:
    """The member, once every code of the enrolment matches. A wrong code counts against the
    enrolment's attempts (spent: the enrolment is gone); an expired enrolment is gone too."""
    s = gw.settings
    outcome: GatewayError | members.Enrolment
    with transaction(gw.sessions) as session:
        pending = session.get(PendingEnrolment, enrolment_id, with_for_update=True)
        limits = [(throttle.key("code", "address", client), s.throttles.code_per_address)]
        if pending is not None:
            limits += [(throttle.key("code", "identifier", p[0]), s.throttles.code_per_identifier)
                       for p in json.loads(pending.pseudonyms).values()]
        throttle.admit(session, limits, now)
        outcome = _check(session, gw, pending, codes, now)
    # Raised after the commit: a wrong code is counted, a spent or expired enrolment is deleted.
    if isinstance(outcome, GatewayError):
        raise outcome
    return outcome


def _check(session: Session, gw: Gateway, pending: PendingEnrolment | None, codes: dict[str, str], now: datetime):
    if pending is None or as_utc(pending.expires_at) <= now:
        if pending is not None:
            _discard(session, gw, pending)
        return NotFound("no such enrolment, or it has expired: enrol again")
    expected = json.loads(pending.code_hashes)
    matches = [hmac.compare_digest(expected[kind], _code_hash(pending.id, kind, codes.get(kind, ""))) for kind in sorted(expected)]
    if not all(matches):
        pending.attempts += 1
        left = gw.settings.enrolment_code_attempts - pending.attempts
        if left <= 0:
            _discard(session, gw, pending)
            return CodeInvalid("the code does not match, and no attempts are left: enrol again", attempts_left=0)
        return CodeInvalid(f"a code does not match; {left} attempt{'s' if left > 1 else ''} left", attempts_left=left)
    sealed = json.loads(pending.sealed)
    session.delete(pending)
    try:
        return members.create(session, gw, member_ref=pending.member_ref, pseudonyms=json.loads(pending.pseudonyms),
                              ciphertexts={f: b64decode(c) for f, c in sealed["fields"].items()},
                              birth_month=pending.birth_month, passphrase_hash=pending.passphrase_hash,
                              jurisdiction=pending.jurisdiction, channel=pending.channel,
                              identity_proof="code:" + ",".join(sorted(expected)), now=now)
    except Conflict:
        # Every identifier was just proven by its owner, who may learn that one already has an account.
        return Conflict("you already have an account with one of these identifiers: log in instead")


def _discard(session: Session, gw: Gateway, pending: PendingEnrolment) -> None:
    """Forget an enrolment: its sealed data, and the data key in the key store that opens it."""
    gw.keystore.delete(pending.member_ref)
    session.delete(pending)


def expire(session: Session, gw: Gateway, now: datetime) -> int:
    """Maintenance: forget enrolments nobody verified in time (their sealed data with their key)."""
    expired = session.scalars(select(PendingEnrolment).where(PendingEnrolment.expires_at <= now)).all()
    for pending in expired:
        _discard(session, gw, pending)
    return len(expired)
