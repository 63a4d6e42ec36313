"""Personalised models (federation.personalise): each brand adapts the global model on its own rows,
chooses on validation members the federated rounds left out, keeps the model at home, and under DP
stays within its budget."""

from __future__ import annotations

import re

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict

from federation import client_app, models, personalise
from federation.config import effective
from federation.data import load_partition
from privacy.dp import dpsgd_epsilon

DIM = 6


def _ids(n: int, seed: int) -> list[str]:
    return [f"m-{seed}-{i}" for i in range(n)]


def _brand(n: int, sign: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose label rises with x1 everywhere, and with x0 (sign +1) or against it (sign -1)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, DIM)).astype(np.float32)
    logit = 2.0 * sign * X[:, 0] + 1.5 * X[:, 1] - 0.5
    return X, (rng.random(n) < models.sigmoid(logit)).astype(np.int64)


def _global(cfg: dict) -> bytes:
    X, y = _brand(20_000, +1.0, 1)  # the rest of the alliance
    return models.serialise_logreg(models.lr_fit_centralized(X, y, epochs=5, seed=1))


def test_a_brand_unlike_the_others_scores_with_its_own_model() -> None:
    cfg = effective({"num-rounds": 3})
    blob = _global(cfg)
    X, y = _brand(1_200, -1.0, 2)  # this brand's members respond to x0 the other way round
    X_test, y_test = _brand(4_000, -1.0, 3)
    adaptation = personalise.adapt(cfg, X, y, _ids(len(y), 2), "logreg", blob)
    assert adaptation.choice != "global" and set(adaptation.validation_auc) == {"global", "local-logreg", "local-xgb"}
    # the mixture was learnt on members no local model trained on: about a quarter, the same whatever the row order
    val = personalise.validation_mask(_ids(len(y), 2), cfg)
    assert 0.2 < val.mean() < 0.3 and np.array_equal(val[::-1], personalise.validation_mask(_ids(len(y), 2)[::-1], cfg))
    mine = models.roc_auc(y_test, adaptation.model.predict(X_test))
    theirs = models.roc_auc(y_test, models.lr_predict(models.deserialise_logreg(blob), X_test))
    assert mine > theirs + 0.2, (mine, theirs)
    # the model stands alone: parsed from its bytes it scores the same, and it names the release it adapts
    again = personalise.PersonalModel.parse(adaptation.model.serialise())
    assert np.array_equal(again.predict(X_test), adaptation.model.predict(X_test))
    assert again.global_sha256 == models.sha256_hex(blob) and again.sha256 == adaptation.model.sha256
    # the same rows and seed give the same model (the release's SHA-256 can be checked by rebuilding it)
    assert personalise.adapt(cfg, X, y, _ids(len(y), 2), "logreg", blob).model.sha256 == adaptation.model.sha256


def test_a_brand_like_the_others_is_not_left_with_its_noisy_own_model() -> None:
    cfg = effective({"num-rounds": 3})
    blob = _global(cfg)
    X, y = _brand(150, +1.0, 4)  # a small brand whose members behave like everyone else's
    X_test, y_test = _brand(4_000, +1.0, 5)
    adaptation = personalise.adapt(cfg, X, y, _ids(len(y), 4), "logreg", blob)
    assert not adaptation.choice.startswith("local-")
    local = models.lr_predict(models.lr_fit_centralized(X, y, epochs=6, seed=0), X_test)
    assert models.roc_auc(y_test, adaptation.model.predict(X_test)) >= models.roc_auc(y_test, local)


def test_a_brand_leans_on_the_global_model_as_far_as_its_members_behave_like_the_alliance() -> None:
    cfg = effective({"num-rounds": 3})
    blob = _global(cfg)  # knows x0 and x1
    rng = np.random.default_rng(13)

    def rows(n: int, own: float) -> tuple[np.ndarray, np.ndarray]:  # members who also respond to x2, which only the brand sees
        X = rng.normal(size=(n, DIM)).astype(np.float32)
        return X, (rng.random(n) < models.sigmoid(2.0 * X[:, 0] + 1.5 * X[:, 1] + own * X[:, 2] - 0.5)).astype(np.int64)

    def alpha(own: float) -> tuple[float, float, float]:
        (X, y), (X_test, y_test) = rows(800, own), rows(6_000, own)
        adaptation = personalise.adapt(cfg, X, y, _ids(800, 13), "logreg", blob)
        a = {"global": 1.0, "local-logreg": 0.0, "local-xgb": 0.0}.get(adaptation.choice)
        if a is None:  # a mixture: the global model's share, then the brand's own model's
            (a, _, shared), (rest, _, _) = adaptation.model.components
            assert adaptation.choice == f"mixture-{a:g}" and rest == round(1 - a, 2) and shared == blob
        mine, theirs = (models.roc_auc(y_test, p) for p in (adaptation.model.predict(X_test),
                                                              models.lr_predict(models.deserialise_logreg(blob), X_test)))
        return a, mine, theirs

    like, partly, unlike = alpha(0.0), alpha(1.0), alpha(3.0)
    assert like[0] > partly[0] > unlike[0] and 0 < partly[0] < 1, (like, partly, unlike)
    assert unlike[1] > unlike[2] + 0.1 and partly[1] > partly[2]  # its own signal is in its model


def test_the_mixture_weight_follows_the_model_that_carries_the_signal_and_is_steadied_on_few_members(
        monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(14)
    signal, noise = rng.normal(size=2_000), rng.normal(size=2_000)
    y = (rng.random(2_000) < models.sigmoid(2.0 * signal)).astype(np.int64)
    assert personalise.mixture_weight(signal, noise, y) > 0.95  # the local model knows nothing: the global one alone
    assert personalise.mixture_weight(noise, signal, y) < 0.05
    assert 0.4 < personalise.mixture_weight(signal + rng.normal(size=2_000), signal + rng.normal(size=2_000), y) < 0.6

    def spread() -> float:  # two equally good models judged on 60 members, over 200 brands
        weights = []
        for seed in range(200):
            r = np.random.default_rng(seed)
            s = r.normal(size=60)
            labels = (r.random(60) < models.sigmoid(2.0 * s)).astype(np.int64)
            weights.append(personalise.mixture_weight(s + r.normal(size=60), s + r.normal(size=60), labels))
        low, high = np.percentile(weights, [5, 95])
        return float(high - low)

    steadied = spread()
    monkeypatch.setattr(personalise, "STACK_C", 1e6)  # next to no regularisation
    assert steadied < spread() - 0.1


def test_a_brand_too_small_to_validate_keeps_the_global_model() -> None:
    cfg = effective({})
    blob = _global(cfg)
    X, y = _brand(400, +1.0, 6)
    val = personalise.validation_mask(_ids(400, 6), cfg)
    y[:] = 0
    y[np.flatnonzero(val)[:4]] = 1  # four positives among its validation members: too few to tell models apart
    y[np.flatnonzero(~val)[:50]] = 1
    adaptation = personalise.adapt(cfg, X, y, _ids(400, 6), "logreg", blob)
    assert adaptation.choice == "global" and adaptation.model.components == ((1.0, "logreg", blob),)
    assert adaptation.validation_auc == {}


def test_an_xgboost_global_model_is_mixed_with_the_brand_own_trees() -> None:
    cfg = effective({"model": "xgb", "strategy": "xgb-bagging", "num-rounds": 5})
    X, y = _brand(3_000, +1.0, 7)
    blob = models.xgb_fit_centralized(X, y, rounds=5, params=models.xgb_params(0.3, 3, 7))
    Xb, yb = _brand(800, -1.0, 8)
    adaptation = personalise.adapt(cfg, Xb, yb, _ids(len(yb), 8), "xgb", blob)
    assert adaptation.choice != "global"
    X_test, y_test = _brand(3_000, -1.0, 9)
    assert models.roc_auc(y_test, adaptation.model.predict(X_test)) > models.roc_auc(y_test, models.xgb_predict(blob, X_test)) + 0.2


def test_under_dp_every_adaptation_step_is_accounted_within_the_personal_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = effective({"num-rounds": 3, "dp-epsilon": 2.0, "personal-dp-epsilon": 3.0, "dp-batch-size": 64})
    blob = _global(cfg)
    X, y = _brand(2_000, -1.0, 10)
    fit = int((~personalise.validation_mask(_ids(len(y), 10), cfg)).sum())  # the rows the federated rounds trained on
    federated = client_app.dp_plan(cfg, fit)
    plan = personalise.dp_adaptation_plan(cfg, fit, federated)
    assert plan is not None
    before = ((federated.noise_multiplier, federated.sample_rate, federated.steps * 3),)
    assert dpsgd_epsilon(federated.noise_multiplier, federated.sample_rate, federated.steps * 3, 1e-5) <= 2.0
    composed = dpsgd_epsilon(plan.noise_multiplier, plan.sample_rate, plan.steps, 1e-5, after=before)
    assert 2.9 < composed <= 3.0  # the whole personal budget, and not a bit more
    # every training the adaptation really runs is DP-SGD at that noise, and together no more steps than accounted
    ran: list[models.DPSGD | None] = []
    real = models.lr_train

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        ran.append(kwargs.get("dp"))
        return real(*args, **kwargs)

    monkeypatch.setattr(models, "lr_train", spy)
    adaptation = personalise.adapt(cfg, X, y, _ids(len(y), 10), "logreg", blob, federated_dp=federated)
    assert ran and all(dp is not None and dp.noise_multiplier == plan.noise_multiplier for dp in ran)
    assert all(dp.sample_rate == plan.sample_rate for dp in ran if dp is not None)
    assert sum(dp.steps for dp in ran if dp is not None) <= plan.steps
    assert "local-xgb" not in adaptation.validation_auc  # XGBoost has no DP-SGD: not a local model under DP
    assert adaptation.dp_noise_multiplier == plan.noise_multiplier
    # without a budget above the federated one there is no adaptation at all
    no_budget = effective({**cfg, "personal-dp-epsilon": 2.0})
    ran.clear()
    assert personalise.adapt(no_budget, X, y, _ids(len(y), 10), "logreg", blob, federated_dp=federated).choice == "global" and not ran


@pytest.mark.usefixtures("task_identity")
def test_the_personalise_reply_carries_the_choice_and_a_digest_only() -> None:
    run_config = {"data-source": "telco", "num-rounds": 2}
    ctx = Context(run_id=1, node_id=2, node_config={"partition-id": 1, "num-partitions": 4}, state=RecordDict(), run_config=run_config)
    data = load_partition(ctx)
    blob = models.serialise_logreg(models.lr_fit_centralized(data.X, data.y, epochs=2), list(data.feature_names))
    content = RecordDict({"model": ArrayRecord({"bytes": Array(np.frombuffer(blob, dtype=np.uint8).copy())}),
                          "config": ConfigRecord({"model-sha256": models.sha256_hex(blob), "server-round": 2})})
    app = client_app.build_client_app()
    reply = app(Message(content, dst_node_id=2, message_type="train.personalise"), ctx)
    assert not reply.has_error(), reply.error
    assert not reply.content.array_records and not reply.content.metric_records
    personal = dict(reply.content["personal"])
    assert set(personal) == {"brand-id", "choice", "model-sha256", "kept"}
    assert personal["kept"] is False  # telco: no brand database to keep it in
    assert personal["choice"] in ("global", *personalise.LOCALS) or re.fullmatch(r"mixture-0\.\d{1,2}", personal["choice"])
    assert personal["model-sha256"] == personalise.adapt(effective(run_config), data.X, data.y, data.row_ids, "logreg", blob).model.sha256
    # a model that does not match its digest is refused, not adapted
    tampered = RecordDict({"model": content["model"], "config": ConfigRecord({"model-sha256": "0" * 64, "server-round": 2})})
    with pytest.raises(ValueError, match="SHA-256"):  # Flower's runtime turns it into an error reply
        app(Message(tampered, dst_node_id=2, message_type="train.personalise"), ctx)


def test_scoring_uses_the_brand_model_the_release_names_and_refuses_another(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from federation import features, scoring
    from federation.releases import write_release
    from gateway.db import make_engine
    from gateway.migrations import upgrade_to_head
    from gateway.services import personal

    engine = make_engine(f"sqlite:///{tmp_path / 'brand.db'}")
    upgrade_to_head(engine)
    names = list(features.FEATURE_NAMES)
    rng = np.random.default_rng(0)
    blob = models.serialise_logreg({"w": rng.normal(size=len(names)).astype(np.float32), "b": np.zeros(1, np.float32)}, names)
    own = models.serialise_logreg({"w": rng.normal(size=len(names)).astype(np.float32), "b": np.zeros(1, np.float32)}, names)
    mine = personalise.PersonalModel("local-logreg", models.sha256_hex(blob), ((1.0, "logreg", own),))

    def release(brands: dict) -> scoring.ReleasedModel:
        path, _ = write_release(tmp_path, model_bytes=blob, model_format="alliance.logreg/1", fields={
            "task": "churn", "model": "logreg", "strategy": "fedavg", "data_source": "gateway", "feature_names": names,
            "num_rounds": 1, "rounds_completed": 1, "participating_brands": ["cafe"], "privacy": {"guarantee": "none"},
            "secure_aggregation": {"enabled": False}, "metrics_per_round": [], "final_metrics": {},
            "personalisation": {"enabled": True, "brands": brands}})
        return scoring.load_model(path)

    named = release({"cafe": {"uses": "local-logreg", "model_sha256": mine.sha256, "kept": True}})
    with pytest.raises(ValueError, match="does not hold"):
        scoring.for_brand(named, engine, "cafe")  # not there yet
    with engine.begin() as conn:
        personal.store(conn, global_sha256=models.sha256_hex(blob), task="churn", choice=mine.choice, model=mine.serialise())
    used = scoring.for_brand(named, engine, "cafe")
    X = rng.normal(size=(50, len(names)))
    assert used.uses == "local-logreg" and np.array_equal(used.predict(X), mine.predict(X))
    assert scoring.for_brand(named, engine, "cinema").uses == "global"  # a brand the release names no model for
    assert scoring.for_brand(release({"cafe": {"uses": "mixture-0.5", "model_sha256": "", "kept": False}}), engine, "cafe").personal is None
    other = release({"cafe": {"uses": "local-logreg", "model_sha256": "f" * 64, "kept": True}})
    with pytest.raises(ValueError, match="does not hold"):
        scoring.for_brand(other, engine, "cafe")  # the database holds a different model than the release names
    with engine.begin() as conn:  # bytes changed behind the gateway's back
        conn.exec_driver_sql("UPDATE personal_models SET model = X'7b7d'")
    with pytest.raises(ValueError, match="SHA-256"):
        scoring.for_brand(named, engine, "cafe")


def test_a_personal_model_carries_its_brand_base_rate() -> None:
    cfg = effective({"num-rounds": 3})
    blob = _global(cfg)  # the alliance churns at about a third
    rng = np.random.default_rng(11)
    X = rng.normal(size=(6_000, DIM)).astype(np.float32)
    y = (rng.random(6_000) < models.sigmoid(2.0 * X[:, 0] + 1.5 * X[:, 1] - 3.5)).astype(np.int64)  # this brand: a few percent
    adaptation = personalise.adapt(cfg, X[:3_000], y[:3_000], _ids(3_000, 11), "logreg", blob)
    rate = y[3_000:].mean()
    theirs = models.lr_predict(models.deserialise_logreg(blob), X[3_000:]).mean()
    mine = adaptation.model.predict(X[3_000:]).mean()
    assert abs(theirs - rate) > 0.1 and abs(mine - rate) < 0.02, (rate, theirs, mine)
    assert adaptation.model.scale > 0  # rescaled, never reversed: the brand's ranking is its mixture's


def test_a_brand_that_keeps_its_local_model_keeps_exactly_its_local_only_model() -> None:
    """Kept alone, a local model is trained on all the brand's rows as its local-only model is (same
    seed, same passes), so a brand is never worse off than on its own by training noise alone."""
    cfg = effective({"num-rounds": 3})
    X, y = _brand(3_000, -1.0, 12)
    # a global model that ranks this brand's members exactly the wrong way round: it gets no weight
    blob = models.serialise_logreg({"w": np.array([2.0, -1.5, 0, 0, 0, 0], np.float32), "b": np.zeros(1, np.float32)})
    adaptation = personalise.adapt(cfg, X, y, _ids(3_000, 12), "logreg", blob)
    assert adaptation.choice == "local-logreg"
    (weight, kind, mine), = adaptation.model.components
    local = models.lr_fit_centralized(X, y, epochs=3 * int(cfg["local-epochs"]), lr=float(cfg["lr"]), batch_size=int(cfg["batch-size"]),
                                      l2=float(cfg["l2"]), seed=int(cfg["seed"]))
    assert weight == 1.0 and kind == "logreg" and mine == models.serialise_logreg(local)
