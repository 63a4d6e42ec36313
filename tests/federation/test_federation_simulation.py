"""Simulation runs (Flower run_simulation, Ray backend) of the real ServerApp and ClientApp."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from federation import models
from federation.client_app import dp_plan
from federation.config import effective
from federation.data import all_brands
from federation.releases import REQUIRED_FIELDS, verify_release
from federation.server_app import RunRecorder, privacy_section
from federation.simulation import simulate
from privacy.dp import PrivacyAccountant, dpsgd_epsilon


def _held_out_auc(rec: dict, overrides: dict, num_brands: int) -> float:
    brands = all_brands(overrides, num_brands)
    X = np.concatenate([b.X_test for b in brands])
    y = np.concatenate([b.y_test for b in brands])
    blob = (Path(rec["_path"]).parent / rec["model_file"]).read_bytes()
    return models.roc_auc(y, models.lr_predict(models.deserialise_logreg(blob), X))


@pytest.mark.slow
def test_synthetic_fedavg_beats_chance_and_release_is_complete(tmp_path: Path) -> None:
    ov = {"data-source": "synthetic", "num-rounds": 3, "strategy": "fedavg", "seed": 5}
    rec = simulate(ov, 3, release_dir=tmp_path)
    assert all(f in rec for f in REQUIRED_FIELDS)
    assert verify_release(rec["_path"])
    assert rec["rounds_completed"] == 3 and rec["num_rounds"] == 3
    assert rec["participating_brands"] == ["brand-0", "brand-1", "brand-2"]
    assert [r["round"] for r in rec["metrics_per_round"]] == [1, 2, 3]
    for r in rec["metrics_per_round"]:
        assert sorted(r["train_brands"]) == rec["participating_brands"]
        assert set(r["per_brand"]) == set(rec["participating_brands"])
        assert 0.0 <= r["evaluate"]["auc_pooled"] <= 1.0
    assert rec["privacy"]["guarantee"] == "none" and rec["privacy"]["epsilon_spent"] is None
    assert rec["secure_aggregation"]["enabled"] is False
    assert len(rec["model_sha256"]) == 64
    auc = _held_out_auc(rec, ov, 3)
    assert auc > 0.75, auc
    # the operator's histogram-pooled AUC agrees with the exact held-out AUC
    assert abs(rec["final_metrics"]["auc_pooled"] - auc) < 0.01


@pytest.mark.slow
def test_dp_epsilon_in_release_equals_the_accountant(tmp_path: Path) -> None:
    ov = {"data-source": "synthetic", "num-rounds": 2, "dp-epsilon": 4.0, "dp-delta": 1e-5, "seed": 5}
    rec = simulate(ov, 3, release_dir=tmp_path)
    priv = rec["privacy"]
    assert priv["guarantee"] == "record-level"
    rl = priv["record_level"]
    assert rl["unit"] == "member" and rl["target_epsilon"] == 4.0
    cfg = effective(ov)
    brands = {b.brand_id: b for b in all_brands(ov, 3)}
    assert set(rl["per_brand"]) == set(brands)
    for brand_id, spent in rl["per_brand"].items():
        plan = dp_plan(cfg, brands[brand_id].n_train)
        assert plan is not None
        # what the brand used is what it was calibrated for: the planned steps over the whole run
        assert spent["noise_multiplier"] == plan.noise_multiplier
        assert spent["sample_rate"] == pytest.approx(plan.sample_rate)
        assert spent["steps"] == plan.steps * cfg["num-rounds"]
        acc = PrivacyAccountant(spent["noise_multiplier"], spent["sample_rate"])
        acc.step(spent["steps"])
        assert spent["epsilon"] == pytest.approx(acc.epsilon(1e-5), rel=1e-12)
        assert spent["epsilon"] <= 4.0
    assert priv["epsilon_spent"] == max(v["epsilon"] for v in rl["per_brand"].values())
    assert priv["epsilon_spent"] == pytest.approx(4.0, abs=0.01)


def test_privacy_section_recomputes_epsilon_from_reported_parameters() -> None:
    rec = RunRecorder()
    rec.train(1, [("a", {"num-examples": 10, "train-loss": 0.5, "dp-noise-multiplier": 1.1, "dp-sample-rate": 0.01, "dp-steps": 300})])
    rec.train(2, [("a", {"num-examples": 10, "train-loss": 0.5, "dp-noise-multiplier": 1.1, "dp-sample-rate": 0.01, "dp-steps": 600})])
    sec = privacy_section(effective({"dp-epsilon": 3.0}), rec)
    assert sec["record_level"]["per_brand"]["a"]["steps"] == 600
    assert sec["epsilon_spent"] == pytest.approx(dpsgd_epsilon(1.1, 0.01, 600, 1e-5), rel=1e-12)
    assert sec["guarantee"] == "record-level"
    assert privacy_section(effective({}), rec)["guarantee"] == "none"


@pytest.mark.slow
def test_secagg_plus_aggregate_equals_plain_fedavg(tmp_path: Path) -> None:
    base = {"data-source": "synthetic", "num-rounds": 2, "seed": 9}
    plain = simulate(base, 3, release_dir=tmp_path / "plain")
    sec = simulate({**base, "secagg": True, "secagg-num-shares": 3, "secagg-threshold": 2}, 3, release_dir=tmp_path / "secagg")
    assert sec["secure_aggregation"] == {"enabled": True, "protocol": "SecAgg+", "num_shares": 3, "reconstruction_threshold": 2}
    assert sec["rounds_completed"] == 2 and sec["participating_brands"] == ["brand-0", "brand-1", "brand-2"]
    load = lambda r: models.deserialise_logreg((Path(r["_path"]).parent / r["model_file"]).read_bytes())  # noqa: E731
    a, b = load(plain), load(sec)
    # SecAgg+ quantises (2**22 levels over [-8, 8]) weighted by n / max_weight: tolerance ~1e-3
    assert np.max(np.abs(a["w"] - b["w"])) < 5e-3 and abs(a["b"][0] - b["b"][0]) < 5e-3
    assert np.max(np.abs(a["w"])) > 0.1
    assert _held_out_auc(sec, base, 3) > 0.75


def test_secagg_refuses_even_num_shares() -> None:
    from federation.server_app import _run_secagg

    with pytest.raises(ValueError, match="odd"):
        _run_secagg(None, None, effective({"secagg": True, "secagg-num-shares": 2}), 16, 3, RunRecorder())  # type: ignore[arg-type]
