"""Thin HTTP routes: validate, check role and ownership, call a service."""

from __future__ import annotations

from fastapi import Header, Request

from ..runtime import Gateway


def gateway(request: Request) -> Gateway:
    return request.app.state.gateway


def idempotency_key(idempotency_key: str = Header(..., alias="Idempotency-Key", min_length=1, max_length=100,
                                                  pattern=r"^[A-Za-z0-9._:-]+$",
                                                  description="retries with the same key never apply twice")) -> str:
    return idempotency_key
