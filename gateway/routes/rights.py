from __future__ import annotations

from fastapi import APIRouter, Depends, Path

from ..auth import Principal, allow, own_member
from ..db import reading, transaction
from ..runtime import Gateway
from ..schemas import UUID_PATTERN
from ..services import audit, members, rights
from . import AUTH, gateway, problems

router = APIRouter(prefix="/v1", tags=["data subject rights"])


MemberRefPath = Path(pattern=UUID_PATTERN, description="the member's reference")


@router.get("/me/export", responses=problems(*AUTH, 503), summary="A copy of everything the brand holds about the member")
def export_mine(who: Principal = Depends(allow("member")), gw: Gateway = Depends(gateway)) -> dict:
    with reading(gw.sessions) as session:
        return rights.export(session, gw, own_member(session, who))


@router.post("/me/erasure", responses=problems(*AUTH, 409, 503), summary="Erase the member's personal data (crypto-shredding); the pseudonymous ledger stays")
def erase_mine(who: Principal = Depends(allow("member")), gw: Gateway = Depends(gateway)) -> dict:
    return rights.erase_now(gw, lambda session: own_member(session, who), who.subject)


@router.get("/members/{member_ref}/export", responses=problems(*AUTH, 404, 503),
            summary="Export for a member who asked through another channel (operator)")
def export_member(member_ref: str = MemberRefPath, who: Principal = Depends(allow("operator")), gw: Gateway = Depends(gateway)) -> dict:
    with transaction(gw.sessions) as session:
        member = members.get_by_ref(session, member_ref)
        audit.record(session, who.subject, "member.exported", gw.now(), member_ref=member_ref)
        return rights.export(session, gw, member)


@router.post("/members/{member_ref}/erasure", responses=problems(*AUTH, 404, 409, 503),
             summary="Erase on a member's request made through another channel (operator)")
def erase_member(member_ref: str = MemberRefPath, who: Principal = Depends(allow("operator")), gw: Gateway = Depends(gateway)) -> dict:
    return rights.erase_now(gw, lambda session: members.get_by_ref(session, member_ref), who.subject)
