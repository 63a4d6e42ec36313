"""The brand's programme (earn rules, tiers, campaigns), changed by its operator without a restart.

Every change is a new version (`programme_versions`, never updated) and an audit-log entry with the
digest of the document; the highest version is in force. Every purchase, action and tier review reads
the version in force inside its own transaction, so the first purchase after a change earns by it,
whichever worker takes it. Version 0 is the programme in the settings (GATEWAY_EARN__..., tiers).

A change names the version it was made from (`expected`): two operators editing at once do not
silently overwrite each other; the second is refused (409) and sees the first's version.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..errors import Conflict, GatewayError
from ..models import ProgrammeVersion
from ..settings import Programme
from . import audit

_parsed: dict[tuple[int, str], Programme] = {}  # (version, digest) -> its Programme: parsed once per process


def version_in_force(session: Session) -> int:
    return session.scalar(select(func.max(ProgrammeVersion.version))) or 0


def current(session: Session, gw: Any) -> Programme:
    """The programme in force, read in the caller's transaction."""
    row = session.execute(select(ProgrammeVersion.version, ProgrammeVersion.document)
                          .order_by(ProgrammeVersion.version.desc()).limit(1)).first()
    if row is None:
        return gw.settings.programme
    key = (row.version, digest(row.document))
    if key not in _parsed:
        _parsed[key] = Programme.model_validate_json(row.document)
    return _parsed[key]


def digest(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


def canonical(programme: Programme) -> str:
    return json.dumps(programme.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def change(session: Session, gw: Any, actor: str, programme: Programme, expected: int, note: str, now: datetime) -> int:
    """Save `programme` as the next version after `expected` (the version the operator edited);
    returns the new version. Refused (Conflict) when another change came first."""
    home, base = gw.settings.earn.home_currency, gw.settings.earn.currencies[gw.settings.earn.home_currency]
    if programme.earn.home_currency != home or programme.earn.currencies[home].minor_per_unit != base.minor_per_unit:
        # Points are valued and booked in the home currency (points_per_currency_unit): a setting, not a campaign.
        raise GatewayError(f"the home currency stays {home} ({base.minor_per_unit} minor units), listed first")
    in_force = version_in_force(session)
    if in_force != expected:
        raise Conflict(f"the programme is at version {in_force}, not {expected}: reload it and make the change again")
    document = canonical(programme)
    new = in_force + 1
    session.add(ProgrammeVersion(version=new, document=document, actor=actor, note=note, created_at=now))
    try:
        session.flush()
    except IntegrityError:  # another worker saved version `new` between our read and our write
        raise Conflict("the programme changed meanwhile: reload it and make the change again") from None
    audit.record(session, actor, "programme.changed", now, version=new, digest=digest(document), note=note,
                 campaigns=[c.code for c in programme.campaigns])
    return new


def history(session: Session, gw: Any) -> list[dict[str, Any]]:
    """Every version, newest first: who saved it, when, why, and the document."""
    rows = session.scalars(select(ProgrammeVersion).order_by(ProgrammeVersion.version.desc())).all()
    out = [{"version": r.version, "actor": r.actor, "note": r.note, "created_at": r.created_at,
            "digest": digest(r.document), "programme": json.loads(r.document)} for r in rows]
    base = canonical(gw.settings.programme)
    out.append({"version": 0, "actor": "settings", "note": "the gateway's settings", "created_at": None,
                "digest": digest(base), "programme": json.loads(base)})
    return out
