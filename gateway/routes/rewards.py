from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from contracts.client import Redemption as RedemptionAuth

from ..auth import Principal, allow, own_member
from ..db import as_utc, reading, transaction
from ..errors import GatewayError
from ..models import Coupon, Member, Redemption, Reward, RewardOrder
from ..runtime import Gateway
from ..schemas import (
    UUID_PATTERN,
    ApPayment,
    MemberCatalogueItem,
    CouponInfo,
    OrderInfo,
    OrderRequest,
    OrderResponse,
    OrderStatusChange,
    RewardCode,
    RewardDefinition,
    RewardInfo,
)
from ..services import alliance, programme, rewards
from ..services.purchases import request_hash
from . import AUTH, gateway, idempotency_key, need_chain, problems
from .points import REPLAY

router = APIRouter(prefix="/v1", tags=["rewards"])
operator = allow("operator")
OrderRefPath = Path(pattern=UUID_PATTERN, description="the order's reference")


def _at(moment):
    return None if moment is None else as_utc(moment)


def reward_info(r: Reward) -> RewardInfo:
    return RewardInfo(code=r.code, version=r.version, kind=r.kind, name=r.name, description=r.description, points_price=r.points_price,
                      stock=r.stock, available_from=_at(r.available_from), available_until=_at(r.available_until), min_tier=r.min_tier,
                      per_member_limit=r.per_member_limit, coupon_value_minor=r.coupon_value_minor,
                      coupon_min_spend_minor=r.coupon_min_spend_minor, coupon_valid_days=r.coupon_valid_days, active=r.active)


def order_info(gw: Gateway, row: RewardOrder, reward: Reward, coupon: Coupon | None) -> dict:
    return {"order_ref": row.order_ref, "reward": reward.code, "reward_version": row.reward_version, "kind": reward.kind,
            "points": row.points, "status": row.status, "created_at": as_utc(row.created_at), "updated_at": as_utc(row.updated_at),
            "coupon": None if coupon is None else CouponInfo(code=rewards.coupon_code(gw, coupon.id), value_minor=coupon.value_minor,
                                                             min_spend_minor=coupon.min_spend_minor, expires_at=as_utc(coupon.expires_at),
                                                             status=coupon.status)}


def _answer(gw: Gateway, out: rewards.Ordered, response: Response) -> OrderResponse:
    if out.replayed:
        response.status_code = status.HTTP_200_OK
    return OrderResponse(**order_info(gw, out.order, out.reward, out.coupon), balance=out.balance, replayed=out.replayed)


@router.put("/admin/rewards/{code}", response_model=RewardInfo, tags=["operator"], responses=problems(*AUTH, 400, 409, 503),
            summary="Define a reward of the catalogue, or replace its definition as a new version (recorded in the admin audit log)")
def define(body: RewardDefinition, code: RewardCode, who: Principal = Depends(operator), gw: Gateway = Depends(gateway)) -> RewardInfo:
    with transaction(gw.sessions) as session:
        return reward_info(rewards.define(session, gw, who.subject, code, rewards.RewardSpec(**body.model_dump()), gw.now()))


@router.get("/admin/rewards", response_model=list[RewardInfo], tags=["operator"], responses=problems(*AUTH, 503),
            summary="The whole catalogue, rewards not on offer included")
def every_reward(who: Principal = Depends(operator), gw: Gateway = Depends(gateway)) -> list[RewardInfo]:
    with reading(gw.sessions) as session:
        return [reward_info(r) for r in rewards.catalogue(session, gw.now(), include_inactive=True)]


@router.get("/admin/reward-orders", response_model=list[OrderInfo], tags=["operator"], responses=problems(*AUTH, 503),
            summary="Orders to fulfil, newest first (by status)")
def orders(order_status: str | None = Query(None, alias="status", pattern=r"^(awaiting_payment|ordered|shipped|delivered|issued|granted|cancelled)$"),
           limit: int = Query(100, ge=1, le=1000), who: Principal = Depends(operator), gw: Gateway = Depends(gateway)) -> list[OrderInfo]:
    with reading(gw.sessions) as session:
        query = select(RewardOrder, Reward).join(Reward, Reward.id == RewardOrder.reward_id).order_by(RewardOrder.id.desc()).limit(limit)
        if order_status is not None:
            query = query.where(RewardOrder.status == order_status)
        # Coupons' codes are the member's: the operator's list leaves them out.
        return [OrderInfo(**order_info(gw, row, reward, None)) for row, reward in session.execute(query)]


@router.post("/admin/reward-orders/{order_ref}/status", response_model=OrderResponse, tags=["operator"],
             responses=problems(*AUTH, 404, 409, 503),
             summary="Fulfil an order (shipped, delivered) or cancel it: its points go back to the member, its item back to stock")
def fulfil(body: OrderStatusChange, response: Response, order_ref: str = OrderRefPath, who: Principal = Depends(operator),
           gw: Gateway = Depends(gateway)) -> OrderResponse:
    with transaction(gw.sessions) as session:
        out = rewards.change_status(session, gw, who.subject, order_ref, body.status, gw.now())
        answer = _answer(gw, out, response)
        return answer.model_copy(update={"coupon": None})


@router.get("/rewards", response_model=list[MemberCatalogueItem], responses=problems(*AUTH, 503),
            summary="The rewards on offer, each saying whether this member may order it now")
def catalogue(who: Principal = Depends(allow("member")), gw: Gateway = Depends(gateway)) -> list[MemberCatalogueItem]:
    now = gw.now()
    with reading(gw.sessions) as session:
        member = own_member(session, who)
        counts = rewards.ordered_counts(session, member.id)
        in_force = programme.current(session, gw)
        out = []
        for r in rewards.catalogue(session, now):
            why = rewards.refusal(in_force, r, member, counts.get(r.id, 0), now)
            out.append(MemberCatalogueItem(**reward_info(r).model_dump(exclude={"available_from", "active"}), orderable=why is None, reason=why,
                                     affordable=member.balance >= r.points_price))
        return out


@router.post("/me/reward-orders", response_model=OrderResponse, status_code=status.HTTP_201_CREATED,
             responses={200: {"model": OrderResponse, "description": REPLAY},
                        202: {"model": OrderResponse, "description": "paid with AP: accepted, the redemption is still pending on "
                                                                      "chain (the reward is granted when it is final)"}}
             | problems(*AUTH, 400, 403, 404, 409, 503),
             summary="Order a reward with points, or with alliance points by a signed redemption (idempotent on "
                     "Idempotency-Key); a coupon's code comes with it")
async def order(body: OrderRequest, request: Request, response: Response, key: str = Depends(idempotency_key),
                who: Principal = Depends(allow("member")), gw: Gateway = Depends(gateway)) -> OrderResponse:
    if body.pay_with_ap is not None:
        return await _order_with_ap(body, response, key, who, gw)

    # Concurrent orders share transactions (gateway/groupcommit.py); each is answered once committed.
    out = await request.app.state.orders.submit(rewards.OrderItem(who.member_id, body.reward, f"{who.subject}:{key}", request_hash(body)))
    if isinstance(out, GatewayError):
        raise out
    return _answer(gw, out, response)


async def _order_with_ap(body: OrderRequest, response: Response, key: str, who: Principal, gw: Gateway) -> OrderResponse:
    need_chain(gw)
    a = body.pay_with_ap
    auth = RedemptionAuth(a.owner, a.brand, a.amount, a.nonce, a.deadline, bytes.fromhex(a.signature[2:]))

    def accept() -> tuple[str, str | None, bool]:
        now = gw.now()
        verified = alliance.verify_redemption(gw, auth, now)  # before the write lock: pure CPU
        quote = alliance.quote_or_none(gw)
        with transaction(gw.sessions) as session:
            member = session.get(Member, who.member_id)
            out, paying = alliance.order_with_ap(session, gw, member, body.reward, verified,
                                                 idempotency_key=f"member:{member.member_ref}:{key}",
                                                 body_hash=request_hash(body), now=now, quote=quote)
            return out.order.order_ref, None if paying is None else paying.redemption_ref, out.replayed

    order_ref, redemption_ref, replayed = await run_in_threadpool(accept)

    def view(session, _row=None) -> OrderResponse:
        row = rewards.get_order(session, order_ref)
        paying = session.scalars(select(Redemption).where(Redemption.order_ref == order_ref)).first()
        out = rewards.Ordered(row, session.get(Reward, row.reward_id),
                              session.scalars(select(Coupon).where(Coupon.order_id == row.id)).first(),
                              session.get(Member, row.member_id).balance, replayed)
        answer = _answer(gw, out, response)
        if paying is not None:
            answer.paid_with_ap = ApPayment(redemption_ref=paying.redemption_ref, status=paying.status, ap_amount=paying.ap_amount,
                                            reward_points=paying.reward_points, rate=paying.rate, tx_hash=paying.tx_hash,
                                            failure=paying.failure)
        return answer

    if redemption_ref is None:  # a replay whose payment was since given up: the order is what it is
        with reading(gw.sessions) as session:
            return view(session)
    out = await alliance.settle(gw, alliance.REDEMPTION_JOB, redemption_ref, view)
    if not replayed:
        response.status_code = status.HTTP_202_ACCEPTED if out.status == "awaiting_payment" else status.HTTP_201_CREATED
    return out


@router.get("/me/reward-orders", response_model=list[OrderInfo], responses=problems(*AUTH, 503),
            summary="The member's orders and coupons, newest first")
def my_orders(who: Principal = Depends(allow("member")), gw: Gateway = Depends(gateway)) -> list[OrderInfo]:
    with reading(gw.sessions) as session:
        return [OrderInfo(**order_info(gw, row, reward, coupon)) for row, reward, coupon in rewards.member_orders(session, who.member_id)]


@router.post("/me/reward-orders/{order_ref}/cancellation", response_model=OrderResponse, responses=problems(*AUTH, 404, 409, 503),
             summary="Cancel an order not yet shipped, or an unused coupon: the points come back")
def cancel(response: Response, order_ref: str = OrderRefPath, who: Principal = Depends(allow("member")),
           gw: Gateway = Depends(gateway)) -> OrderResponse:
    with transaction(gw.sessions) as session:
        member = session.get(Member, who.member_id)
        out = rewards.change_status(session, gw, f"member:{member.member_ref}", order_ref, "cancelled", gw.now(), member_id=member.id)
        return _answer(gw, out, response)
