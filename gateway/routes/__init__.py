"""Thin HTTP routes: validate, check role and ownership, call a service. The shared dependencies
are coroutines: they do no I/O, and a plain function would cost each request a trip to the thread pool.

Every route declares the problems it may answer (`problems(...)`): the request guard's 413 and 422
always, and what its credentials, rules and storage can add. The fuzzing suite
(tests/gateway/test_gateway_fuzz.py) holds the routes to it."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from fastapi import Header, Request
from sqlalchemy.orm import Session

from ..errors import PROBLEM_MEDIA_TYPE, PROBLEMS, Conflict, problem_body
from ..runtime import Gateway
from ..services.throttle import address_of

# Status -> (an example code, when it is answered).
_STATUSES = {
    400: ("bad_request", "The request is well-formed but cannot be processed as sent (the detail says why)"),
    401: ("unauthorised", "Credentials missing, unknown, expired or revoked"),
    403: ("forbidden", "The credentials do not allow this, or the member has not consented to its purpose"),
    404: ("not_found", "No such resource"),
    409: ("conflict", "The resource's state does not allow this (not enough points, an inactive account, ...)"),
    413: ("body_too_large", "The body is larger than this route accepts (refused before it is read)"),
    422: ("invalid_request", "The request does not match this schema, nests too deep, or reuses an idempotency key"),
    429: ("rate_limited", "Too many attempts: retry after Retry-After seconds"),
    503: ("busy", "The database or the alliance chain is busy or unreachable: retry after Retry-After seconds, if given"),
}
AUTH = (401, 403)


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses for the problems a route may answer (the guard's 413 and 422 always)."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in sorted({413, 422, *statuses}):
        code, description = _STATUSES[status]
        _, title = PROBLEMS[code]
        example = problem_body(status, code, title, description) | ({"retry_after_s": 6} if status == 429 else {})
        out[status] = {"description": description, "content": {PROBLEM_MEDIA_TYPE: {
            "schema": {"$ref": "#/components/schemas/Problem"}, "example": example}}}
    return out


T = TypeVar("T")


async def gateway(request: Request) -> Gateway:
    return request.app.state.gateway


async def grouped(request: Request, write: Callable[[Session], T]) -> T:
    """`write(session)` committed together with the other requests writing now (one transaction, a
    savepoint each: groupcommit.each_in_savepoint); its refusal is raised here."""
    out = await request.app.state.writes.submit(write)
    if isinstance(out, Exception):
        raise out
    return out


async def client_address(request: Request) -> str:
    """What per-address rate limits count (behind a proxy, run uvicorn with --proxy-headers)."""
    return address_of(request.client.host if request.client else None)


async def idempotency_key(idempotency_key: str = Header(..., alias="Idempotency-Key", min_length=1, max_length=100,
                                                  pattern=r"^[A-Za-z0-9._:-]+$",
                                                  description="retries with the same key never apply twice")) -> str:
    return idempotency_key


def need_chain(gw: Gateway) -> None:
    if gw.alliance is None:
        raise Conflict("this gateway is not connected to the alliance chain")
