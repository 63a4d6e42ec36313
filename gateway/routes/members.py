from __future__ import annotations

from fastapi import APIRouter, Depends, Path, status

from ..auth import Principal, allow, own_member
from ..db import as_utc, reading, transaction
from ..runtime import Gateway
from ..schemas import (
    UUID_PATTERN,
    EnrolmentStarted,
    EnrolRequest,
    EnrolResponse,
    LoginRequest,
    MemberCreated,
    Profile,
    StaffEnrolRequest,
    StatusChange,
    TokenResponse,
    VerificationRequest,
)
from ..services import audit, consent, enrolment, members
from . import AUTH, client_address, gateway, problems

router = APIRouter(prefix="/v1", tags=["members"])
MemberRefPath = Path(pattern=UUID_PATTERN, description="the member's reference")


def profile(session, gw: Gateway, member) -> Profile:
    return Profile(member_ref=member.member_ref, status=member.status, tier=member.tier,
                   tier_since=as_utc(member.tier_since),
                   downgrade_due_at=as_utc(member.downgrade_due_at) if member.downgrade_due_at else None,
                   enrolled_at=as_utc(member.enrolled_at), personal_data=members.masked_pii(session, gw, member),
                   wallet_address=member.wallet_address, consents=consent.current(session, member.id))


def _enrolled(session, result: members.Enrolment) -> dict:
    m = result.member
    return {"member_ref": m.member_ref, "welcome_points": result.welcome_points, "balance": m.balance, "tier": m.tier,
            "consents": consent.current(session, m.id)}


@router.post("/enrolments", status_code=status.HTTP_202_ACCEPTED, response_model=EnrolmentStarted, responses=problems(400, 429, 503),
             summary="Start enrolling: a one-time code goes to each identifier (the answer is the same whether or not it has an account)")
def start_enrolment(body: EnrolRequest, gw: Gateway = Depends(gateway), client: str = Depends(client_address)) -> EnrolmentStarted:
    started = enrolment.start(gw, identifiers=body.identifiers.given(), name=body.name, birthday=body.birthday,
                              passphrase=body.passphrase, jurisdiction=body.jurisdiction, channel=body.channel, client=client,
                              now=gw.now())
    return EnrolmentStarted(enrolment_id=started.enrolment_id, expires_at=started.expires_at, sent_to=started.sent_to)


@router.post("/enrolments/{enrolment_id}/verification", status_code=status.HTTP_201_CREATED, response_model=EnrolResponse,
             responses=problems(400, 404, 409, 429, 503),
             summary="Prove the identifiers with their codes: the account is created, welcome points credited, a token issued")
def verify_enrolment(body: VerificationRequest, enrolment_id: str = Path(pattern=UUID_PATTERN), gw: Gateway = Depends(gateway),
                     client: str = Depends(client_address)) -> EnrolResponse:
    result = enrolment.verify(gw, enrolment_id, dict(body.codes), client, gw.now())
    with reading(gw.sessions) as session:
        return EnrolResponse(token=result.token, **_enrolled(session, result))


@router.post("/members", status_code=status.HTTP_201_CREATED, response_model=MemberCreated, responses=problems(*AUTH, 400, 409, 503),
             summary="Enrol a member at the till or the desk (point of sale, operator): no code; recorded in the audit log")
def enrol_by_staff(body: StaffEnrolRequest, who: Principal = Depends(allow("pos", "operator")),
                   gw: Gateway = Depends(gateway)) -> MemberCreated:
    now = gw.now()
    with transaction(gw.sessions) as session:
        result = members.enrol(session, gw, identifiers=body.identifiers.given(), name=body.name, birthday=body.birthday,
                               passphrase=body.passphrase, jurisdiction=body.jurisdiction, channel=body.channel, now=now)
        audit.record(session, who.subject, "member.enrolled", now, member_ref=result.member.member_ref, identity_proof="staff",
                     identifiers=sorted(body.identifiers.given()))
        return MemberCreated(**_enrolled(session, result))


@router.post("/sessions", response_model=TokenResponse, responses=problems(400, 401, 429, 503),
             summary="Log in with an identifier and passphrase (rate-limited; repeated failures lock the identifier)")
def login(body: LoginRequest, gw: Gateway = Depends(gateway), client: str = Depends(client_address)) -> TokenResponse:
    member, token = members.login(gw, body.kind, body.value, body.passphrase, client, gw.now())
    return TokenResponse(member_ref=member.member_ref, token=token)


@router.get("/me", response_model=Profile, responses=problems(*AUTH, 503), summary="The member's own profile (personal data masked)")
def me(who: Principal = Depends(allow("member")), gw: Gateway = Depends(gateway)) -> Profile:
    with reading(gw.sessions) as session:
        return profile(session, gw, own_member(session, who))


@router.get("/members/{member_ref}", response_model=Profile, responses=problems(*AUTH, 404, 503),
            summary="A member's profile, masked (operator)")
def get_member(member_ref: str = MemberRefPath, who: Principal = Depends(allow("operator")), gw: Gateway = Depends(gateway)) -> Profile:
    with transaction(gw.sessions) as session:
        member = members.get_by_ref(session, member_ref)
        audit.record(session, who.subject, "member.viewed", gw.now(), member_ref=member_ref)
        return profile(session, gw, member)


@router.post("/members/{member_ref}/status", response_model=Profile, responses=problems(*AUTH, 404, 409, 503),
             summary="Freeze or reactivate an account (operator)")
def set_status(body: StatusChange, member_ref: str = MemberRefPath, who: Principal = Depends(allow("operator")),
               gw: Gateway = Depends(gateway)) -> Profile:
    with transaction(gw.sessions) as session:
        return profile(session, gw, members.change_status(session, gw, who.subject, member_ref, body.status, body.reason))
