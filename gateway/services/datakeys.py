"""The members' data keys over time: the key-encryption key rotates on a schedule (which is what makes
an erasure final: privacy/keystore.py), and keys whose enrolment never committed are swept."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from sqlalchemy import select

from privacy.keystore import Rotation

from ..db import reading, scrub_wal, transaction
from ..models import Member, PendingEnrolment
from ..runtime import Gateway
from . import audit

log = logging.getLogger(__name__)

ORPHAN_AFTER_S = 3600  # a key this old with no member or enrolment behind it is a leftover


def rotate(gw: Gateway, actor: str, only_if_due: bool = False) -> Rotation | None:
    """Re-wrap every data key under a new KEK and destroy the old one (audited). With `only_if_due`,
    only when the rotation interval has passed and no other process of the brand rotated meanwhile."""
    since = None
    if only_if_due:
        since = time.time() - gw.settings.kek_rotation_s
        if gw.keystore.rotated_at() > since:
            return None
    rotation = gw.keystore.rotate(gw.vault, unless_rotated_since=since)
    if rotation is not None:
        with transaction(gw.sessions) as session:
            audit.record(session, actor, "kek.rotated", gw.now(), kek_id=rotation.new_kek_id,
                         destroyed=list(rotation.destroyed_kek_ids), rewrapped=rotation.rewrapped)
        scrub_wal(gw.engine)
        log.info("KEK rotated: %d data keys re-wrapped under %s, %d KEK(s) destroyed", rotation.rewrapped,
                 rotation.new_kek_id, len(rotation.destroyed_kek_ids))
    return rotation


def final_by(gw: Gateway, now: datetime) -> datetime | None:
    """When an erasure made `now` becomes final: the next rotation destroys the KEK that wrapped the
    erased key (every copy of it, in any file or backup, then decrypts nothing). None when no
    rotation is scheduled (GATEWAY_KEK_ROTATION_S=0): final only once an operator rotates."""
    if not gw.settings.kek_rotation_s:
        return None
    due = datetime.fromtimestamp(gw.keystore.rotated_at() + gw.settings.kek_rotation_s, UTC)
    return max(due, now)


def sweep(gw: Gateway, now: datetime) -> int:
    """Destroy data keys whose member or enrolment never committed (a crash between the key store and
    the database), once they are old enough that no enrolment can still be committing."""
    candidates = gw.keystore.refs_stored_before(time.time() - ORPHAN_AFTER_S)
    if not candidates:
        return 0
    with reading(gw.sessions) as session:
        alive = set(session.scalars(select(Member.member_ref).where(Member.member_ref.in_(candidates))))
        alive |= set(session.scalars(select(PendingEnrolment.member_ref).where(PendingEnrolment.member_ref.in_(candidates))))
    gone = [ref for ref in candidates if ref not in alive]
    for ref in gone:
        gw.keystore.delete(ref)
    return len(gone)



