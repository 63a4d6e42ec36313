from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Request, Response, status
from starlette.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from ..auth import Principal, allow, own_member
from ..db import as_utc, reading, transaction
from ..errors import GatewayError, NotFound
from ..models import Member
from ..runtime import Gateway
from ..schemas import (
    ActionRequest,
    ActionResponse,
    Balance,
    BatchItem,
    BatchRequest,
    BatchResponse,
    Expiring,
    LedgerLine,
    MemberLocator,
    PurchaseRequest,
    PurchaseResponse,
    RefundRequest,
    UUID_PATTERN,
    RefundResponse,
    TillPurchase,
)
from ..services import alliance, ledger, members, programme, purchases
from . import AUTH, gateway, idempotency_key, problems

router = APIRouter(prefix="/v1", tags=["points"])


def locate(session: Session, gw: Gateway, body: MemberLocator) -> Member:
    if body.member_ref is not None:
        return members.get_by_ref(session, body.member_ref)
    member = members.find_by_identifier(session, gw, body.identifier_kind, body.identifier)
    if member is None:
        raise NotFound("no member with this identifier")
    return member


_PAYMENT_FIELDS = {"points_burned", "coupon_code"}


def _event(who: Principal, key: str, body: PurchaseRequest, home_currency: str) -> purchases.PurchaseEvent:
    # The key is scoped to the caller; the hash covers the body as a single purchase would send it,
    # so one event retried alone or in a batch is the same request (a plain purchase hashes without
    # the payment fields it does not use).
    plain = not isinstance(body, TillPurchase) or not body.pays_with_points
    return purchases.PurchaseEvent(
        idempotency_key=f"{who.subject}:{key}",
        body_hash=purchases.request_hash(body, exclude={"idempotency_key"} | (_PAYMENT_FIELDS if plain else set())),
        amount_minor=body.amount_minor, currency=body.currency or home_currency, channel=body.channel, eco=body.eco,
        occurred_at=body.occurred_at, member_ref=body.member_ref, identifier_kind=body.identifier_kind,
        identifier=body.identifier, **({} if plain else {"points_burned": body.points_burned, "coupon_code": body.coupon_code}))


REPLAY = "a retry of a request already applied (same key, same request): its original outcome, applied once"


@router.post("/purchases", response_model=PurchaseResponse, status_code=status.HTTP_201_CREATED,
             responses={200: {"model": PurchaseResponse, "description": REPLAY}} | problems(*AUTH, 400, 404, 409, 429, 503),
             summary="A purchase at the point of sale earns points, and may be paid in part with points and a coupon "
                     "(idempotent on Idempotency-Key)")
async def purchase(body: TillPurchase, request: Request, response: Response, key: str = Depends(idempotency_key),
                   who: Principal = Depends(allow("pos", "operator"))) -> PurchaseResponse:
    gw: Gateway = request.app.state.gateway
    event = _event(who, key, body, gw.settings.earn.home_currency)
    # Concurrent purchases share transactions (gateway/groupcommit.py); each is answered once committed.
    outcome = await request.app.state.purchases.submit(event)
    if isinstance(outcome, GatewayError):
        raise outcome
    if outcome.replayed:
        response.status_code = status.HTTP_200_OK
    return PurchaseResponse(**outcome._asdict())


@router.post("/purchases/batch", response_model=BatchResponse, responses=problems(*AUTH, 503),
             summary="Many purchases in one request (each idempotent on its own key; one bad event does not stop the rest)")
async def purchase_batch(body: BatchRequest, who: Principal = Depends(allow("pos", "operator")),
                         gw: Gateway = Depends(gateway)) -> BatchResponse:
    home = gw.settings.earn.home_currency
    outcomes = await run_in_threadpool(purchases.ingest_committed, gw, [_event(who, e.idempotency_key, e, home) for e in body.events])
    results = [BatchItem(idempotency_key=e.idempotency_key, ok=True, purchase_ref=o.purchase_ref, points=o.points)
               if isinstance(o, purchases.Earned) else
               BatchItem(idempotency_key=e.idempotency_key, ok=False, code=o.code, detail=o.detail,
                         retry_after_s=o.context.get("retry_after_s"))
               for e, o in zip(body.events, outcomes, strict=True)]
    accepted = sum(r.ok for r in results)
    return BatchResponse(accepted=accepted, rejected=len(results) - accepted, results=results)


@router.post("/purchases/{purchase_ref}/refunds", response_model=RefundResponse, status_code=status.HTTP_201_CREATED,
             responses={200: {"model": RefundResponse, "description": REPLAY}} | problems(*AUTH, 404, 409, 503),
             summary="Refund (part of) a purchase: its points are clawed back, and points that paid for it given back, in proportion")
def refund(body: RefundRequest, response: Response, key: str = Depends(idempotency_key),
           who: Principal = Depends(allow("pos", "operator")), gw: Gateway = Depends(gateway),
           purchase_ref: str = Path(pattern=UUID_PATTERN)) -> RefundResponse:
    with transaction(gw.sessions) as session:
        record, p, m, replayed = purchases.refund(session, gw, idempotency_key=f"{who.subject}:{key}", purchase_ref=purchase_ref,
                                                  amount_minor=body.amount_minor,
                                                  body_hash=purchases.request_hash(body, scope=purchase_ref),
                                                  now=gw.now())
        out = RefundResponse(purchase_ref=p.purchase_ref, refunded_minor=record.amount_minor, points_clawed_back=record.points,
                             points_returned=record.points_returned, balance=m.balance, replayed=replayed)
    if replayed:
        response.status_code = status.HTTP_200_OK
    return out


@router.post("/actions", response_model=ActionResponse, status_code=status.HTTP_201_CREATED,
             responses={200: {"model": ActionResponse, "description": REPLAY}} | problems(*AUTH, 400, 404, 409, 503),
             summary="A review, share or check-in earns points and counts as engagement")
def action(body: ActionRequest, response: Response, key: str = Depends(idempotency_key),
           who: Principal = Depends(allow("pos", "operator")), gw: Gateway = Depends(gateway)) -> ActionResponse:
    with transaction(gw.sessions) as session:
        a, m, replayed = purchases.record_action(session, gw, idempotency_key=f"{who.subject}:{key}",
                                                 body_hash=purchases.request_hash(body), member=locate(session, gw, body), kind=body.kind,
                                                 occurred_at=body.occurred_at, now=gw.now())
        out = ActionResponse(member_ref=m.member_ref, kind=a.kind, points=a.points, balance=m.balance, replayed=replayed)
    if replayed:
        response.status_code = status.HTTP_200_OK
    return out


@router.get("/me/balance", response_model=Balance, responses=problems(*AUTH, 503), summary="Brand points, points expiring soon, and AP in the linked wallet")
def balance(who: Principal = Depends(allow("member")), gw: Gateway = Depends(gateway)) -> Balance:
    now = gw.now()
    with reading(gw.sessions) as session:
        m = own_member(session, who)
        soon = ledger.expiring(session, m.id, now, programme.current(session, gw).earn.expiry_notice_days)
        return Balance(member_ref=m.member_ref, points=m.balance, tier=m.tier,
                       expiring_soon=[Expiring(expires_at=as_utc(at), points=p) for at, p in soon],
                       alliance_points=alliance.ap_balance(gw, m.wallet_address), wallet_address=m.wallet_address)


@router.get("/me/ledger", response_model=list[LedgerLine], responses=problems(*AUTH, 503), summary="The member's points history (every posting)")
def member_ledger(who: Principal = Depends(allow("member")), gw: Gateway = Depends(gateway)) -> list[LedgerLine]:
    with reading(gw.sessions) as session:
        return [LedgerLine(**line) for line in ledger.history(session, who.member_id)]


