from __future__ import annotations

from fastapi import APIRouter, Depends, Response, status

from ..auth import Principal, allow
from ..db import as_utc, reading, transaction
from ..models import Member
from ..runtime import Gateway
from ..schemas import CauseDefinition, CauseInfo, DonationRequest, GiftLine, GiftRequest, GiftResponse, RewardCode
from ..services import gifts
from ..services.purchases import request_hash
from . import AUTH, gateway, idempotency_key, problems
from .points import REPLAY

router = APIRouter(prefix="/v1", tags=["gifts"])
operator = allow("operator")


def cause_info(cause, donated: int) -> CauseInfo:
    return CauseInfo(code=cause.code, version=cause.version, name=cause.name, description=cause.description, active=cause.active,
                     donated=donated)


def _answer(out: gifts.Given, response: Response) -> GiftResponse:
    if out.replayed:
        response.status_code = status.HTTP_200_OK
    return GiftResponse(gift_ref=out.gift.gift_ref, points=out.gift.points, to_member_ref=out.recipient_ref, cause=out.cause,
                        at=as_utc(out.gift.created_at), balance=out.balance, replayed=out.replayed)


@router.put("/admin/causes/{code}", response_model=CauseInfo, tags=["operator"], responses=problems(*AUTH, 503),
            summary="List a cause members may donate points to, or change it (recorded in the admin audit log)")
def define_cause(body: CauseDefinition, code: RewardCode, who: Principal = Depends(operator), gw: Gateway = Depends(gateway)) -> CauseInfo:
    with transaction(gw.sessions) as session:
        cause = gifts.define_cause(session, who.subject, code, body.name, body.description, body.active, gw.now())
        return cause_info(cause, dict((c.id, d) for c, d in gifts.causes(session, include_inactive=True))[cause.id])


@router.get("/causes", response_model=list[CauseInfo], responses=problems(*AUTH, 503),
            summary="The causes members may donate points to, with what they have received")
def causes(who: Principal = Depends(allow("member", "operator", "auditor")), gw: Gateway = Depends(gateway)) -> list[CauseInfo]:
    with reading(gw.sessions) as session:
        return [cause_info(c, donated) for c, donated in gifts.causes(session, include_inactive=who.role != "member")]


@router.post("/me/gifts", response_model=GiftResponse, status_code=status.HTTP_201_CREATED,
             responses={200: {"model": GiftResponse, "description": REPLAY}} | problems(*AUTH, 400, 404, 409, 503),
             summary="Give points to another member of the brand (daily limits apply; idempotent on Idempotency-Key)")
def give(body: GiftRequest, response: Response, key: str = Depends(idempotency_key), who: Principal = Depends(allow("member")),
         gw: Gateway = Depends(gateway)) -> GiftResponse:
    with transaction(gw.sessions) as session:
        member = session.get(Member, who.member_id)
        return _answer(gifts.give(session, gw, member, body.to_member_ref, body.points, idempotency_key=f"member:{member.member_ref}:{key}",
                                  body_hash=request_hash(body), now=gw.now()), response)


@router.post("/me/donations", response_model=GiftResponse, status_code=status.HTTP_201_CREATED,
             responses={200: {"model": GiftResponse, "description": REPLAY}} | problems(*AUTH, 404, 409, 503),
             summary="Donate points to one of the brand's causes (daily limits apply; idempotent on Idempotency-Key)")
def donate(body: DonationRequest, response: Response, key: str = Depends(idempotency_key), who: Principal = Depends(allow("member")),
           gw: Gateway = Depends(gateway)) -> GiftResponse:
    with transaction(gw.sessions) as session:
        member = session.get(Member, who.member_id)
        return _answer(gifts.donate(session, gw, member, body.cause, body.points, idempotency_key=f"member:{member.member_ref}:{key}",
                                    body_hash=request_hash(body), now=gw.now()), response)


@router.get("/me/gifts", response_model=list[GiftLine], responses=problems(*AUTH, 503),
            summary="The member's gifts given and received and their donations, newest first")
def my_gifts(who: Principal = Depends(allow("member")), gw: Gateway = Depends(gateway)) -> list[GiftLine]:
    with reading(gw.sessions) as session:
        return [GiftLine(**line) for line in gifts.history(session, who.member_id)]
