"""Local scoring with a released model, and campaign targeting under the ``marketing`` consent.

A gateway scores its *own* members, in its own process, with a released model and the same feature
definition the model was trained on (:func:`federation.features.read_features`): its own personal
model of the release where the release records one for the brand (:func:`for_brand`), else the
global model.
Nothing leaves the gateway but what the operator's campaign asks for: the targeting list.

Campaign targeting returns scores only for members whose ``marketing`` consent is granted at the
moment it runs: the features are read through the marketing-consent join, and the result is
checked once more against a fresh consent query just before it is returned (a withdrawal that
lands while the model runs still removes the member).  The gateway's campaign endpoint
(``POST /v1/campaigns/targets``) makes that last check in the transaction that records the campaign
as a processing (one per target, with the consent-log entry it relied on) for the auditor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from federation import features as feats
from federation import models
from federation.personalise import PersonalModel
from federation.releases import load_release, model_path


@dataclass(frozen=True)
class ReleasedModel:
    record: dict[str, Any]
    blob: bytes
    personal: PersonalModel | None = None  # the brand's own adaptation of it (federation.personalise)

    @property
    def kind(self) -> str:
        return str(self.record["model"])

    @property
    def uses(self) -> str:
        """Which model scores: ``global`` or what the brand's personal model uses."""
        return self.personal.choice if self.personal is not None else "global"

    def predict(self, X: np.ndarray) -> np.ndarray:
        if self.personal is not None:
            return self.personal.predict(X)
        if self.kind == "xgb":
            return models.xgb_predict(self.blob, X)
        return models.lr_predict(models.deserialise_logreg(self.blob), X)


def load_model(release_path: str | Path) -> ReleasedModel:
    """The model of a release record, refused unless its bytes hash to the recorded SHA-256 and its
    features are this module's feature definition."""
    rec = load_release(release_path)
    blob = model_path(release_path, rec).read_bytes()
    if models.sha256_hex(blob) != rec["model_sha256"]:
        raise ValueError(f"{release_path}: the model file does not match the released SHA-256")
    if list(rec.get("feature_names") or []) != list(feats.FEATURE_NAMES):
        raise ValueError("the release was not trained on the alliance feature definition (federation.features)")
    return ReleasedModel(rec, blob)


def for_brand(model: ReleasedModel, engine: Any, brand_id: str) -> ReleasedModel:
    """The model this brand scores with: its personal model where the release records that it kept one
    (even when that is the global model, calibrated to the brand; read from its own database and
    refused unless it is exactly the model the release names), else the global model."""
    from gateway.services import personal

    entry = ((model.record.get("personalisation") or {}).get("brands") or {}).get(brand_id)
    if not entry or not entry.get("kept"):
        return model
    with engine.connect() as conn:
        blob = personal.load(conn, str(model.record["model_sha256"]))
    if blob is None or models.sha256_hex(blob) != entry.get("model_sha256"):
        raise ValueError(f"release {model.record['model_version']} names a personal model of this brand that its database does not hold")
    return ReleasedModel(model.record, model.blob, PersonalModel.parse(blob))


@dataclass(frozen=True)
class Scored:
    """Scores of the members read (local database ids and refs; they never leave the gateway)."""

    member_ids: np.ndarray
    member_refs: list[str]
    scores: np.ndarray


@dataclass(frozen=True)
class Targeting:
    rows: list[dict[str, Any]]  # [{"member_ref", "score"}], best first
    relied_on: dict[int, int]  # member id -> seq of the marketing consent each target relied on
    decided_at: datetime  # when that consent was checked


def scored_members(engine: Any, model: ReleasedModel, *, as_of: Any = None, purpose: str = feats.MARKETING_PURPOSE) -> Scored:
    """Scores of the brand's members consented to ``purpose`` (checked now), features as of ``as_of``."""
    frame = feats.read_features(engine, as_of or datetime.now(UTC), purpose=purpose, with_labels=False)
    scores = model.predict(frame.X) if len(frame) else np.zeros(0)
    return Scored(frame.member_ids, frame.member_refs, np.asarray(scores, dtype=float))


def score_members(engine: Any, model: ReleasedModel, *, as_of: Any = None, purpose: str = feats.MARKETING_PURPOSE) -> dict[str, float]:
    """member_ref -> score for the brand's members consented to ``purpose`` (checked now)."""
    scored = scored_members(engine, model, as_of=as_of, purpose=purpose)
    return {ref: float(s) for ref, s in zip(scored.member_refs, scored.scores, strict=True)}


def select_targets(conn: Any, scored: Scored, *, top_k: int | None = None, min_score: float = 0.0,
                   now: datetime | None = None) -> Targeting:
    """The campaign list from ``scored``, keeping only members whose ``marketing`` consent is granted at
    this moment (checked on ``conn``: a gateway passes the transaction that records the campaign)."""
    decided_at = now or datetime.now(UTC)
    consented = feats.consented_members(conn, feats.MARKETING_PURPOSE)
    picked = [(ref, float(s), int(mid)) for mid, ref, s in zip(scored.member_ids, scored.member_refs, scored.scores, strict=True)
              if int(mid) in consented and s >= min_score]
    picked.sort(key=lambda r: (-r[1], r[0]))
    if top_k:
        picked = picked[:top_k]
    return Targeting([{"member_ref": ref, "score": s} for ref, s, _ in picked], {m: consented[m] for _, _, m in picked}, decided_at)


def campaign_targets(engine: Any, model: ReleasedModel, *, as_of: Any = None, top_k: int | None = None,
                     min_score: float = 0.0) -> list[dict[str, Any]]:
    """The campaign list: ``[{"member_ref", "score"}]``, best first, marketing-consented members only."""
    scored = scored_members(engine, model, as_of=as_of, purpose=feats.MARKETING_PURPOSE)
    with engine.connect() as conn:
        return select_targets(conn, scored, top_k=top_k, min_score=min_score).rows


def targeting_report(rows: list[dict[str, Any]], model: ReleasedModel) -> str:
    return json.dumps({"model_version": model.record["model_version"], "model_sha256": model.record["model_sha256"],
                       "model_used": model.uses, "count": len(rows), "targets": rows}, indent=2)
