"""The brand gateway: one FastAPI service per brand."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from functools import partial

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, IntegrityError, OperationalError

from contracts.chain import Chain
from privacy.receipts import policy_digest

from .auth import ApiKeyCache
from .errors import GatewayError
from .groupcommit import GroupCommit
from .routes import admin, alliance, audit, campaigns, consent, members, points, rights
from .runtime import Gateway, build_gateway
from .services import anchoring, outbox, purchases
from .services.alliance import EXCHANGE_JOB, REDEMPTION_JOB
from .settings import GatewaySettings

log = logging.getLogger("gateway")


async def _every(seconds: float, job, name: str) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            await asyncio.to_thread(job)
        except Exception:  # a background job must never take the service down; it runs again later
            log.exception("%s failed", name)


_tuned = False


def _tune_collector() -> None:
    """What start-up built (libraries, contract ABIs, the app) lives as long as the process: move it
    out of the collector's sight, or every full collection walks all of it (~70 ms pauses, the whole
    p99 of purchase ingest). And collect young objects every 20,000 allocations rather than 700: a
    batch of purchases allocates a few hundred thousand objects that live until its response, and
    at the default the collector ran hundreds of times per batch, its older generations walking
    that live data again and again (~10% of bulk ingest). Once per process: a process that starts
    many apps (tests) would otherwise freeze each one's garbage for good."""
    global _tuned
    if not _tuned:
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 20, 20)
        _tuned = True


def create_app(settings: GatewaySettings | None = None, *, gateway: Gateway | None = None, chain: Chain | None = None,
               background: bool = True) -> FastAPI:
    """Build the app. Pass `gateway` (tests, several brands in one process) or let it be built from
    `settings` (environment variables by default)."""
    gw = gateway or build_gateway(settings or GatewaySettings(), chain=chain)
    s = gw.settings

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        tasks = []
        if gw.alliance is not None:
            # Finish whatever a previous run left between its database and the chain.
            await asyncio.to_thread(outbox.process_all, gw, [EXCHANGE_JOB, REDEMPTION_JOB])
            if background and s.outbox_interval_s:
                tasks.append(asyncio.create_task(_every(s.outbox_interval_s, lambda: outbox.process_all(gw, [EXCHANGE_JOB, REDEMPTION_JOB]), "outbox")))
            if background and s.anchor_interval_s:
                tasks.append(asyncio.create_task(_every(s.anchor_interval_s, lambda: _anchor_all(gw), "anchoring")))
        _tune_collector()
        yield
        for task in tasks:
            task.cancel()

    app = FastAPI(title=f"{s.brand_name} gateway", version="1.0.0", lifespan=lifespan,
                  description="One brand's node in the loyalty alliance: members, consent, points, cross-brand exchange "
                              "and redemption, data-subject rights and audit. Amounts of points are integers.")
    app.state.gateway = gw
    app.state.api_keys = ApiKeyCache()
    app.state.purchases = GroupCommit(partial(purchases.ingest_committed, gw))

    @app.exception_handler(GatewayError)
    async def _domain_error(request: Request, exc: GatewayError):
        retry = {"Retry-After": str(exc.context["retry_after_s"])} if "retry_after_s" in exc.context else None
        return JSONResponse({"error": exc.code, "detail": exc.detail, **exc.context}, status_code=exc.status, headers=retry)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        errors = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        return JSONResponse({"error": "invalid_request", "detail": errors}, status_code=422)

    @app.exception_handler(IntegrityError)
    async def _integrity_error(request: Request, exc: IntegrityError):
        # Two concurrent requests raced for the same unique thing: the loser retries and gets the winner's result.
        return JSONResponse({"error": "conflict", "detail": "a concurrent request changed the same record; retry"}, status_code=409)

    @app.exception_handler(DataError)
    async def _unstorable(request: Request, exc: DataError):
        # A value the database cannot hold (out of range, too long, a NUL character in text): the
        # schemas bound what they can; this is the net under them, so bad input is never a 500.
        log.warning("database refused a value: %s", exc.orig)
        return JSONResponse({"error": "invalid_request", "detail": "a value is out of the range this service can store"}, status_code=422)

    @app.exception_handler(OperationalError)
    async def _busy(request: Request, exc: OperationalError):
        message = str(exc.orig).lower()
        if "locked" in message or "deadlock" in message or "could not serialize" in message:
            return JSONResponse({"error": "busy", "detail": "the database is busy; retry"}, status_code=503)
        log.error("database error", exc_info=exc)
        return JSONResponse({"error": "internal", "detail": "database error"}, status_code=500)

    @app.get("/healthz", tags=["service"], summary="Liveness")
    def healthz() -> dict:
        return {"status": "ok", "brand": s.brand_id}

    @app.get("/v1/brand", tags=["service"], summary="Public facts about this brand: its chain account, rate, policy and receipt key")
    def brand() -> dict:
        out = {"brand_id": s.brand_id, "name": s.brand_name, "address": gw.brand_address,
               "policy_version": s.policy_version, "policy_sha256": policy_digest(s.policy_text), "policy_text": s.policy_text,
               "receipt_key_id": gw.signing_key.key_id, "receipt_public_key_pem": gw.signing_key.public_key.to_pem().decode()}
        if gw.alliance is not None:
            try:
                rate, version = gw.alliance.registry.rate(gw.brand_address)
                pending = gw.alliance.registry.pending_rate(gw.brand_address)
                out |= {"rate": rate, "rate_version": version, "chain_id": gw.alliance.chain.chain_id,
                        "points_contract": gw.alliance.points.address,
                        "pending_rate": None if pending is None else pending.__dict__}
            except Exception as exc:  # not admitted yet, or the chain is away: say so, do not fail
                out["chain_status"] = f"unavailable: {type(exc).__name__}"
        return out

    for module in (members, consent, points, alliance, rights, audit, admin, campaigns):
        app.include_router(module.router)
    app.include_router(alliance.public)
    return app


def _anchor_all(gw: Gateway) -> None:
    from .db import transaction

    for kind in ("consent-log", "audit-log"):
        with transaction(gw.sessions) as session:
            anchoring.anchor(session, gw, kind, "scheduler", gw.now())
