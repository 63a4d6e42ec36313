from __future__ import annotations

import json

from fastapi import APIRouter, Depends

from privacy.receipts import Purpose

from ..auth import Principal, allow, own_member
from ..db import reading, transaction
from ..runtime import Gateway
from ..schemas import ConsentChange, ConsentResponse
from ..services import consent, members
from . import AUTH, gateway, problems

router = APIRouter(prefix="/v1/me/consents", tags=["consent"])


@router.get("", response_model=dict[str, bool], responses=problems(*AUTH, 503), summary="Current consent per purpose")
def current(who: Principal = Depends(allow("member")), gw: Gateway = Depends(gateway)) -> dict[str, bool]:
    with reading(gw.sessions) as session:
        return consent.current(session, who.member_id)


@router.get("/history", responses=problems(*AUTH, 503), summary="Every consent receipt the member was given, oldest first")
def history(who: Principal = Depends(allow("member")), gw: Gateway = Depends(gateway)) -> list[dict]:
    with reading(gw.sessions) as session:
        return consent.history(session, who.member_id)


@router.put("/{purpose}", response_model=ConsentResponse, responses=problems(*AUTH, 409, 503),
            summary="Grant or withdraw one purpose; returns the signed receipt")
def change(purpose: Purpose, body: ConsentChange, who: Principal = Depends(allow("member")),
           gw: Gateway = Depends(gateway)) -> ConsentResponse:
    with transaction(gw.sessions) as session:
        member = own_member(session, who)
        if body.granted:  # withdrawing is a right that even a frozen account keeps
            members.require_active(member)
        signed, changed = consent.set_consent(session, gw, member, purpose, body.granted, body.channel, gw.now())
        return ConsentResponse(purpose=purpose.value, granted=body.granted, changed=changed, receipt=json.loads(signed.to_json()))
