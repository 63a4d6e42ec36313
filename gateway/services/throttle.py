"""Rate limits on attempts (enrolment, login, codes) and the lock that repeated failed logins earn.

Each limit is GCRA (rules.pace) with its state in one row keyed by a hash of what it counts: an
identifier's pseudonym, whether or not a member has it (so a refusal says nothing about
membership), or the client's address. The rows live in the database, so every worker of a gateway
sees the same counts. An attempt is admitted by all its limits or by none, and the admission commits
on its own, before the work it admits: a failed attempt has been counted."""

from __future__ import annotations

import hashlib
import ipaddress
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ..db import as_utc, insert_missing
from ..errors import RateLimited
from ..models import LoginFailure, Throttle as ThrottleRow
from ..settings import GatewaySettings, Throttle
from . import rules
from .purchases import EPOCH


def key(action: str, scope: str, value: str) -> str:
    return hashlib.sha256(f"{action}:{scope}:{value}".encode()).hexdigest()


def address_of(host: str | None) -> str:
    """The client address a limit counts: the IP, or an IPv6 client's /64 (one host's usual share)."""
    try:
        ip = ipaddress.ip_address(host or "")
    except ValueError:
        return host or "unknown"
    if ip.version == 6:
        if ip.ipv4_mapped is not None:  # ::ffff:a.b.c.d is an IPv4 client
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _us(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def admit(session: Session, limits: list[tuple[str, Throttle]], now: datetime) -> None:
    """Count one attempt against every (key, limit), or raise RateLimited with the longest wait."""
    keys = sorted({k for k, _ in limits})  # in key order: concurrent attempts cannot deadlock
    insert_missing(session, ThrottleRow.__table__, [{"key": k, "tat_us": 0} for k in keys])
    rows = {r.key: r for r in session.scalars(select(ThrottleRow).where(ThrottleRow.key.in_(keys))
                                              .order_by(ThrottleRow.key).with_for_update())}
    now_us = _us(now)
    decided, longest = {}, 0
    for k, limit in limits:
        tat, wait = rules.pace(decided.get(k, rows[k].tat_us), now_us, limit.burst, limit.period_s * 1_000_000)
        decided[k] = tat
        longest = max(longest, wait)
    if longest:
        wait_s = -(-longest // 1_000_000)
        raise RateLimited(f"too many attempts; try again in {wait_s} s", retry_after_s=wait_s)
    for k, tat in decided.items():
        rows[k].tat_us = tat


# ---------------------------------------------------------------- login lock


def lock_key(pseudonym: str) -> str:
    return key("login-lock", "identifier", pseudonym)


def locked_for(session: Session, pseudonym: str, now: datetime) -> int:
    """Seconds the identifier stays locked (0: not locked)."""
    row = session.get(LoginFailure, lock_key(pseudonym))
    if row is None or row.locked_until is None:
        return 0
    return max(0, -(-(as_utc(row.locked_until) - now) // timedelta(seconds=1)))


def failed(session: Session, settings: GatewaySettings, pseudonym: str, now: datetime) -> tuple[int, datetime | None]:
    """Record a failed login; returns (consecutive failures, the lock it starts, if any). From the
    `login_lock_after`-th failure on, each one locks the identifier for twice as long as the one
    before (login_lock_base_s, then 2x, 4x, ... up to login_lock_max_s)."""
    k = lock_key(pseudonym)
    insert_missing(session, LoginFailure.__table__, [{"key": k, "failures": 0, "locked_until": None}])
    row = session.get(LoginFailure, k, with_for_update=True, populate_existing=True)
    row.failures += 1
    over = row.failures - settings.login_lock_after
    if over < 0:
        return row.failures, None
    row.locked_until = now + timedelta(seconds=min(settings.login_lock_base_s * 2 ** min(over, 32), settings.login_lock_max_s))
    return row.failures, row.locked_until


def succeeded(session: Session, pseudonym: str) -> None:
    session.execute(delete(LoginFailure).where(LoginFailure.key == lock_key(pseudonym)))


def forget_idle(session: Session, now: datetime) -> int:
    """Maintenance: rows whose limit has fully recovered (a missing row means the same). Login
    failure counts are kept until a success clears them: they decide the next lock's length."""
    return session.execute(delete(ThrottleRow).where(ThrottleRow.tat_us < _us(now))).rowcount
