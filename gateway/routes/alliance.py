from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from pydantic import Field
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from contracts.chain import ChainError
from contracts.client import Redemption as RedemptionAuth

from ..auth import Principal, allow, own_member
from ..db import reading, transaction
from ..errors import ChainUnavailable, NotFound
from ..models import Exchange, Member, Redemption
from ..runtime import Gateway
from ..schemas import (
    UUID_PATTERN,
    Authorisation,
    ChallengeRequest,
    ChallengeResponse,
    ExchangeRequest,
    ExchangeResponse,
    LinkRequest,
    RedemptionNonce,
    RedemptionResponse,
    WalletLinked,
)
from ..services import alliance, purchases
from . import AUTH, gateway, grouped, idempotency_key, need_chain, problems

router = APIRouter(prefix="/v1/me", tags=["alliance"])


@router.post("/wallet/challenges", response_model=ChallengeResponse, status_code=status.HTTP_201_CREATED,
             responses=problems(*AUTH, 400, 409, 429, 503), summary="Ask for a text to sign with the wallet to link (needs alliance_exchange consent)")
def challenge(body: ChallengeRequest, who: Principal = Depends(allow("member")), gw: Gateway = Depends(gateway)) -> ChallengeResponse:
    with transaction(gw.sessions) as session:
        row = alliance.wallet_challenge(session, gw, own_member(session, who), body.address, gw.now())
        return ChallengeResponse(challenge_id=row.id, message=row.message, expires_at=row.expires_at)


@router.post("/wallet", response_model=WalletLinked, responses=problems(*AUTH, 400, 404, 409, 503),
             summary="Link the wallet that signed the challenge")
def link(body: LinkRequest, who: Principal = Depends(allow("member")), gw: Gateway = Depends(gateway)) -> WalletLinked:
    with transaction(gw.sessions) as session:
        address = alliance.link_wallet(session, gw, own_member(session, who), body.challenge_id, body.signature, gw.now())
        return WalletLinked(wallet_address=address)


def _exchange_out(row: Exchange, replayed: bool) -> ExchangeResponse:
    return ExchangeResponse(exchange_ref=row.exchange_ref, status=row.status, ap_amount=row.ap_amount,
                            brand_points=row.brand_points, rate=row.rate, rate_version=row.rate_version,
                            wallet_address=row.wallet_address, tx_hash=row.tx_hash, failure=row.failure, replayed=replayed)


@router.post("/exchanges", response_model=ExchangeResponse, status_code=status.HTTP_201_CREATED,
             responses={200: {"model": ExchangeResponse, "description": "a retry of an exchange already made: its current state"},
                        202: {"model": ExchangeResponse, "description": "accepted, the mint is still pending (it is retried until settled)"}}
             | problems(*AUTH, 409, 503),
             summary="Exchange brand points into alliance points minted to the linked wallet")
async def exchange(body: ExchangeRequest, request: Request, response: Response, key: str = Depends(idempotency_key),
                   who: Principal = Depends(allow("member")), gw: Gateway = Depends(gateway)) -> ExchangeResponse:
    # Async: the request waits for the chain without holding one of the server's worker threads, so
    # hundreds can wait for the same batch.
    need_chain(gw)
    quote = await run_in_threadpool(alliance.quote_or_none, gw)

    def accept(session) -> tuple[str, bool]:
        row, replayed = alliance.request_exchange(session, gw, own_member(session, who), body.ap_amount,
                                                  f"{who.subject}:{key}", purchases.request_hash(body), gw.now(), quote)
        return row.exchange_ref, replayed

    ref, replayed = await grouped(request, accept)
    out = await alliance.settle(gw, alliance.EXCHANGE_JOB, ref, lambda session, row: _exchange_out(row, replayed))
    response.status_code = status.HTTP_200_OK if replayed else (status.HTTP_202_ACCEPTED if out.status == "pending" else status.HTTP_201_CREATED)
    return out


@router.get("/exchanges/{exchange_ref}", response_model=ExchangeResponse, responses=problems(*AUTH, 404, 503),
            summary="One exchange and its settlement status")
def get_exchange(exchange_ref: str = Path(pattern=r"^[0-9a-f]{64}$"), who: Principal = Depends(allow("member")), gw: Gateway = Depends(gateway)) -> ExchangeResponse:
    with reading(gw.sessions) as session:
        row = session.query(Exchange).filter_by(exchange_ref=exchange_ref, member_id=who.member_id).first()
        if row is None:
            raise NotFound("no such exchange")
        return _exchange_out(row, True)


def _redemption_out(row: Redemption, balance: int, replayed: bool) -> RedemptionResponse:
    return RedemptionResponse(redemption_ref=row.redemption_ref, status=row.status, ap_amount=row.ap_amount,
                              reward_points=row.reward_points, rate=row.rate, epoch=row.epoch, tx_hash=row.tx_hash,
                              failure=row.failure, balance=balance, replayed=replayed)


@router.post("/redemptions", response_model=RedemptionResponse, status_code=status.HTTP_201_CREATED,
             responses={200: {"model": RedemptionResponse, "description": "a retry of an authorisation already submitted: its current state"},
                        202: {"model": RedemptionResponse, "description": "accepted, the redemption is still pending on chain"}}
             | problems(*AUTH, 400, 409, 503),
             summary="Redeem alliance points here by the wallet's signed authorisation; credits brand points")
async def redeem(body: Authorisation, request: Request, response: Response, who: Principal = Depends(allow("member")),
                 gw: Gateway = Depends(gateway)) -> RedemptionResponse:
    need_chain(gw)
    auth = RedemptionAuth(body.owner, body.brand, body.amount, body.nonce, body.deadline, bytes.fromhex(body.signature[2:]))

    def check() -> alliance.RedemptionItem:  # before any write transaction: pure CPU and a chain read
        return alliance.RedemptionItem(who.member_id, alliance.verify_redemption(gw, auth, gw.now()), alliance.quote_or_none(gw))

    # Concurrent redemptions share transactions (gateway/groupcommit.py); each is answered once committed.
    accepted = await request.app.state.redemptions.submit(await run_in_threadpool(check))
    if isinstance(accepted, Exception):
        raise accepted
    ref, replayed = accepted
    out = await alliance.settle(gw, alliance.REDEMPTION_JOB, ref,
                                lambda session, row: _redemption_out(row, session.get(Member, row.member_id).balance, replayed))
    response.status_code = status.HTTP_200_OK if replayed else (status.HTTP_202_ACCEPTED if out.status == "pending" else status.HTTP_201_CREATED)
    return out


@router.get("/redemptions/{redemption_ref}", response_model=RedemptionResponse, responses=problems(*AUTH, 404, 503),
            summary="One redemption and its settlement status (also after a 503: the outbox completes it)")
def get_redemption(redemption_ref: str = Path(pattern=UUID_PATTERN), who: Principal = Depends(allow("member")),
                   gw: Gateway = Depends(gateway)) -> RedemptionResponse:
    with reading(gw.sessions) as session:
        row = session.scalars(select(Redemption).where(Redemption.redemption_ref == redemption_ref,
                                                       Redemption.member_id == who.member_id)).first()
        if row is None:
            raise NotFound("no such redemption")
        return _redemption_out(row, own_member(session, who).balance, True)


public = APIRouter(prefix="/v1", tags=["alliance"])


@public.get("/redemption-nonce", response_model=RedemptionNonce, responses=problems(409, 503),
            summary="The lowest unused redemption nonce of a wallet at this brand (for wallets without a chain connection)")
def redemption_nonce(owner: str = Query(pattern=r"^0x[0-9a-fA-F]{40}$"),
                     reserved: list[Annotated[int, Field(ge=0, lt=2**256)]] = Query([], max_length=256),
                     gw: Gateway = Depends(gateway)) -> RedemptionNonce:
    need_chain(gw)
    try:
        nonce = gw.alliance.points.free_nonce(owner, gw.brand_address, reserved)
        balance = gw.alliance.points.balance_of(owner)
    except ChainError:
        raise ChainUnavailable("the alliance chain cannot be reached", retry_after_s=alliance.RETRY_CHAIN_S) from None
    chain_id = alliance.chain_id(gw)
    return RedemptionNonce(owner=owner, brand=gw.brand_address, nonce=nonce, chain_id=chain_id, points_contract=gw.alliance.points.address,
                           balance=balance, domain=RedemptionAuth.domain(chain_id, gw.alliance.points.address))
