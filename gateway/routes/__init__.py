"""Thin HTTP routes: validate, check role and ownership, call a service. The shared dependencies
are coroutines: they do no I/O, and a plain function would cost each request a trip to the thread pool."""

from __future__ import annotations

from fastapi import Header, Request

from ..runtime import Gateway


async def gateway(request: Request) -> Gateway:
    return request.app.state.gateway


async def idempotency_key(idempotency_key: str = Header(..., alias="Idempotency-Key", min_length=1, max_length=100,
                                                  pattern=r"^[A-Za-z0-9._:-]+$",
                                                  description="retries with the same key never apply twice")) -> str:
    return idempotency_key
