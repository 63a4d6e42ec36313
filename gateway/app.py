"""The brand gateway: one FastAPI service per brand."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from functools import partial
from http import HTTPStatus

from fastapi import Depends, FastAPI, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.staticfiles import StaticFiles

from contracts.chain import Chain, ChainError, ContractRevert
from privacy.receipts import PURPOSE_TEXT, policy_digest

from .auth import ApiKeyCache, Principal, allow
from .errors import (
    BUSY,
    INVALID_REQUEST,
    PROBLEMS,
    ChainRejected,
    ChainUnavailable,
    Conflict,
    GatewayError,
    NotFound,
    error_response,
    problem,
)
from .groupcommit import GroupCommit, each_in_savepoint
from .guard import Limits, RequestGuard
from .metrics import Metrics, RequestMetrics
from .routes import (AUTH, admin, alliance, audit, campaigns, consent, gifts, members, overlap, points, problems, programme, rewards, rights,
                     webhooks)
from .runtime import Gateway, build_gateway
from .schemas import BrandInfo, Health, Problem, ProblemType
from .services import anchoring, purchases
from .services.rewards import order_committed
from .services import datakeys, notices, peppers
from .services import webhooks as webhook_deliveries
from .services.alliance import redemptions_committed, retry_pending
from .settings import GatewaySettings
from .web import STATIC, console, wallet

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
            await asyncio.to_thread(retry_pending, gw)
            if background and s.outbox_interval_s:
                tasks.append(asyncio.create_task(_every(s.outbox_interval_s, lambda: retry_pending(gw), "outbox")))
            if background and s.anchor_interval_s:
                tasks.append(asyncio.create_task(_every(s.anchor_interval_s, lambda: _anchor_all(gw), "anchoring")))
        if background:
            tasks.append(asyncio.create_task(_every(60, lambda: peppers.rekey(gw), "pepper re-keying")))
        if background and s.delivery_interval_s:
            tasks.append(asyncio.create_task(_every(s.delivery_interval_s, lambda: deliver(gw), "notices and webhooks")))
        if background and s.reminder_interval_s:
            tasks.append(asyncio.create_task(_every(s.reminder_interval_s, lambda: notices.remind(gw, gw.now()), "expiry reminders")))
        if background and s.kek_rotation_s:
            tasks.append(asyncio.create_task(_every(min(60, s.kek_rotation_s), lambda: datakeys.rotate(gw, "scheduler", only_if_due=True),
                                                    "KEK rotation")))
        _tune_collector()
        yield
        for task in tasks:
            task.cancel()
        if gw.chain_sender is not None:
            await asyncio.to_thread(gw.chain_sender.release)  # the next process need not wait for the lease

    app = FastAPI(title=f"{s.brand_name} gateway", version="1.0.0", lifespan=lifespan,
                  description="One brand's node in the loyalty alliance: members, consent, points, cross-brand exchange "
                              "and redemption, data-subject rights and audit. Amounts of points are integers. Every error "
                              "is an RFC 9457 problem (application/problem+json) with a machine-readable `code`.")
    app.state.gateway = gw
    app.state.api_keys = ApiKeyCache(s.api_key_cache_s)
    app.state.purchases = GroupCommit(partial(purchases.ingest_committed, gw))
    app.state.orders = GroupCommit(partial(order_committed, gw))
    app.state.redemptions = GroupCommit(partial(redemptions_committed, gw))
    # Small groups: the chain sender's writes queue behind one group at most.
    app.state.writes = GroupCommit(partial(each_in_savepoint, gw.sessions), max_batch=32)
    app.add_middleware(RequestGuard, limits=Limits(max_bytes=s.max_body_bytes, max_depth=s.max_json_depth,
                                                   routes={"/v1/purchases/batch": s.max_batch_body_bytes,
                                                           "/v1/alliance/overlap": s.max_overlap_body_bytes}))
    if s.alliance_peers:  # the alliance's other wallets call the member API from the browser (bearer tokens, no cookies)
        app.add_middleware(CORSMiddleware, allow_origins=s.alliance_peers, allow_methods=["GET", "POST", "PUT"],
                           allow_headers=["Authorization", "Content-Type", "Idempotency-Key"], expose_headers=["Retry-After"], max_age=600)
    metrics = Metrics(gw)
    app.add_middleware(RequestMetrics, metrics=metrics)  # outermost: requests the guard refuses count too
    install_problem_handlers(app)

    @app.get("/healthz", tags=["service"], response_model=Health, responses=problems(), summary="Liveness")
    def healthz() -> Health:
        return Health(status="ok", brand=s.brand_id)

    @app.get("/metrics", tags=["service"], response_class=Response, summary="Prometheus metrics (operator key): requests, "
             "latencies, the chain outbox's depth and age, the chain head's age, each log's anchoring age",
             responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}, "description": "the exposition"}}
             | problems(*AUTH, 503))
    def metrics_endpoint(who: Principal = Depends(allow("operator"))) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/problems/{code}", tags=["service"], response_model=ProblemType, responses=problems(404),
             summary="What a problem `type` means (error bodies point here)")
    def problem_type(code: str = Path(max_length=40)) -> ProblemType:
        if code not in PROBLEMS:
            raise NotFound("no such problem type")
        status, title = PROBLEMS[code]
        return ProblemType(type=f"/problems/{code}", code=code, status=status, title=title)

    @app.get("/v1/brand", tags=["service"], response_model=BrandInfo, responses=problems(),
             summary="Public facts about this brand: its chain account, rate, policy and receipt key; `chain_status` says "
                     "whether the chain figures could be read")
    def brand() -> BrandInfo:
        return BrandInfo(brand_id=s.brand_id, name=s.brand_name, address=gw.brand_address, policy_version=s.policy_version,
                         policy_sha256=policy_digest(s.policy_text), policy_text=s.policy_text,
                         receipt_key_id=gw.signing_key.key_id,
                         receipt_public_key_pem=gw.signing_key.public_key.to_pem().decode(),
                         purposes={p.value: text for p, text in PURPOSE_TEXT.items()}, home_currency=s.earn.home_currency,
                         points_per_currency_unit=s.points_per_currency_unit, **_chain_facts(gw))

    for module in (members, consent, points, rewards, gifts, alliance, rights, audit, admin, programme, campaigns, overlap, webhooks):
        app.include_router(module.router)
    app.include_router(alliance.public)
    app.include_router(console.router)  # the operator console and the member wallet (gateway/web): pages, not API
    app.include_router(wallet.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.openapi = partial(_openapi, app)
    return app


def _chain_facts(gw: Gateway) -> dict:
    """The brand's chain figures, or why there are none (each field is always there, null if unknown)."""
    if gw.alliance is None:
        return {"chain_status": "not_configured"}
    facts = {"points_contract": gw.alliance.points.address}
    try:
        facts["chain_id"] = gw.alliance.chain.chain_id
        rate, version = gw.alliance.registry.rate(gw.brand_address)
        pending = gw.alliance.registry.pending_rate(gw.brand_address)
    except ContractRevert:
        return facts | {"chain_status": "not_admitted"}
    except ChainError:
        return facts | {"chain_status": "unreachable"}
    return facts | {"chain_status": "ok", "rate": rate, "rate_version": version,
                    "pending_rate": None if pending is None else pending.__dict__}


def install_problem_handlers(app: FastAPI) -> None:
    """Every error as an RFC 9457 problem; nothing internal (no connection string, no traceback) in any."""

    @app.exception_handler(GatewayError)
    async def _domain_error(request: Request, exc: GatewayError):
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        errors = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)[:1000]
        return problem(*INVALID_REQUEST, detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):  # unknown paths, wrong methods
        if exc.status_code == 400:  # FastAPI's only one: a body it cannot decode as JSON (not UTF-8, say)
            return problem(*INVALID_REQUEST, "the body is not JSON text")
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        return problem(exc.status_code, code, HTTPStatus(exc.status_code).phrase, str(exc.detail), headers=exc.headers)

    @app.exception_handler(IntegrityError)
    async def _integrity_error(request: Request, exc: IntegrityError):
        # Two concurrent requests raced for the same unique thing: the loser retries and gets the winner's result.
        return error_response(Conflict("a concurrent request changed the same record; retry"))

    @app.exception_handler(DataError)
    async def _unstorable(request: Request, exc: DataError):
        # A value the database cannot hold (out of range, too long, a NUL character in text): the
        # schemas bound what they can; this is the net under them, so bad input is never a 500.
        log.warning("database refused a value: %s", type(exc.orig).__name__)
        return problem(*INVALID_REQUEST, "a value is out of the range this service can store")

    @app.exception_handler(OperationalError)
    async def _busy(request: Request, exc: OperationalError):
        message = str(exc.orig).lower()
        if "locked" in message or "deadlock" in message or "could not serialize" in message:
            return problem(*BUSY, "the database is busy; retry", retry_after_s=1)
        log.error("database error: %s", type(exc.orig).__name__)
        return problem(*BUSY, "the database cannot be reached; retry later", retry_after_s=5)

    @app.exception_handler(ChainError)
    async def _chain_error(request: Request, exc: ChainError):
        # Wherever a chain call was not expected to fail: a revert is a refusal, the rest an outage.
        if isinstance(exc, ContractRevert):
            return error_response(ChainRejected(f"the alliance contracts refused it: {exc.error}"))
        log.warning("the chain cannot be reached: %s", exc)
        return error_response(ChainUnavailable("the alliance chain cannot be reached; retry later", retry_after_s=5))


def _openapi(app: FastAPI) -> dict:
    """FastAPI's schema, with the Problem every error response refers to."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = Problem.model_json_schema()
        app.openapi_schema = schema
    return app.openapi_schema


def deliver(gw: Gateway) -> dict:
    """Send the members' pending notices and post the webhook deliveries that are due."""
    return {"notices": notices.send_pending(gw, gw.now()), "webhooks": webhook_deliveries.deliver_due(gw, gw.now())}


def _anchor_all(gw: Gateway) -> None:
    for kind in ("consent-log", "audit-log"):
        anchoring.anchor(gw, kind, "scheduler")
