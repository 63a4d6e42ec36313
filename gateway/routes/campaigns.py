from __future__ import annotations

from fastapi import APIRouter, Depends

from ..auth import Principal, allow
from ..runtime import Gateway
from ..schemas import CampaignRequest, CampaignResponse
from ..services import processings
from . import AUTH, gateway, problems

router = APIRouter(prefix="/v1/campaigns", tags=["operator"])


@router.post("/targets", response_model=CampaignResponse, responses=problems(*AUTH, 400, 404, 409, 503),
             summary="Score members with a released model and list the best campaign targets (marketing consent only)")
def targets(body: CampaignRequest, who: Principal = Depends(allow("operator")), gw: Gateway = Depends(gateway)) -> dict:
    return processings.run_campaign(gw, who.subject, model_version=body.model_version, top_k=body.top_k,
                                    min_score=body.min_score, as_of=body.as_of)
