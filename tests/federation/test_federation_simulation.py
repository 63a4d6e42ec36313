"""Simulation runs (Flower run_simulation, Ray backend) of the real ServerApp and ClientApp."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from federation import models, personalise
from federation.client_app import dp_plan, federated_rows
from federation.config import effective
from federation.data import all_brands
from federation.releases import REQUIRED_FIELDS, verify_release
from federation.server_app import RunRecorder, privacy_section
from federation.simulation import simulate
from privacy.dp import PrivacyAccountant


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
    # the operator's AUC, from the brands' noisy histograms, agrees with the exact held-out AUC
    assert abs(rec["final_metrics"]["auc_pooled"] - auc) < 0.02


@pytest.mark.slow
def test_dp_release_states_the_epsilon_each_brand_calibrated_to_and_what_it_covers(tmp_path: Path) -> None:
    ov = {"data-source": "synthetic", "num-rounds": 2, "dp-epsilon": 4.0, "dp-delta": 1e-5, "seed": 5}
    rec = simulate(ov, 3, release_dir=tmp_path)
    priv = rec["privacy"]
    assert priv["guarantee"] == "record-level" and priv["epsilon_spent"] == 4.0
    rl = priv["record_level"]
    assert rl["unit"] == "member" and rl["epsilon"] == 4.0 and "covers" in rl
    # Each brand's own accountant, on its own sample rate, meets the stated epsilon for the whole run.
    cfg = effective(ov)
    for brand in all_brands(ov, 3):
        plan = dp_plan(cfg, federated_rows(cfg, brand).n_train)
        acc = PrivacyAccountant(plan.noise_multiplier, plan.sample_rate)
        acc.step(plan.steps * cfg["num-rounds"])
        assert acc.epsilon(1e-5) == pytest.approx(4.0, abs=0.01) and acc.epsilon(1e-5) <= 4.0
        assert repr(plan.sample_rate) not in json.dumps(rec)  # the rate (batch / count) stays at the brand
    # The evaluation histograms have their own epsilon, composed over the evaluation rounds.
    ev = priv["evaluation"]
    assert ev["epsilon_per_evaluation"] == 1.0 and ev["evaluations"] == 2 and ev["epsilon"] == 2.0
    assert priv["aggregation_weights"]["epsilon"] == pytest.approx(0.2)  # 0.1 per training round
    assert priv["not_covered"]


def test_privacy_section_composes_the_evaluation_epsilon() -> None:
    rec = RunRecorder()
    for r in (1, 2, 3):
        rec.evaluate(r, [("a", {"hist-pos": [1.0] * models.HIST_BINS, "hist-neg": [2.0] * models.HIST_BINS})])
    sec = privacy_section(effective({"dp-epsilon": 3.0, "eval-dp-epsilon": 0.5}), rec)
    assert sec["guarantee"] == "record-level" and sec["record_level"]["epsilon"] == 3.0
    assert sec["evaluation"]["epsilon"] == 1.5
    assert privacy_section(effective({}), rec)["guarantee"] == "none"
    with pytest.raises(ValueError, match="eval-dp-epsilon"):
        effective({"eval-dp-epsilon": 0})


def _values(content) -> list:
    """Every scalar a reply carries outside its model arrays (and every array's shape)."""
    out: list = []
    for records in (content.metric_records, content.config_records):
        for record in records.values():
            for value in record.values():
                if isinstance(value, bytes) and len(value) % 8 == 0 and len(value) >= 8 * models.HIST_BINS:
                    value = np.frombuffer(value, dtype="<f8").tolist()  # legacy histograms travel as bytes
                out += value if isinstance(value, list) else [value]
    for record in content.array_records.values():
        out += [dim for array in record.values() for dim in array.shape]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("secagg", [False, True])
def test_no_message_the_operator_receives_reveals_a_brands_count(tmp_path: Path, secagg: bool) -> None:
    """Every reply of a run, captured as the operator receives it: no field equals a brand's count of
    training or held-out members, of positives or negatives, or what derives from a count (its DP-SGD
    sample rate, steps, noise multiplier); the histograms' sums are not the counts either."""
    ov = {"data-source": "synthetic", "num-rounds": 2, "dp-epsilon": 4.0, "personal-dp-epsilon": 6.0, "seed": 3}
    if secagg:
        ov |= {"secagg": True, "secagg-num-shares": 3, "secagg-threshold": 2}
    replies: list = []
    rec = simulate(ov, 3, release_dir=tmp_path, wire_tap=lambda m: replies.append(m))
    assert rec["rounds_completed"] == 2 and len(replies) >= 12
    cfg = effective(ov)
    secrets_of = {}
    for b in all_brands(ov, 3):
        trained = federated_rows(cfg, b).n_train  # all but its validation members
        plan = dp_plan(cfg, trained)
        adapting = personalise.dp_adaptation_plan(cfg, trained, plan)  # the personalisation's DP-SGD too
        secrets_of[b.brand_id] = [b.n_train, trained, len(b.y_test), int(b.y_test.sum()), int((1 - b.y_test).sum()),
                                  plan.sample_rate, plan.steps, plan.steps * cfg["num-rounds"], plan.noise_multiplier,
                                  adapting.sample_rate, adapting.steps, adapting.noise_multiplier]
    personal = [dict(m.content["personal"]) for m in replies if "personal" in m.content.config_records]
    assert sorted(p["brand-id"] for p in personal) == sorted(rec["personalisation"]["brands"]) == ["brand-0", "brand-1", "brand-2"]
    # the release records what each brand said it uses
    assert {p["brand-id"]: p["choice"] for p in personal} == {b: u["uses"] for b, u in rec["personalisation"]["brands"].items()}
    seen = [v for m in replies if not m.has_error() for v in _values(m.content) if isinstance(v, (int, float)) and not isinstance(v, bool)]
    for brand, secret in secrets_of.items():
        leaked = [s for s in secret if any(v == pytest.approx(s, rel=1e-9, abs=0) for v in seen)]
        assert leaked == [], (brand, leaked)
    for m in replies:
        for record in m.content.metric_records.values():
            if "hist-pos" in record and not isinstance(record["hist-pos"], bytes):
                total = sum(record["hist-pos"]) + sum(record["hist-neg"])
                assert all(total != len(b.y_test) for b in all_brands(ov, 3))
    assert json.dumps(rec).count("num_examples") == 0 and "train_examples" not in json.dumps(rec)


@pytest.mark.slow
def test_secagg_plus_aggregate_equals_plain_fedavg(tmp_path: Path) -> None:
    # Plain FedAvg weighs by noisy counts; almost no noise here, to compare the mechanisms exactly.
    base = {"data-source": "synthetic", "num-rounds": 2, "seed": 9, "weight-dp-epsilon": 1e6}
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
