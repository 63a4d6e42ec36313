"""Local scoring with a released model, and campaign targeting under the ``marketing`` consent.

A gateway scores its *own* members, in its own process, with a released global model and the
same feature definition the model was trained on (:func:`federation.features.read_features`).
Nothing leaves the gateway but what the operator's campaign asks for: the targeting list.

Campaign targeting returns scores only for members whose ``marketing`` consent is granted at the
moment it runs: the features are read through the marketing-consent join, and the result is
checked once more against a fresh consent query just before it is returned (a withdrawal that
lands while the model runs still removes the member).
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
from federation.releases import load_release


@dataclass(frozen=True)
class ReleasedModel:
    record: dict[str, Any]
    blob: bytes

    @property
    def kind(self) -> str:
        return str(self.record["model"])

    def predict(self, X: np.ndarray) -> np.ndarray:
        if self.kind == "xgb":
            return models.xgb_predict(self.blob, X)
        return models.lr_predict(models.deserialise_logreg(self.blob), X)


def load_model(release_path: str | Path) -> ReleasedModel:
    """The model of a release record, refused unless its bytes hash to the recorded SHA-256 and its
    features are this module's feature definition."""
    rec = load_release(release_path)
    blob = (Path(release_path).parent / rec["model_file"]).read_bytes()
    if models.sha256_hex(blob) != rec["model_sha256"]:
        raise ValueError(f"{release_path}: the model file does not match the released SHA-256")
    if list(rec.get("feature_names") or []) != list(feats.FEATURE_NAMES):
        raise ValueError("the release was not trained on the alliance feature definition (federation.features)")
    return ReleasedModel(rec, blob)


def score_members(engine: Any, model: ReleasedModel, *, as_of: Any = None, purpose: str = feats.MARKETING_PURPOSE) -> dict[str, float]:
    """member_ref -> score for the brand's members consented to ``purpose`` (checked now)."""
    frame = feats.read_features(engine, as_of or datetime.now(UTC), purpose=purpose, with_labels=False)
    if not len(frame):
        return {}
    p = model.predict(frame.X)
    return {ref: float(s) for ref, s in zip(frame.member_refs, p, strict=True)}


def campaign_targets(engine: Any, model: ReleasedModel, *, as_of: Any = None, top_k: int | None = None,
                     min_score: float = 0.0) -> list[dict[str, Any]]:
    """The campaign list: ``[{"member_ref", "score"}]``, best first, marketing-consented members only."""
    scores = score_members(engine, model, as_of=as_of, purpose=feats.MARKETING_PURPOSE)
    from sqlalchemy import select

    from gateway.models import Member

    with engine.connect() as conn:
        ok_ids = feats.consented_member_ids(conn, feats.MARKETING_PURPOSE)
        refs_ok = {r for (r,) in conn.execute(select(Member.member_ref).where(Member.id.in_(ok_ids)))} if ok_ids else set()
    rows = [{"member_ref": ref, "score": s} for ref, s in scores.items() if ref in refs_ok and s >= min_score]
    rows.sort(key=lambda r: (-r["score"], r["member_ref"]))
    return rows[:top_k] if top_k else rows


def targeting_report(rows: list[dict[str, Any]], model: ReleasedModel) -> str:
    return json.dumps({"model_version": model.record["model_version"], "model_sha256": model.record["model_sha256"],
                       "count": len(rows), "targets": rows}, indent=2)
