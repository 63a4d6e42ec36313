"""The auditor console: server-rendered pages (Jinja2, charts as inline SVG from matplotlib, no
front-end build), read-only, behind an auditor login.

Pages: overview; one epoch with its settlement and charts; reconciliation status; consent statistics
per purpose (counts below k suppressed with privacy.kanon); audit check results; one receipt with its
inclusion proof, checked against the root on chain.

Login: one auditor credential (user name and a PBKDF2-SHA256 password hash, see :func:`hash_password`)
from the console's configuration. A successful login sets an HMAC-signed, HttpOnly, SameSite=Strict
session cookie with an expiry; every page but /login needs it. The console only reads: it has no route
that changes anything (re-running the audit recomputes, it writes nothing anywhere).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from starlette.staticfiles import StaticFiles

from contracts.client import Alliance
from gateway import web
from gateway.guard import Limits, RequestGuard
from privacy.hashchain import entry_body
from privacy.kanon import suppress_below_k
from privacy.merkle import verify_inclusion
from privacy.errors import ReceiptError
from privacy.receipts import JwsReceipt, load_receipt, verify_receipt

from . import audit as audit_mod
from .epochs import derive, verify_state
from .indexer import Indexer
from .reconcile import GatewayDatabase, reconcile
from .reports import build_report, flows_chart, liability_chart, positions_chart, svg_of
from .store import Store

TEMPLATES = Path(__file__).resolve().parent / "templates"
COOKIE = "auditor_session"
# matplotlib's inline SVG charts style their elements with attributes: the one relaxation of the CSP.
HEADERS = web.HEADERS | {"Content-Security-Policy": web.HEADERS["Content-Security-Policy"].replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")}
PURPOSES = ("loyalty_core", "alliance_exchange", "federated_training", "marketing", "overlap_analytics")


def hash_password(password: str, salt: bytes | None = None, iterations: int = 200_000) -> str:
    """``pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>``: what the console's configuration stores."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    try:
        algo, iterations, salt, digest = stored.split("$")
        if algo != "pbkdf2_sha256":
            return False
        got = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
        return hmac.compare_digest(got, base64.b64decode(digest))
    except (ValueError, TypeError):
        return False


@dataclass
class ConsoleConfig:
    alliance: Alliance
    store: Store
    gateways: list[audit_mod.GatewayAccess]
    auditor_user: str
    auditor_password_hash: str
    session_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    session_ttl_s: int = 8 * 3600
    k: int = 5  # smallest count shown in consent statistics
    sample: int | None = 20
    index_on_request: bool = True


class Console:
    def __init__(self, config: ConsoleConfig):
        self.c = config
        self.indexer = Indexer(config.alliance, config.store)
        self._audit: dict[str, Any] | None = None
        self.env = web.environment(TEMPLATES)  # the alliance's one design system (gateway/web)

    # -- sessions

    def make_token(self, user: str) -> str:
        expires = int(time.time()) + self.c.session_ttl_s
        body = f"{user}|{expires}"
        sig = hmac.new(self.c.session_secret, body.encode(), hashlib.sha256).hexdigest()
        return base64.urlsafe_b64encode(f"{body}|{sig}".encode()).decode()

    def user_of(self, token: str | None) -> str | None:
        if not token:
            return None
        try:
            user, expires, sig = base64.urlsafe_b64decode(token.encode()).decode().rsplit("|", 2)
        except (ValueError, UnicodeDecodeError):
            return None
        good = hmac.new(self.c.session_secret, f"{user}|{expires}".encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(sig, good) or int(expires) < time.time() or user != self.c.auditor_user:
            return None
        return user

    # -- data

    def refresh(self) -> None:
        if self.c.index_on_request:
            self.indexer.run()

    def derivation(self):
        return derive(self.c.store, self.c.alliance.manifest.value_per_point)

    def gateway(self, brand_id: str) -> audit_mod.GatewayAccess:
        for g in self.c.gateways:
            if g.brand_id == brand_id:
                return g
        raise HTTPException(404, f"no brand {brand_id!r}")

    def names(self) -> dict[str, str]:
        return {g.address: g.brand_id for g in self.c.gateways}

    def audit(self, refresh: bool = False) -> dict[str, Any]:
        if self._audit is None or refresh:
            self._audit = audit_mod.verify(self.c.alliance, self.c.gateways, sample=self.c.sample, store=self.c.store).to_dict()
        return self._audit

    def consent_stats(self) -> list[dict[str, Any]]:
        """Members currently granting each purpose, per brand, from the brand's consent log."""
        out = []
        for g in self.c.gateways:
            current: dict[tuple[str, str], bool] = {}
            for e in audit_mod.fetch_log(g, "consent-log"):
                try:
                    r = load_receipt(e.payload).receipt
                except ReceiptError:
                    continue  # a malformed entry: the audit's signature check reports it
                current[r.pseudonym, r.purpose.value] = r.state.value == "granted"
            granted = {p: sum(1 for (m, purpose), v in current.items() if purpose == p and v) for p in PURPOSES}
            withdrawn = {p: sum(1 for (m, purpose), v in current.items() if purpose == p and not v) for p in PURPOSES}
            out.append({"brand": g.brand_id, "granted": suppress_below_k(granted, self.c.k),
                        "withdrawn": suppress_below_k(withdrawn, self.c.k)})
        return out

    def receipt(self, brand_id: str, seq: int) -> dict[str, Any]:
        g = self.gateway(brand_id)
        proof = g.get(f"/v1/audit/logs/consent-log/{seq}/proof")
        anchors = {a["period"]: a for a in audit_mod.chain_anchors(self.c.alliance, g.address, "consent-log", self.c.store)}
        anchor = anchors.get(proof["anchor"]["period"])
        key, key_source = audit_mod._public_key(g)
        payload = proof["entry"]["payload"]
        signed = load_receipt(payload)
        try:
            verify_receipt(signed, key)
            signature_ok, signature_error = True, None
        except Exception as exc:
            signature_ok, signature_error = False, str(exc)
        included = anchor is not None and proof["tree_size"] == anchor["size"] and verify_inclusion(
            entry_body(seq, payload), seq, anchor["size"], [bytes.fromhex(p) for p in proof["proof"]], bytes.fromhex(anchor["root"]))
        return {"brand": brand_id, "address": g.address, "seq": seq, "receipt": signed.receipt.to_dict(),
                "format": payload.get("format", "loyalty-alliance receipt v1 (JCS)"),
                "signature": signed.jws if isinstance(signed, JwsReceipt) else signed.signature,
                "signature_ok": signature_ok, "signature_error": signature_error, "key_id": key.key_id, "key_source": key_source,
                "proof": proof["proof"], "tree_size": proof["tree_size"], "entry_hash": proof["entry"]["entry_hash"],
                "anchor_chain": anchor, "anchor_claimed": proof["anchor"], "included": included,
                "verified": signature_ok and included}


def create_console(config: ConsoleConfig) -> FastAPI:
    console = Console(config)
    app = FastAPI(title="Alliance auditor console", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.console = console
    app.add_middleware(RequestGuard, limits=Limits())  # its only bodies are login forms: 64 KiB is plenty

    def render(request: Request, template: str, **context) -> HTMLResponse:
        html = console.env.get_template(template).render(user=request.state.user, product="Alliance auditor console", **context)
        return HTMLResponse(html, headers=HEADERS)

    @app.middleware("http")
    async def require_auditor(request: Request, call_next):
        request.state.user = console.user_of(request.cookies.get(COOKIE))
        if request.url.path not in ("/login", "/healthz", "/static/alliance.css") and request.state.user is None:
            if request.url.path.startswith("/api/"):
                return JSONResponse({"error": "unauthorised"}, status_code=401)
            return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
        return await call_next(request)

    app.mount("/static", StaticFiles(directory=web.STATIC), name="static")

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True}

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = "/", error: str | None = None):
        return render(request, "login.html", next=next if next.startswith("/") else "/", error=error)

    @app.post("/login")
    async def login(request: Request):
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        user, password = form.get("username", ""), form.get("password", "")
        target = form.get("next", "/")
        if not target.startswith("/") or target.startswith("//"):
            target = "/"
        if not (hmac.compare_digest(user, config.auditor_user) and check_password(password, config.auditor_password_hash)):
            return RedirectResponse(f"/login?error=1&next={quote(target)}", status_code=303)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(COOKIE, console.make_token(user), httponly=True, samesite="strict", max_age=config.session_ttl_s)
        return response

    @app.get("/logout")
    def logout():
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    @app.get("/", response_class=HTMLResponse)
    def overview(request: Request):
        console.refresh()
        d = console.derivation()
        state = verify_state(config.alliance, d)
        names = {**d.names, **console.names()}
        epochs = [{"epoch": e, "issued": r.issued, "redeemed": r.redeemed, "pool": r.pool, "supply": r.supply, "closed_at": r.closed_at,
                   "ok": all(c.ok for c in r.checks(d.value_per_point))} for e, r in sorted(d.epochs.items(), reverse=True)]
        return render(request, "overview.html", epochs=epochs, state=state, state_ok=all(c.ok for c in state), d=d, names=names,
                      open_volume=d.open_volume())

    @app.get("/epochs/{epoch}", response_class=HTMLResponse)
    def epoch_page(request: Request, epoch: int):
        console.refresh()
        d = console.derivation()
        if epoch not in d.epochs:
            raise HTTPException(404, f"epoch {epoch} is not closed")
        report = build_report(config.store, d.value_per_point, epochs=[epoch], names=console.names(), derivation=d)
        p = report["per_epoch"][0]
        return render(request, "epoch.html", e=p, record=d.epochs[epoch], value=d.value_per_point,
                      positions_svg=svg_of(positions_chart(p["brands"], f"Epoch {epoch}: issued, redeemed, net per brand")),
                      flows_svg=svg_of(flows_chart(p["flows"], f"Epoch {epoch}: cross-brand flows (AP)")))

    @app.get("/period", response_class=HTMLResponse)
    def period_page(request: Request):
        console.refresh()
        d = console.derivation()
        report = build_report(config.store, d.value_per_point, names=console.names(), derivation=d)
        return render(request, "period.html", r=report, liability_svg=svg_of(liability_chart(report)),
                      flows_svg=svg_of(flows_chart(report["period"]["flows"], "Period: cross-brand flows (AP)")))

    @app.get("/reconciliation", response_class=HTMLResponse)
    def reconciliation_page(request: Request):
        console.refresh()
        ledgers = [GatewayDatabase(g.database_url, g.address, g.brand_id) for g in config.gateways if g.database_url]
        result = reconcile(config.store, ledgers).to_dict()
        missing = [g.brand_id for g in config.gateways if not g.database_url]
        return render(request, "reconciliation.html", r=result, missing=missing)

    @app.get("/consent", response_class=HTMLResponse)
    def consent_page(request: Request):
        return render(request, "consent.html", stats=console.consent_stats(), purposes=PURPOSES, k=config.k)

    @app.get("/audit", response_class=HTMLResponse)
    def audit_page(request: Request, refresh: bool = False):
        return render(request, "audit.html", report=console.audit(refresh))

    @app.get("/receipts/{brand_id}/{seq}", response_class=HTMLResponse)
    def receipt_page(request: Request, brand_id: str, seq: int):
        try:
            r = console.receipt(brand_id, seq)
        except audit_mod.AuditFetchError as exc:
            raise HTTPException(404, str(exc)) from None
        return render(request, "receipt.html", r=r)

    @app.get("/receipts", response_class=HTMLResponse)
    def receipts_index(request: Request, brand: str | None = None):
        rows = []
        for g in config.gateways:
            if brand and g.brand_id != brand:
                continue
            anchors = audit_mod.chain_anchors(config.alliance, g.address, "consent-log", config.store)
            covered = anchors[-1]["size"] if anchors else 0
            for e in audit_mod.fetch_log(g, "consent-log")[:200]:
                try:
                    r = load_receipt(e.payload).receipt.to_dict()
                except ReceiptError:
                    r = {}  # malformed: shown without its facts, and failed by the audit's signature check
                rows.append({"brand": g.brand_id, "seq": e.seq, "purpose": r.get("purpose"), "state": r.get("state"),
                             "issued_at": r.get("issued_at"), "anchored": e.seq < covered})
        return render(request, "receipts.html", rows=rows)

    @app.get("/api/audit")
    def audit_json(refresh: bool = False) -> dict:
        return console.audit(refresh)

    return app
