"""Processings of members' data that rely on their consent: recorded when they run, listed for the auditor.

Five kinds, each needing one purpose:

* ``exchange`` and ``redemption`` (``alliance_exchange``): their own tables are the record (the
  consent is required in the same transaction that creates the row);
* ``training`` (``federated_training``): a federated training read of the brand's features, one per
  Flower round and stage (``run:<run id>:round:<n>:train|evaluate``), written by the ``gateway``
  data source of :mod:`federation.data` at the moment it checks the consents;
* ``campaign`` (``marketing``): the members put on one campaign target list;
* ``overlap`` (``overlap_analytics``): the members whose identifiers went, encrypted, into one
  private set intersection with another brand (:mod:`gateway.services.overlap`).

A training run reads the same members round after round unless a consent changed, so the members of
a processing, each with the seq of the consent-log entry it relied on, are a *member set* stored once
and found again by its digest: twenty rounds of thirty thousand members add forty small rows, not
1.2 million. The auditor's listing expands them again: one item per (processing, member).
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import uuid
from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from privacy.receipts import load_receipt
from sqlalchemy import and_, insert, or_, select, text
from sqlalchemy.engine import Connection

from ..db import as_utc, insert_many, transaction
from ..errors import Conflict, GatewayError, NotFound
from ..models import ConsentLogEntry, Exchange, Member, MemberSet, MemberSetEntry, Processing, Redemption
from ..runtime import Gateway
from ..schemas import MAX_DB_INT
from . import audit, consent

KINDS = ("exchange", "redemption", "training", "campaign", "overlap")
PURPOSE_OF = {"exchange": "alliance_exchange", "redemption": "alliance_exchange",
              "training": "federated_training", "campaign": "marketing", "overlap": "overlap_analytics"}
RECORDED = ("training", "campaign", "overlap")  # the kinds stored in `processings`
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def set_digest(pairs: list[tuple[int, int]]) -> str:
    """SHA-256 of sorted (member id, consent seq) pairs as little-endian 64-bit integers."""
    return hashlib.sha256(struct.pack(f"<{2 * len(pairs)}q", *(v for pair in pairs for v in pair))).hexdigest()


def _lock_sets(conn: Connection) -> None:
    """Two writers must not both create the same member set (SQLite: BEGIN IMMEDIATE already serialises)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('member_sets'))"))


def record(conn: Connection, kind: str, ref: str, decided_at: datetime, relied_on: Mapping[int, int]) -> int:
    """Store one processing of `kind` covering `relied_on` (member id -> seq of the consent-log entry it
    relied on), decided at `decided_at`, in the caller's transaction. Returns the processing id."""
    if kind not in RECORDED:
        raise ValueError(f"kind must be one of {RECORDED}")
    pairs = sorted((int(m), int(s)) for m, s in relied_on.items())
    digest = set_digest(pairs)
    _lock_sets(conn)
    set_id = conn.execute(select(MemberSet.id).where(MemberSet.digest == digest)).scalar()
    if set_id is None:
        set_id = conn.execute(insert(MemberSet).values(digest=digest, size=len(pairs))).inserted_primary_key[0]
        if pairs:
            # A training read can cover tens of thousands of members.
            insert_many(conn, MemberSetEntry.__table__, ("member_set_id", "member_id", "consent_seq"), [(set_id, m, s) for m, s in pairs])
    return conn.execute(insert(Processing).values(kind=kind, ref=ref, purpose=PURPOSE_OF[kind], decided_at=decided_at,
                                                  member_set_id=set_id)).inserted_primary_key[0]


# ------------------------------------------------------------------------------------ campaigns


def _released_model(gw: Gateway, model_version: str | None) -> Any:
    # The gateway scores its own members with the alliance's released model; the feature definition and
    # the model formats live in federation, imported here so that a gateway starts without them.
    from federation import releases, scoring

    release_dir = gw.settings.releases_dir
    if release_dir is None:
        raise Conflict("this gateway has no released models: set GATEWAY_RELEASES_DIR")
    path = releases.latest_release(release_dir) if model_version is None else release_dir / f"{model_version}.release.json"
    if path is None or not path.is_file():
        raise NotFound("no release in the releases directory" if model_version is None else f"no release {model_version!r}")
    name = path.name.removesuffix(".release.json")
    try:
        model = scoring.load_model(path)
        if not isinstance(model.record.get("model_version"), str):
            raise KeyError("model_version")
        return scoring.for_brand(model, gw.engine, gw.settings.brand_id)
    except OSError:
        raise Conflict(f"release {name}: its model file cannot be read") from None
    except KeyError as exc:
        raise Conflict(f"release {name}: the record has no {exc}") from None
    except (AttributeError, TypeError, ValueError) as exc:
        raise Conflict(f"release {name} cannot be used: {exc}") from None


def run_campaign(gw: Gateway, actor: str, *, model_version: str | None, top_k: int, min_score: float,
                 as_of: datetime | None) -> dict[str, Any]:
    """Score the members with `marketing` consent, keep the best `top_k` at or above `min_score`, and
    record them as one campaign processing (and the campaign in the admin audit log)."""
    from federation import scoring

    model = _released_model(gw, model_version)
    now = gw.now()
    as_of = as_utc(as_of) if as_of is not None else now
    if as_of > now:
        raise GatewayError("as_of is in the future: there are features only up to now")
    if as_of < EPOCH:
        raise GatewayError("as_of is before 1970: there are no features that old")
    try:
        scored = scoring.scored_members(gw.engine, model, as_of=as_of)  # read-only, outside the write transaction
    except (KeyError, TypeError, ValueError) as exc:
        raise Conflict(f"the model cannot score this brand's features: {exc}") from None
    ref = f"campaign:{uuid.uuid4()}"
    with transaction(gw.sessions) as session:
        conn = session.connection()
        # The last consent check and the record in one transaction: the list is the set recorded.
        consent.hold(conn)
        targeting = scoring.select_targets(conn, scored, top_k=top_k, min_score=min_score, now=gw.now())
        record(conn, "campaign", ref, targeting.decided_at, targeting.relied_on)
        audit.record(session, actor, "campaign.targeted", now, campaign_ref=ref, model_version=model.record["model_version"],
                     model_sha256=model.record["model_sha256"], model_used=model.uses, as_of=as_of.isoformat(), top_k=top_k,
                     min_score=min_score, targets=len(targeting.rows))
    return {"campaign_ref": ref, "model_version": model.record["model_version"], "model_sha256": model.record["model_sha256"],
            "model_used": model.uses, "as_of": as_of, "decided_at": targeting.decided_at, "count": len(targeting.rows), "targets": targeting.rows}


# ------------------------------------------------------------------------------------ the auditor's listing

_CURSOR = re.compile(r"^(exchange|redemption|training|campaign):(\d{1,19})(?:\.(\d{1,19}))?$")


def parse_cursor(cursor: str) -> tuple[str, tuple[int, int]]:
    """``exchange:<id>``, ``redemption:<id>``, ``training:<processing id>.<member id>`` or the same for
    ``campaign``: the last item already seen."""
    match = _CURSOR.match(cursor)
    if match is None or (match.group(1) in RECORDED) != (match.group(3) is not None):
        raise GatewayError(f"malformed cursor {cursor!r}: give the `next` of the previous page")
    position = (int(match.group(2)), int(match.group(3) or 0))
    if max(position) > MAX_DB_INT:  # no id is that large, and the database could not even compare it
        raise GatewayError(f"malformed cursor {cursor!r}: give the `next` of the previous page")
    return match.group(1), position


def page(conn: Connection, kind: str | None, since: str | None, limit: int) -> dict[str, Any]:
    """Processings after the cursor, kind by kind in the order of KINDS (or of one kind), oldest first
    within a kind. ``next`` is the cursor of the last item when the page is full, else None."""
    if kind is not None and kind not in KINDS:
        raise GatewayError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    start_kind, position = (kind or KINDS[0]), (0, 0)
    if since is not None:
        start_kind, position = parse_cursor(since)
        if kind is not None and start_kind != kind:
            raise GatewayError(f"the cursor is of kind {start_kind!r}, the filter asks for {kind!r}")
    kinds = [kind] if kind is not None else list(KINDS[KINDS.index(start_kind):])
    items: list[dict[str, Any]] = []
    for k in kinds:
        after = position if k == start_kind else (0, 0)
        items += _chain_operations(conn, k, after[0], limit - len(items)) if k not in RECORDED \
            else _recorded(conn, k, after, limit - len(items))
        if len(items) >= limit:
            break
    return {"items": items, "next": items[-1]["cursor"] if len(items) >= limit else None}


def _chain_operations(conn: Connection, kind: str, after: int, limit: int) -> list[dict[str, Any]]:
    model, ref_col = (Exchange, Exchange.exchange_ref) if kind == "exchange" else (Redemption, Redemption.redemption_ref)
    rows = conn.execute(select(model.id, ref_col, model.member_id, Member.member_ref, model.created_at, model.status, model.tx_hash)
                        .join(Member, Member.id == model.member_id).where(model.id > after).order_by(model.id).limit(limit)).all()
    purpose = PURPOSE_OF[kind]
    in_force = _consent_in_force(conn, purpose, [(r.member_id, as_utc(r.created_at)) for r in rows])
    return [{"kind": kind, "ref": r[1], "member_ref": r.member_ref, "purpose": purpose, "decided_at": as_utc(r.created_at),
             "consent_seq": seq, "status": r.status, "tx_hash": r.tx_hash, "cursor": f"{kind}:{r.id}"}
            for r, seq in zip(rows, in_force, strict=True)]


def _consent_in_force(conn: Connection, purpose: str, wanted: list[tuple[int, datetime]]) -> list[int | None]:
    """For each (member id, moment): the seq of the member's latest consent-log entry for `purpose` at or
    before that moment. Exchanges and redemptions do not store the entry they relied on; the log does."""
    if not wanted:
        return []
    history: dict[int, list[tuple[datetime, int]]] = defaultdict(list)
    rows = conn.execute(select(ConsentLogEntry.seq, ConsentLogEntry.member_id, ConsentLogEntry.payload, ConsentLogEntry.created_at)
                        .where(ConsentLogEntry.member_id.in_({m for m, _ in wanted})).order_by(ConsentLogEntry.seq))
    for seq, member_id, payload, created_at in rows:
        if load_receipt(json.loads(payload)).receipt.purpose.value == purpose:
            history[member_id].append((as_utc(created_at), seq))
    return [max((seq for at, seq in history.get(m, []) if at <= moment), default=None) for m, moment in wanted]


def _recorded(conn: Connection, kind: str, after: tuple[int, int], limit: int) -> list[dict[str, Any]]:
    pid, mid = after
    rows = conn.execute(
        select(Processing.id, Processing.ref, Processing.purpose, Processing.decided_at, MemberSetEntry.member_id,
               Member.member_ref, MemberSetEntry.consent_seq)
        .join(MemberSetEntry, MemberSetEntry.member_set_id == Processing.member_set_id)
        .join(Member, Member.id == MemberSetEntry.member_id)
        .where(Processing.kind == kind, or_(Processing.id > pid, and_(Processing.id == pid, MemberSetEntry.member_id > mid)))
        .order_by(Processing.id, MemberSetEntry.member_id).limit(limit)).all()
    return [{"kind": kind, "ref": r.ref, "member_ref": r.member_ref, "purpose": r.purpose, "decided_at": as_utc(r.decided_at),
             "consent_seq": r.consent_seq, "status": None, "tx_hash": None, "cursor": f"{kind}:{r.id}.{r.member_id}"}
            for r in rows]


def members_of(conn: Connection, processing_id: int) -> dict[int, int]:
    """member id -> consent seq of one processing (tests, tools)."""
    rows = conn.execute(select(MemberSetEntry.member_id, MemberSetEntry.consent_seq)
                        .join(Processing, Processing.member_set_id == MemberSetEntry.member_set_id)
                        .where(Processing.id == processing_id))
    return {int(m): int(s) for m, s in rows}


def find(conn: Connection, kind: str, ref: str) -> list[int]:
    """Ids of the processings of `kind` recorded under `ref`, oldest first."""
    return [int(i) for i in conn.execute(select(Processing.id).where(Processing.kind == kind, Processing.ref == ref)
                                         .order_by(Processing.id)).scalars()]


__all__ = ["KINDS", "PURPOSE_OF", "find", "members_of", "page", "parse_cursor", "record", "run_campaign"]
