"""The brand operator console, at /console on each gateway: server-rendered pages over the same
services the API uses (one way to do each thing).

Sign-in exchanges an operator API key for a session cookie: HMAC-signed (a key derived from the
gateway's own key material, the same in every worker), HttpOnly, SameSite=Strict, Secure over
HTTPS, valid for 8 hours and only while the API key itself is valid (a revoked key ends its sessions
at the next page). Every form carries a CSRF token bound to the session, and a POST whose Origin is
another site is refused. Member data is shown masked, and opening a member is audited as the API's
`GET /v1/members/{ref}` is.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError
from sqlalchemy import func, select

from ..auth import api_keys, authenticate, create_api_key, revoke_api_key
from ..db import as_utc, reading, transaction
from ..errors import GatewayError
from ..models import ApiKey, AuditLogEntry, Consent, Exchange, Member, Redemption, WebhookSubscription
from ..runtime import Gateway
from ..services import anchoring, audit, consent, ledger, liability, logs, members, processings, programme, reconcile, rewards
from ..settings import Programme
from . import HEADERS, TEMPLATES, bars, environment

router = APIRouter(prefix="/console", include_in_schema=False)
COOKIE = "console_session"
SESSION_S = 8 * 3600
PAGE = 50
env = environment(TEMPLATES / "console")


@dataclass(frozen=True)
class Operator:
    key_id: int
    label: str
    csrf: str

    @property
    def actor(self) -> str:
        return f"apikey:{self.key_id} (console)"


def _secret(gw: Gateway) -> bytes:
    return hmac.new(gw.webhook_key, b"alliance operator console session v1", hashlib.sha256).digest()


def _sign(gw: Gateway, body: str) -> str:
    return hmac.new(_secret(gw), body.encode(), hashlib.sha256).hexdigest()


def _session_token(gw: Gateway, key_id: int) -> str:
    body = f"{key_id}.{int(time.time()) + SESSION_S}.{secrets.token_urlsafe(16)}"
    return f"{body}.{_sign(gw, body)}"


def _operator(request: Request) -> Operator | None:
    """The signed-in operator, or None (no cookie, forged, expired, or the API key no longer valid)."""
    gw: Gateway = request.app.state.gateway
    token = request.cookies.get(COOKIE, "")
    try:
        key_id, expires, nonce, sig = token.split(".")
        if not hmac.compare_digest(sig, _sign(gw, f"{key_id}.{expires}.{nonce}")) or int(expires) < time.time():
            return None
    except ValueError:
        return None
    with reading(gw.sessions) as session:
        key = session.get(ApiKey, int(key_id))
        now = gw.now()
        if key is None or key.role != "operator" or key.revoked_at is not None or (key.expires_at and as_utc(key.expires_at) <= now):
            return None
        return Operator(key.id, key.label, _sign(gw, f"csrf.{nonce}")[:32])


def _render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    gw: Gateway = request.app.state.gateway
    html = env.get_template(template).render(brand=gw.settings.brand_name, product=f"{gw.settings.brand_name} · operator console",
                                             path=request.url.path, **context)
    return HTMLResponse(html, status_code=status_code, headers=HEADERS)


def _to_login(request: Request) -> RedirectResponse:
    return RedirectResponse("/console/login", status_code=303)


async def _posted(request: Request) -> dict[str, str]:
    """An urlencoded form (the request guard has bounded its size)."""
    return {k: v[-1] for k, v in parse_qs((await request.body()).decode(errors="replace"), keep_blank_values=True).items()}


async def _form(request: Request, who: Operator) -> dict[str, str] | None:
    """The posted form, or None when it is not this session's (CSRF token) or comes from another site."""
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        return None
    form = await _posted(request)
    return form if hmac.compare_digest(form.get("csrf", ""), who.csrf) else None


def _forbidden(request: Request) -> HTMLResponse:
    return _render(request, "message.html", 403, title="Refused", message="This form is out of date or did not come from this console: "
                   "open the page again and resubmit.", who=None)


# ---------------------------------------------------------------- sign-in


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> HTMLResponse:
    return _render(request, "login.html", who=None, error=None)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request):
    gw: Gateway = request.app.state.gateway
    form = await _posted(request)
    try:
        with reading(gw.sessions) as session:
            who = authenticate(session, form.get("api_key", "").strip(), gw.now())
    except GatewayError:
        who = None
    if who is None or who.role != "operator":
        return _render(request, "login.html", 401, who=None, error="This is not a valid operator API key.")
    key_id = int(who.subject.split(":")[1])
    with transaction(gw.sessions) as session:
        audit.record(session, f"apikey:{key_id} (console)", "console.signed_in", gw.now())
    response = RedirectResponse("/console/", status_code=303)
    response.set_cookie(COOKIE, _session_token(gw, key_id), max_age=SESSION_S, path="/console", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    return response


@router.post("/logout")
async def logout(request: Request):
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/console")
    return response


# ---------------------------------------------------------------- overview: liability, exchanges, redemptions


def _daily(session, column, days: int, now) -> list[tuple[str, int]]:
    since = (now - timedelta(days=days - 1)).date()
    day = func.date(column)
    counts = {str(d): n for d, n in session.execute(select(day, func.count()).where(column >= since).group_by(day))}
    return [(str(since + timedelta(days=i)), counts.get(str(since + timedelta(days=i)), 0)) for i in range(days)]


@router.get("/", response_class=HTMLResponse)
def overview(request: Request):
    if (who := _operator(request)) is None:
        return _to_login(request)
    gw: Gateway = request.app.state.gateway
    now = gw.now()
    with reading(gw.sessions) as session:
        by_status, by_tier = {}, {}
        for status, tier, n in session.execute(select(Member.status, Member.tier, func.count()).group_by(Member.status, Member.tier)):
            by_status[status] = by_status.get(status, 0) + n  # one pass over the members for both tables
            if status != "erased":
                by_tier[tier] = by_tier.get(tier, 0) + n
        exchanges = _daily(session, Exchange.created_at, 30, now)
        redemptions = _daily(session, Redemption.created_at, 30, now)
        return _render(request, "overview.html", who=who, liability=liability.report(session, gw), by_status=by_status, by_tier=by_tier,
                       version=programme.version_in_force(session),
                       exchanges=bars(exchanges, "Exchanges per day, last 30 days"),
                       redemptions=bars(redemptions, "Cross-brand redemptions per day, last 30 days"))


# ---------------------------------------------------------------- the programme


def _programme_page(request: Request, who: Operator, status_code: int = 200, error: str | None = None, done: str | None = None):
    gw: Gateway = request.app.state.gateway
    with reading(gw.sessions) as session:
        return _render(request, "programme.html", status_code, who=who, version=programme.version_in_force(session),
                       p=programme.current(session, gw), history=programme.history(session, gw)[:20], error=error, done=done, now=gw.now(),
                       catalogue=rewards.catalogue(session, gw.now(), include_inactive=True))


@router.get("/programme", response_class=HTMLResponse)
def programme_page(request: Request):
    if (who := _operator(request)) is None:
        return _to_login(request)
    return _programme_page(request, who)


def _edit(form: dict[str, str], current: Programme, what: str) -> tuple[dict, str]:
    """The programme document after one console form, and the note the version gets."""
    doc = current.model_dump(mode="json")
    if what == "earn":
        for code in doc["earn"]["currencies"]:
            doc["earn"]["currencies"][code]["points_per_unit"] = int(form[f"points_per_unit.{code}"])
        for key in ("welcome_points", "daily_cap", "validity_days", "first_order_multiplier_pct", "member_day_multiplier_pct"):
            doc["earn"][key] = int(form[key])
        return doc, form.get("note") or "earn rules changed"
    if what == "tiers":
        for i, tier in enumerate(doc["tiers"]):
            for key in ("min_spend_minor", "min_purchases", "min_actions", "earn_multiplier_pct"):
                tier[key] = int(form[f"{key}.{i}"])
        return doc, form.get("note") or "tier ladder changed"
    if what == "campaign":
        doc["campaigns"].append({"code": form["code"].strip(), "name": form["name"].strip(), "multiplier_pct": int(form["multiplier_pct"]),
                                 "starts_at": form["starts_at"] + ":00Z" if len(form["starts_at"]) == 16 else form["starts_at"],
                                 "ends_at": form["ends_at"] + ":00Z" if len(form["ends_at"]) == 16 else form["ends_at"],
                                 "channels": [c for c in ("store", "online", "app", "partner") if form.get(f"channel.{c}")]})
        return doc, f"campaign {form['code'].strip()} launched"
    code = what.removeprefix("end:")
    doc["campaigns"] = [c for c in doc["campaigns"] if c["code"] != code]
    return doc, f"campaign {code} ended"


async def _change(request: Request, what: str):
    if (who := _operator(request)) is None:
        return _to_login(request)
    if (form := await _form(request, who)) is None:
        return _forbidden(request)
    gw: Gateway = request.app.state.gateway
    try:
        with transaction(gw.sessions) as session:
            doc, note = _edit(form, programme.current(session, gw), what)
            version = programme.change(session, gw, who.actor, Programme.model_validate(doc), int(form.get("version", "-1")), note, gw.now())
    except (KeyError, ValueError, ValidationError) as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()) if isinstance(exc, ValidationError) else (
            f"missing field {exc}" if isinstance(exc, KeyError) else "every figure must be a whole number")
        return _programme_page(request, who, 400, error=f"Not saved: {problems}")
    except GatewayError as exc:
        return _programme_page(request, who, exc.status, error=f"Not saved: {exc}")
    return _programme_page(request, who, done=f"Saved as version {version}: {note}. The next purchase earns by it.")


@router.post("/programme/earn", response_class=HTMLResponse)
async def change_earn(request: Request):
    return await _change(request, "earn")


@router.post("/programme/tiers", response_class=HTMLResponse)
async def change_tiers(request: Request):
    return await _change(request, "tiers")


@router.post("/programme/campaigns", response_class=HTMLResponse)
async def launch_campaign(request: Request):
    return await _change(request, "campaign")


@router.post("/programme/campaigns/{code}/end", response_class=HTMLResponse)
async def end_campaign(request: Request, code: str):
    return await _change(request, f"end:{code}")


# ---------------------------------------------------------------- members


@router.get("/members", response_class=HTMLResponse)
def member_list(request: Request, q: str = "", after: int = 0):
    if (who := _operator(request)) is None:
        return _to_login(request)
    gw: Gateway = request.app.state.gateway
    q = q.strip()[:200]
    with reading(gw.sessions) as session:
        if q:
            found = None
            try:
                found = members.get_by_ref(session, q) if "@" not in q and not q.startswith("+") else \
                    members.find_by_identifier(session, gw, "email" if "@" in q else "phone", q)
            except GatewayError:
                pass
            rows = [found] if found is not None else []
        else:
            rows = session.scalars(select(Member).where(Member.id > after).order_by(Member.id).limit(PAGE)).all()
        return _render(request, "members.html", who=who, rows=rows, q=q, next=rows[-1].id if len(rows) == PAGE else None)


def _member_page(request: Request, who: Operator, ref: str, status_code: int = 200, error: str | None = None):
    gw: Gateway = request.app.state.gateway
    with transaction(gw.sessions) as session:
        try:
            member = members.get_by_ref(session, ref)
        except GatewayError as exc:
            return _render(request, "message.html", exc.status, who=who, title="No such member", message=str(exc))
        audit.record(session, who.actor, "member.viewed", gw.now(), member_ref=ref)
        return _render(request, "member.html", status_code, who=who, m=member, pii=members.masked_pii(session, gw, member),
                       consents=consent.current(session, member.id), lines=ledger.history(session, member.id, limit=200), error=error)


@router.get("/members/{ref}", response_class=HTMLResponse)
def member_page(request: Request, ref: str):
    if (who := _operator(request)) is None:
        return _to_login(request)
    return _member_page(request, who, ref[:64])


@router.post("/members/{ref}/status", response_class=HTMLResponse)
async def member_status(request: Request, ref: str):
    if (who := _operator(request)) is None:
        return _to_login(request)
    if (form := await _form(request, who)) is None:
        return _forbidden(request)
    status = form.get("status")
    if status not in ("frozen", "active"):
        return _member_page(request, who, ref[:64], 400, error="Choose freeze or reactivate.")
    gw: Gateway = request.app.state.gateway
    try:
        with transaction(gw.sessions) as session:
            members.change_status(session, gw, who.actor, ref[:64], status, form.get("reason", "")[:200] or None)
    except GatewayError as exc:
        return _member_page(request, who, ref[:64], exc.status, error=str(exc))
    return RedirectResponse(f"/console/members/{ref[:64]}", status_code=303)


# ---------------------------------------------------------------- consents and processings


@router.get("/consents", response_class=HTMLResponse)
def consents_page(request: Request):
    if (who := _operator(request)) is None:
        return _to_login(request)
    gw: Gateway = request.app.state.gateway
    with reading(gw.sessions) as session:
        granted = dict(session.execute(select(Consent.purpose, func.count()).where(Consent.granted.is_(True)).group_by(Consent.purpose)).all())
        withdrawn = dict(session.execute(select(Consent.purpose, func.count()).where(Consent.granted.is_(False)).group_by(Consent.purpose)).all())
        recent = processings.page(session.connection(), None, None, 50)
    return _render(request, "consents.html", who=who, granted=granted, withdrawn=withdrawn, processings=recent["items"])


# ---------------------------------------------------------------- API keys and webhooks


def _keys_page(request: Request, who: Operator, issued: str | None = None, status_code: int = 200):
    gw: Gateway = request.app.state.gateway
    with reading(gw.sessions) as session:
        return _render(request, "keys.html", status_code, who=who, keys=api_keys(session), issued=issued,
                       hooks=session.scalars(select(WebhookSubscription).order_by(WebhookSubscription.id)).all())


@router.get("/keys", response_class=HTMLResponse)
def keys_page(request: Request):
    if (who := _operator(request)) is None:
        return _to_login(request)
    return _keys_page(request, who)


@router.post("/keys", response_class=HTMLResponse)
async def issue_key(request: Request):
    if (who := _operator(request)) is None:
        return _to_login(request)
    if (form := await _form(request, who)) is None:
        return _forbidden(request)
    role, label = form.get("role", ""), form.get("label", "").strip()[:64]
    if role not in ("pos", "operator", "auditor") or not label:
        return _keys_page(request, who, status_code=400)
    gw: Gateway = request.app.state.gateway
    now = gw.now()
    with transaction(gw.sessions) as session:
        row, secret = create_api_key(session, role, label, now)
        audit.record(session, who.actor, "apikey.created", now, key_id=row.id, role=role, label=label, expires_at=None)
    return _keys_page(request, who, issued=secret)


@router.post("/keys/{key_id}/revoke", response_class=HTMLResponse)
async def revoke_key(request: Request, key_id: int):
    if (who := _operator(request)) is None:
        return _to_login(request)
    if await _form(request, who) is None:
        return _forbidden(request)
    gw: Gateway = request.app.state.gateway
    now = gw.now()
    try:
        with transaction(gw.sessions) as session:
            row, revoked = revoke_api_key(session, key_id, now)
            if revoked:
                audit.record(session, who.actor, "apikey.revoked", now, key_id=row.id, role=row.role, label=row.label)
    except GatewayError:
        return _keys_page(request, who, status_code=404)
    return RedirectResponse("/console/keys", status_code=303)


# ---------------------------------------------------------------- settlement and audit


CHECKED = "books.checked"


def _last_check(session) -> tuple[int, dict] | None:
    """The latest recorded check among the audit log's last 2,000 entries (seq, its details)."""
    for seq, payload in session.execute(select(AuditLogEntry.seq, AuditLogEntry.payload).order_by(AuditLogEntry.seq.desc()).limit(2_000)):
        doc = json.loads(payload)
        if doc.get("action") == CHECKED:
            return seq, doc
    return None


@router.get("/settlement", response_class=HTMLResponse)
def settlement_page(request: Request):
    """The latest check of the books, the chain and the logs (running one reads every posting and log
    entry: it is an action, not a page view), and each log's latest anchor."""
    if (who := _operator(request)) is None:
        return _to_login(request)
    gw: Gateway = request.app.state.gateway
    with reading(gw.sessions) as session:
        anchors = {kind: anchoring.latest(session, kind) for kind in logs.LOG_MODELS}
        last = _last_check(session)
    return _render(request, "settlement.html", who=who, last=last, anchors=anchors)


@router.post("/settlement/checks", response_class=HTMLResponse)
async def check_books(request: Request):
    if (who := _operator(request)) is None:
        return _to_login(request)
    if await _form(request, who) is None:
        return _forbidden(request)
    gw: Gateway = request.app.state.gateway
    with reading(gw.sessions) as session:
        books, chain = reconcile.ledger_report(session), reconcile.chain_report(session, gw)
        chains = {kind: logs.verify(session, model) for kind, model in logs.LOG_MODELS.items()}
    with transaction(gw.sessions) as session:
        audit.record(session, who.actor, CHECKED, gw.now(), books_ok=books["ok"], chain_ok=chain["ok"],
                     logs={k: {"ok": v.ok, "checked": v.checked, "first_bad_seq": v.first_bad_seq} for k, v in chains.items()},
                     ledger=books, chain=chain)
    return RedirectResponse("/console/settlement", status_code=303)
