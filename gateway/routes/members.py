from __future__ import annotations

from fastapi import APIRouter, Depends, status

from ..auth import Principal, allow, own_member
from ..db import as_utc, reading, transaction
from ..runtime import Gateway
from ..schemas import EnrolRequest, EnrolResponse, LoginRequest, Profile, StatusChange, TokenResponse
from ..services import audit, consent, members
from . import gateway

router = APIRouter(prefix="/v1", tags=["members"])


def profile(session, gw: Gateway, member) -> Profile:
    return Profile(member_ref=member.member_ref, status=member.status, tier=member.tier,
                   tier_since=as_utc(member.tier_since),
                   downgrade_due_at=as_utc(member.downgrade_due_at) if member.downgrade_due_at else None,
                   enrolled_at=as_utc(member.enrolled_at), personal_data=members.masked_pii(session, gw, member),
                   wallet_address=member.wallet_address, consents=consent.current(session, member.id))


@router.post("/members", status_code=status.HTTP_201_CREATED, response_model=EnrolResponse,
             summary="Enrol a member (only loyalty_core consent is given; everything else is opt-in)")
def enrol(body: EnrolRequest, gw: Gateway = Depends(gateway)) -> EnrolResponse:
    now = gw.now()
    with transaction(gw.sessions) as session:
        result = members.enrol(session, gw, identifiers=body.identifiers.given(), name=body.name, birthday=body.birthday,
                               passphrase=body.passphrase, jurisdiction=body.jurisdiction, channel=body.channel, now=now)
        m = result.member
        return EnrolResponse(member_ref=m.member_ref, token=result.token, welcome_points=result.welcome_points,
                             balance=m.balance, tier=m.tier, consents=consent.current(session, m.id))


@router.post("/sessions", response_model=TokenResponse, summary="Log in with an identifier and passphrase")
def login(body: LoginRequest, gw: Gateway = Depends(gateway)) -> TokenResponse:
    with transaction(gw.sessions) as session:
        member, token = members.login(session, gw, body.kind, body.value, body.passphrase, gw.now())
        return TokenResponse(member_ref=member.member_ref, token=token)


@router.get("/me", response_model=Profile, summary="The member's own profile (personal data masked)")
def me(who: Principal = Depends(allow("member")), gw: Gateway = Depends(gateway)) -> Profile:
    with reading(gw.sessions) as session:
        return profile(session, gw, own_member(session, who))


@router.get("/members/{member_ref}", response_model=Profile, summary="A member's profile, masked (operator)")
def get_member(member_ref: str, who: Principal = Depends(allow("operator")), gw: Gateway = Depends(gateway)) -> Profile:
    with transaction(gw.sessions) as session:
        member = members.get_by_ref(session, member_ref)
        audit.record(session, who.subject, "member.viewed", gw.now(), member_ref=member_ref)
        return profile(session, gw, member)


@router.post("/members/{member_ref}/status", response_model=Profile, summary="Freeze or reactivate an account (operator)")
def set_status(member_ref: str, body: StatusChange, who: Principal = Depends(allow("operator")),
               gw: Gateway = Depends(gateway)) -> Profile:
    with transaction(gw.sessions) as session:
        member = members.get_by_ref(session, member_ref, for_update=True)
        members.set_status(session, member, body.status)
        audit.record(session, who.subject, f"member.{body.status}", gw.now(), member_ref=member_ref, reason=body.reason)
        return profile(session, gw, member)
