from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from ..auth import Principal, allow
from ..runtime import Gateway
from ..schemas import Strict
from ..services import overlap
from . import AUTH, gateway, need_chain, problems

router = APIRouter(tags=["operator"])


class OverlapRequest(Strict):
    peer_url: str = Field(pattern=r"^https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?/?$", description="the other brand's gateway")
    kind: Literal["phone", "email"] = Field("phone", description="the identifier the members are matched on, normalised")


class OverlapResult(BaseModel):
    ref: str
    peer: str = Field(description="the other brand's chain account")
    kind: str
    shared: int | None = Field(description="members both brands share, with geometric noise; null below k (suppressed)")
    suppressed: bool
    k: int
    epsilon: float
    mechanism: str
    bytes_sent: int
    bytes_received: int


class OverlapMessage(Strict):
    """Another brand's PSI request, signed with its chain key (EIP-191 over the SHA-256 of the fields' canonical JSON)."""

    ref: str = Field(max_length=36)
    kind: Literal["phone", "email"]
    at: str = Field(max_length=40)
    initiator: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$")
    request: str
    signature: str = Field(pattern=r"^0x[0-9a-fA-F]{130}$")


class OverlapAnswer(BaseModel):
    ref: str
    responder: str
    request_sha256: str
    setup: str
    response: str
    signature: str


@router.post("/v1/admin/overlap", response_model=OverlapResult, responses=problems(*AUTH, 400, 403, 409, 503),
             summary="How many members this brand shares with another, by private set intersection: neither learns who "
                     "(overlap_analytics consent only; noisy, suppressed below k; recorded as a processing at both)")
async def measure(body: OverlapRequest, who: Principal = Depends(allow("operator")), gw: Gateway = Depends(gateway)) -> dict:
    need_chain(gw)
    return await run_in_threadpool(overlap.measure, gw, who.subject, body.peer_url, body.kind)


@router.post("/v1/alliance/overlap", response_model=OverlapAnswer, tags=["alliance"], responses=problems(400, 403, 409, 503),
             summary="Answer another brand's PSI request (brand to brand, signed by an admitted brand's chain key)")
async def respond(body: OverlapMessage, gw: Gateway = Depends(gateway)) -> dict:
    need_chain(gw)
    return await run_in_threadpool(overlap.respond, gw, body.model_dump())
