"""Who is calling. Members present a token issued at enrolment or login; the brand's operators,
points of sale and auditors present API keys (stored hashed, role-bound, with an optional expiry,
revocable; listed with when each was last used)."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from .db import as_utc, reading, transaction
from .errors import Forbidden, NotFound, Unauthorised
from .models import ApiKey, Member
from .services import members

ROLES = ("member", "operator", "pos", "auditor")
API_KEY_ROLES = ("operator", "pos", "auditor")
bearer = HTTPBearer(auto_error=False, description="A member token (mt_...) or an API key (ak_...)")


@dataclass(frozen=True)
class Principal:
    role: str
    subject: str  # "member:<ref>" or "apikey:<id>": the actor in logs and the idempotency scope
    member_id: int | None = None
    label: str | None = None
    expires_at: datetime | None = None  # API keys with an expiry


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


LAST_USED_EVERY = timedelta(minutes=1)  # last_used_at is kept to about the minute: not a write per request


def create_api_key(session: Session, role: str, label: str, now: datetime, expires_at: datetime | None = None) -> tuple[ApiKey, str]:
    if role not in API_KEY_ROLES:
        raise ValueError(f"role must be one of {API_KEY_ROLES}")
    if expires_at is not None and expires_at <= now:
        raise ValueError("an API key must expire in the future")
    secret = f"ak_{role}_" + secrets.token_urlsafe(32)
    row = ApiKey(key_hash=_hash(secret), role=role, label=label, created_at=now, expires_at=expires_at)
    session.add(row)
    session.flush()
    return row, secret


def api_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


def revoke_api_key(session: Session, key_id: int, now: datetime) -> tuple[ApiKey, bool]:
    """(the key, whether this call revoked it): revoking a revoked key changes nothing."""
    row = session.get(ApiKey, key_id, with_for_update=True)
    if row is None:
        raise NotFound("no such API key")
    if row.revoked_at is not None:
        return row, False
    row.revoked_at = now
    return row, True


def authenticate(session: Session, secret: str, now: datetime) -> Principal:
    if secret.startswith("mt_"):
        member = members.member_for_token(session, secret, now)
        if member is None:
            raise Unauthorised("token unknown or expired")
        member_id, member_ref = member
        return Principal("member", f"member:{member_ref}", member_id)
    if secret.startswith("ak_"):
        key = session.scalars(select(ApiKey).where(ApiKey.key_hash == _hash(secret))).first()
        if key is None or key.revoked_at is not None:
            raise Unauthorised("API key unknown or revoked")
        expires_at = as_utc(key.expires_at) if key.expires_at is not None else None
        if expires_at is not None and expires_at <= now:
            raise Unauthorised("API key expired")
        return Principal(key.role, f"apikey:{key.id}", label=key.label, expires_at=expires_at)
    raise Unauthorised("unrecognised credential")


class ApiKeyCache:
    """API keys this process checked in the last `ttl_s` seconds, so a till's every request does not
    cost a database read. So a key revoked on any worker is refused by every worker within `ttl_s`
    (GATEWAY_API_KEY_CACHE_S, 5 s by default); an expired one is never accepted."""

    def __init__(self, ttl_s: float = 5.0):
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[float, Principal]] = {}

    def get(self, secret: str, now: datetime) -> Principal | None:
        entry = self._entries.get(_hash(secret))
        if entry is None or entry[0] < time.monotonic():
            return None
        who = entry[1]
        return None if who.expires_at is not None and who.expires_at <= now else who

    def put(self, secret: str, who: Principal) -> None:
        if self.ttl_s:
            self._entries[_hash(secret)] = (time.monotonic() + self.ttl_s, who)


def _authenticate(gw, secret: str) -> Principal:
    now = gw.now()
    with reading(gw.sessions) as session:
        who = authenticate(session, secret, now)
        if who.role not in API_KEY_ROLES:
            return who
        last_used = session.scalar(select(ApiKey.last_used_at).where(ApiKey.key_hash == _hash(secret)))
    # Kept to about the minute: a write only when the recorded use is older than that.
    if last_used is None or as_utc(last_used) < now - LAST_USED_EVERY:
        with transaction(gw.sessions) as session:
            session.execute(update(ApiKey).where(ApiKey.key_hash == _hash(secret)).values(last_used_at=now))
    return who


async def principal(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal:
    if credentials is None:
        raise Unauthorised("credentials required (Authorization: Bearer ...)")
    secret, cache = credentials.credentials, request.app.state.api_keys
    if secret.startswith("ak_") and (who := cache.get(secret, request.app.state.gateway.now())) is not None:
        return who
    who = await run_in_threadpool(_authenticate, request.app.state.gateway, secret)
    if who.role in API_KEY_ROLES:  # member tokens are not cached: erasure and expiry take effect at once
        cache.put(secret, who)
    return who


def allow(*roles: str):
    """A dependency admitting only the given roles."""

    async def check(who: Principal = Depends(principal)) -> Principal:
        if who.role not in roles:
            raise Forbidden(f"this needs one of the roles: {', '.join(roles)}")
        return who

    return check


def own_member(session: Session, who: Principal) -> Member:
    member = session.get(Member, who.member_id)
    if member is None:
        raise Unauthorised("token unknown or expired")
    return member
