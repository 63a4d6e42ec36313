"""Who is calling. Members present a token issued at enrolment or login; the brand's operators,
points of sale and auditors present API keys (stored hashed, role-bound, revocable)."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from .db import reading
from .errors import Forbidden, Unauthorised
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


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_key(session: Session, role: str, label: str, now: datetime) -> tuple[ApiKey, str]:
    if role not in API_KEY_ROLES:
        raise ValueError(f"role must be one of {API_KEY_ROLES}")
    secret = f"ak_{role}_" + secrets.token_urlsafe(32)
    row = ApiKey(key_hash=_hash(secret), role=role, label=label, created_at=now)
    session.add(row)
    session.flush()
    return row, secret


def authenticate(session: Session, secret: str, now: datetime) -> Principal:
    if secret.startswith("mt_"):
        member = members.member_for_token(session, secret, now)
        if member is None:
            raise Unauthorised("token unknown or expired")
        return Principal("member", f"member:{member.member_ref}", member.id)
    if secret.startswith("ak_"):
        key = session.scalars(select(ApiKey).where(ApiKey.key_hash == _hash(secret))).first()
        if key is None or key.revoked_at is not None:
            raise Unauthorised("API key unknown or revoked")
        return Principal(key.role, f"apikey:{key.id}", label=key.label)
    raise Unauthorised("unrecognised credential")


class ApiKeyCache:
    """API keys this process checked in the last few seconds, so a till's every request does not
    cost a database read. A revoked key stops working within `ttl_s` on every worker."""

    def __init__(self, ttl_s: float = 5.0):
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[float, Principal]] = {}

    def get(self, secret: str) -> Principal | None:
        entry = self._entries.get(_hash(secret))
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, secret: str, who: Principal) -> None:
        self._entries[_hash(secret)] = (time.monotonic() + self.ttl_s, who)


def _authenticate(gw, secret: str) -> Principal:
    with reading(gw.sessions) as session:
        return authenticate(session, secret, gw.now())


async def principal(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal:
    if credentials is None:
        raise Unauthorised("credentials required (Authorization: Bearer ...)")
    secret, cache = credentials.credentials, request.app.state.api_keys
    if secret.startswith("ak_") and (who := cache.get(secret)) is not None:
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
