from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends
from pydantic import Field

from ..auth import Principal, allow
from ..db import reading, transaction
from ..runtime import Gateway
from ..schemas import Strict
from ..services import programme
from ..settings import Programme
from . import AUTH, gateway, problems

router = APIRouter(prefix="/v1/admin/programme", tags=["operator"])


class ProgrammeInForce(Strict):
    version: int
    programme: Programme


class ProgrammeChange(Strict):
    """The whole programme as it should be from now on, and the version it was edited from."""

    expected_version: int = Field(ge=0, description="the version you edited: a change made meanwhile refuses this one (409)")
    note: str = Field(min_length=1, max_length=200, examples=["double points week"])
    programme: Programme


class ProgrammeVersionInfo(Strict):
    version: int
    actor: str
    note: str
    created_at: datetime | None
    digest: str
    programme: Programme


@router.get("", response_model=ProgrammeInForce, responses=problems(*AUTH, 503),
            summary="The programme in force: earn rules, tiers, campaigns")
def in_force(who: Principal = Depends(allow("operator", "auditor")), gw: Gateway = Depends(gateway)) -> ProgrammeInForce:
    with reading(gw.sessions) as session:
        return ProgrammeInForce(version=programme.version_in_force(session), programme=programme.current(session, gw))


@router.put("", response_model=ProgrammeInForce, responses=problems(*AUTH, 400, 409, 503),
            summary="Change the programme (a new version, audited); the next purchase earns by it, no restart")
def change(body: ProgrammeChange, who: Principal = Depends(allow("operator")), gw: Gateway = Depends(gateway)) -> ProgrammeInForce:
    with transaction(gw.sessions) as session:
        version = programme.change(session, gw, who.subject, body.programme, body.expected_version, body.note, gw.now())
    return ProgrammeInForce(version=version, programme=body.programme)


@router.get("/versions", response_model=list[ProgrammeVersionInfo], responses=problems(*AUTH, 503),
            summary="Every version of the programme, newest first, with who saved it, when and why")
def versions(who: Principal = Depends(allow("operator", "auditor")), gw: Gateway = Depends(gateway)) -> list[ProgrammeVersionInfo]:
    with reading(gw.sessions) as session:
        return [ProgrammeVersionInfo(**v) for v in programme.history(session, gw)]
