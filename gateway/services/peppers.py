"""Pepper rotation, eagerly: a new pepper becomes current, a job re-keys every member identifier to it
(from the identifier kept encrypted in the member's personal data, so no member needs to come back),
and the old pepper can then be retired: its file destroyed, after which nothing made with it can be
recomputed from a leaked identifier list."""

from __future__ import annotations

import base64
import json
import logging
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, insert, select

from privacy.errors import PrivacyError
from privacy.keys import PEPPER_FILE, write_private
from privacy.keystore import destroy_file
from privacy.pseudonyms import Pseudonymiser, parse_pseudonym

from ..db import reading, transaction
from ..errors import Conflict, GatewayError
from ..models import Member, MemberIdentifier, PendingEnrolment, PiiField
from ..runtime import Gateway, load_peppers
from . import audit

log = logging.getLogger(__name__)

REKEY_BATCH = 2_000


@dataclass(frozen=True)
class Rekeyed:
    rekeyed: int
    left: int  # identifiers that could not be re-keyed (no personal data to recompute them from)


def refresh(gw: Gateway) -> None:
    """Load the peppers on disk, newest current (another process of the brand rotated or retired)."""
    peppers = load_peppers(gw.settings.keys_dir)
    if sorted(peppers) != sorted(gw.pseudonymiser.versions) or max(peppers) != gw.pseudonymiser.current_version:
        gw.pseudonymiser = Pseudonymiser(peppers, max(peppers), default_region=gw.settings.default_region)


def _file(gw: Gateway, version: int):
    return gw.settings.keys_dir / (PEPPER_FILE if version == 1 else f"pepper.v{version}.key")


def rotate(gw: Gateway, actor: str) -> int:
    """Make a new pepper current; the re-keying job moves every identifier to it. Returns its version."""
    refresh(gw)
    version = max(gw.pseudonymiser.versions) + 1
    write_private(_file(gw, version), base64.b64encode(secrets.token_bytes(32)) + b"\n")
    refresh(gw)
    with transaction(gw.sessions) as session:
        audit.record(session, actor, "pepper.rotated", gw.now(), version=version)
    return version


def rekey(gw: Gateway) -> Rekeyed:
    """Re-key every identifier made under an older pepper to the current one, in batches."""
    refresh(gw)
    current = gw.pseudonymiser.current_version
    prefix = f"v{current}."
    done = left = 0
    skipped: set[str] = set()
    while True:
        with reading(gw.sessions) as session:
            rows = session.execute(
                select(MemberIdentifier.pseudonym, MemberIdentifier.kind, MemberIdentifier.member_id, Member.member_ref)
                .join(Member, Member.id == MemberIdentifier.member_id)
                .where(~MemberIdentifier.pseudonym.startswith(prefix), MemberIdentifier.pseudonym.not_in(skipped or {""}))
                .limit(REKEY_BATCH)).all()
            if not rows:
                return Rekeyed(done, left)
            ids = {r.member_id for r in rows}
            fields = {(f.member_id, f.field): f.ciphertext for f in session.scalars(select(PiiField).where(PiiField.member_id.in_(ids)))}
        keys = gw.keystore.get_many(sorted({r.member_ref for r in rows}))
        moves = []
        for r in rows:
            ciphertext, wrapped = fields.get((r.member_id, r.kind)), keys.get(r.member_ref)
            try:
                value = gw.vault.decrypt_field(wrapped, r.member_ref, r.kind, ciphertext) if ciphertext else None
            except PrivacyError:
                value = None
            if value is None:
                skipped.add(r.pseudonym)
                left += 1
                continue
            moves.append((r.pseudonym, gw.pseudonymiser.pseudonym_of_normalised(r.kind, value), r.member_id, r.kind))
        if moves:
            with transaction(gw.sessions) as session:
                # Only rows still as read: a login may have re-keyed one meanwhile (members.find_by_identifier).
                gone = session.execute(delete(MemberIdentifier).where(MemberIdentifier.pseudonym.in_([m[0] for m in moves]))
                                       .returning(MemberIdentifier.pseudonym)).scalars().all()
                still = set(gone)
                rows = [{"pseudonym": new, "member_id": mid, "kind": kind} for old, new, mid, kind in moves if old in still]
                if rows:
                    session.execute(insert(MemberIdentifier), rows)
            done += len(still)


def retire(gw: Gateway, version: int, actor: str) -> None:
    """Destroy an old pepper once nothing refers to it any more."""
    refresh(gw)
    if version == gw.pseudonymiser.current_version:
        raise Conflict(f"pepper v{version} is the current one: rotate first")
    if version not in gw.pseudonymiser.versions:
        raise GatewayError(f"there is no pepper v{version}")
    prefix = f"v{version}."
    with reading(gw.sessions) as session:
        if session.scalar(select(MemberIdentifier.pseudonym).where(MemberIdentifier.pseudonym.startswith(prefix)).limit(1)):
            raise Conflict(f"identifiers are still keyed with pepper v{version}: run the re-keying first")
        pending = [p for (p,) in session.execute(select(PendingEnrolment.pseudonyms))]
    if any(parse_pseudonym(ps)[0] == version for text in pending for ps in _pseudonyms(text)):
        raise Conflict(f"an enrolment in progress uses pepper v{version}: retire it once that has expired")
    destroy_file(_file(gw, version))
    refresh(gw)
    with transaction(gw.sessions) as session:
        audit.record(session, actor, "pepper.retired", gw.now(), version=version)


def _pseudonyms(text: str) -> list[str]:
    return [p for candidates in json.loads(text).values() for p in (candidates if isinstance(candidates, list) else [candidates])]
