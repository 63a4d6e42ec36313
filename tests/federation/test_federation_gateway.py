"""Phase 2: the simulated alliance in real gateway databases, consent-gated features (each training read
recorded as a processing), releases recorded in every gateway's audit log and anchored on chain, local
scoring and campaign targeting."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from federation import data, features, population
from federation.config import effective

BRANDS = ["fashion", "airline", "cinema"]


@pytest.fixture(scope="module")
def alliance(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from contracts.deploy import BrandTerms
    from gateway.local import LocalAlliance

    work = tmp_path_factory.mktemp("alliance")
    la = LocalAlliance.start(work / "chain")
    gws = {}
    for b in BRANDS:
        brand = la.add_brand(b, BrandTerms(b.title(), rate=10, credit_limit=10**9, collateral=10**15))
        gws[b] = brand.gateway
    manifest = population.populate(work / "pop", seed=11, size="small", brands=BRANDS, gateways=gws)
    return la, gws, manifest, work / "pop" / "population.json"


def _cfg(map_path: Path, **kw):  # type: ignore[no-untyped-def]
    return effective({"data-source": "gateway", "gateway-map": str(map_path), "task": "redeem", **kw})


def test_consent_withdrawal_excludes_member_from_next_round(alliance) -> None:  # type: ignore[no-untyped-def]
    from gateway.db import transaction
    from gateway.models import Member
    from gateway.services import consent, members
    from privacy.receipts import Purpose

    la, gws, manifest, map_path = alliance
    cfg = _cfg(map_path)
    node = {"partition-id": 0, "num-partitions": 3}
    before = data._SOURCES["gateway"](cfg, node)
    assert before.brand_id == "fashion" and before.n_train > 100
    victim = before.row_ids[0]
    gw = gws["fashion"]
    with transaction(gw.sessions) as s:
        m = members.get_by_ref(s, victim)
        assert consent.has_consent(s, m.id, Purpose.FEDERATED_TRAINING)
        _, changed = consent.set_consent(s, gw, m, Purpose.FEDERATED_TRAINING, False, "app", gw.now())
        assert changed
    after = data._SOURCES["gateway"](cfg, node)
    assert victim not in after.row_ids and victim not in after.test_row_ids
    assert set(after.row_ids) == set(before.row_ids) - {victim}
    assert after.n_train == before.n_train - 1
    # a fresh read (no cache at all) agrees: the reader joins the consents table
    fresh = features.read_features(gw.engine, manifest["train_as_of"])
    assert victim not in fresh.member_refs and set(fresh.member_refs) == set(after.row_ids)
    # granting again brings the member back in the next read
    with transaction(gw.sessions) as s:
        m = s.query(Member).filter_by(member_ref=victim).one()
        consent.set_consent(s, gw, m, Purpose.FEDERATED_TRAINING, True, "app", gw.now())
    assert victim in data._SOURCES["gateway"](cfg, node).row_ids


def _recorded(gw, ref: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """member_ref -> consent seq of the training processing recorded under ``ref`` (exactly one)."""
    from sqlalchemy import select

    from gateway.models import Member
    from gateway.services import processings

    with gw.engine.connect() as conn:
        ids = processings.find(conn, "training", ref)
        assert len(ids) == 1, (ref, ids)
        members = processings.members_of(conn, ids[0])
        refs = dict(conn.execute(select(Member.id, Member.member_ref).where(Member.id.in_(members))).all()) if members else {}
    return {refs[m]: seq for m, seq in members.items()}


def test_training_read_records_exactly_the_members_read(alliance, task_identity) -> None:  # type: ignore[no-untyped-def]
    """Each round's read is one training processing covering exactly the members read, each with the
    grant it relied on; after a withdrawal the next round's processing leaves the member out."""
    from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
    from sqlalchemy import select

    from federation import models as fed_models
    from federation.client_app import build_client_app
    from gateway.db import transaction
    from gateway.models import Consent, Member
    from gateway.services import consent, members
    from privacy.receipts import Purpose

    la, gws, _, map_path = alliance
    gw = gws["airline"]
    ctx = Context(run_id=41, node_id=2, node_config={"partition-id": 1, "num-partitions": 3}, state=RecordDict(),
                  run_config=_cfg(map_path))
    first = data.load_partition(ctx, "run:41:round:1:train")
    read = set(first.row_ids) | set(first.test_row_ids)
    recorded = _recorded(gw, "run:41:round:1:train")
    assert set(recorded) == read and len(read) > 100
    with gw.engine.connect() as conn:
        grants = dict(conn.execute(select(Member.member_ref, Consent.log_seq).join(Consent, Consent.member_id == Member.id)
                                   .where(Consent.purpose == "federated_training", Consent.granted.is_(True))).all())
    assert recorded == {ref: grants[ref] for ref in read}
    victim = first.row_ids[0]
    with transaction(gw.sessions) as s:
        consent.set_consent(s, gw, members.get_by_ref(s, victim), Purpose.FEDERATED_TRAINING, False, "app", gw.now())
    try:
        second = data.load_partition(ctx, "run:41:round:2:train")
        assert set(_recorded(gw, "run:41:round:2:train")) == set(second.row_ids) | set(second.test_row_ids) == read - {victim}
        # The ClientApp records its own rounds: run, round and stage from the message.
        msg = Message(RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in fed_models.lr_init(len(features.FEATURE_NAMES)).items()}),
                                  "config": ConfigRecord({"server-round": 3})}), dst_node_id=2, message_type="train")
        reply = build_client_app()(msg, ctx)
        assert not reply.has_error(), reply.error
        assert set(_recorded(gw, "run:41:round:3:train")) == read - {victim}
        # The auditor's listing of the gateway names the same members for that round.
        brand = la.brands["airline"]
        listed, since = [], None
        while True:
            r = brand.http.get("/v1/audit/processings", params={"kind": "training", "limit": 5000, **({"since": since} if since else {})},
                               headers=brand.headers("auditor"))
            assert r.status_code == 200, r.text
            listed += r.json()["items"]
            since = r.json()["next"]
            if since is None:
                break
        round2 = [i for i in listed if i["ref"] == "run:41:round:2:train"]
        assert {i["member_ref"] for i in round2} == read - {victim} and len(round2) == len(read) - 1
        assert all(i["purpose"] == "federated_training" and i["consent_seq"] == grants[i["member_ref"]] for i in round2)
    finally:
        with transaction(gw.sessions) as s:
            consent.set_consent(s, gw, members.get_by_ref(s, victim), Purpose.FEDERATED_TRAINING, True, "app", gw.now())


def test_reader_reads_only_consented_members(alliance) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from gateway.models import Consent, Member

    _, gws, manifest, _ = alliance
    gw = gws["airline"]
    frame = features.read_features(gw.engine, manifest["train_as_of"])
    with gw.engine.connect() as conn:
        granted = {r for (r,) in conn.execute(select(Member.member_ref).join(Consent, Consent.member_id == Member.id)
                                              .where(Consent.purpose == "federated_training", Consent.granted.is_(True)))}
        everyone = {r for (r,) in conn.execute(select(Member.member_ref))}
    assert frame.member_refs and set(frame.member_refs) <= granted
    assert len(granted) < len(everyone)  # not everyone consents
    assert frame.X.shape == (len(frame), len(features.FEATURE_NAMES)) and np.isfinite(frame.X).all()


def test_simulator_reproducible_and_ledger_invariants(tmp_path: Path, alliance) -> None:  # type: ignore[no-untyped-def]
    _, gws, manifest, _ = alliance
    a = population.generate(seed=11, size="small", brands=BRANDS)
    b = population.generate(seed=11, size="small", brands=BRANDS)
    c = population.generate(seed=12, size="small", brands=BRANDS)
    for x, y in zip(a.brands, b.brands, strict=True):
        assert np.array_equal(x.p_member, y.p_member) and np.array_equal(x.p_amount, y.p_amount)
        assert x.exchanges == y.exchanges and x.redemptions == y.redemptions
    assert any(len(x.p_member) != len(z.p_member) for x, z in zip(a.brands, c.brands, strict=True))
    # the same seed written twice gives the same counts and label rates
    m2 = population.populate(tmp_path / "again", seed=11, size="small", brands=BRANDS)
    assert [x["counts"] for x in m2["brands"]] == [x["counts"] for x in manifest["brands"]]
    m2["brands"] = [x for x in m2["brands"] if x["brand_id"] == "cinema"]
    from gateway.db import make_engine

    f1 = features.read_features(gws["cinema"].engine, manifest["eval_as_of"])
    f2 = features.read_features(make_engine(m2["brands"][0]["db_url"]), m2["eval_as_of"])
    assert len(f1) == len(f2) and {k: v.mean() for k, v in f1.labels.items()} == {k: v.mean() for k, v in f2.labels.items()}
    assert 0.02 < f1.labels["redeem"].mean() < 0.6 and 0.02 < f1.labels["churn"].mean() < 0.8
    for gw in list(gws.values()) + [None]:
        engine = gw.engine if gw else make_engine(m2["brands"][0]["db_url"])
        assert population.check_invariants(engine) == {k: 0 for k in population.check_invariants(engine)}
    # the gateway's own ledger service agrees on a sample of members
    from sqlalchemy import select

    from gateway.db import transaction
    from gateway.models import Member
    from gateway.services import ledger

    with transaction(gws["fashion"].sessions) as s:
        for m in s.scalars(select(Member).limit(50)):
            assert ledger.ledger_balance(s, m.id) == m.balance
        assert ledger.unbalanced_txns(s) == []
    # the consent log written in bulk is a valid hash chain of signed receipts
    from gateway.models import ConsentLogEntry
    from gateway.services import logs

    with transaction(gws["fashion"].sessions) as s:
        assert logs.verify(s, ConsentLogEntry)


def test_brand_streams_come_from_the_whole_brand_id() -> None:
    # cafe and cinema share a first letter; their streams must not coincide (they once did)
    draws = {b: population.brand_rng(7, 404, b).random(8) for b in ("cafe", "cinema", "fashion", "grocery")}
    assert not np.allclose(draws["cafe"], draws["cinema"])
    assert len({tuple(v) for v in draws.values()}) == len(draws)
    assert np.array_equal(population.brand_rng(7, 404, "cafe").random(8), draws["cafe"])  # stable
    assert not np.array_equal(population.brand_rng(8, 404, "cafe").random(8), draws["cafe"])  # and seeded
    # a brand behaves the same whichever other brands are simulated with it
    alone = population.generate(seed=5, size="tiny", brands=["cinema"]).brands[0]
    both = population.generate(seed=5, size="tiny", brands=["cafe", "cinema"]).brands[1]
    assert both.spec.brand_id == "cinema"
    assert np.array_equal(alone.p_member, both.p_member) and np.array_equal(alone.p_amount, both.p_amount)


def test_held_out_windows_start_after_the_training_labels_and_end_in_the_history() -> None:
    from datetime import timedelta

    for task, label_days in features.LABEL_DAYS.items():
        windows = population.held_out_as_ofs(label_days)
        assert windows[0] == population.TRAIN_AS_OF + timedelta(days=label_days)
        assert all(t + timedelta(days=label_days) <= population.END for t in windows)
        assert all(b - a == timedelta(days=30) for a, b in zip(windows, windows[1:]))
        assert len(windows) == {"redeem": 5, "churn": 1}[task]


def test_simulated_history_is_added_after_live_rows(tmp_path: Path) -> None:
    """The demo adds the population to gateways that already serve members: ids continue, the
    consent log's chain continues, the ledger stays balanced; the same population twice is refused."""
    from sqlalchemy import func, select

    from gateway.db import transaction
    from gateway.models import ConsentLogEntry, Member
    from gateway.services import logs

    first = population.populate(tmp_path / "a", seed=3, size="tiny", brands=["cafe"])
    gw = population._bare_gateway(tmp_path / "a", "cafe")
    population.populate(tmp_path / "b", seed=4, size="tiny", brands=["cafe"], gateways={"cafe": gw})
    n = first["brands"][0]["counts"]["members"]
    with gw.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Member)) == 2 * n
    assert population.check_invariants(gw.engine) == {k: 0 for k in population.check_invariants(gw.engine)}
    with transaction(gw.sessions) as s:
        assert logs.verify(s, ConsentLogEntry)
    with pytest.raises(RuntimeError, match="already in the gateway database"):
        population.populate(tmp_path / "c", seed=4, size="tiny", brands=["cafe"], gateways={"cafe": gw})


def test_campaign_targeting_only_marketing_consented(alliance, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from federation import models, scoring
    from federation.releases import write_release
    from gateway.db import transaction
    from gateway.models import Consent, Member
    from gateway.services import consent, members
    from privacy.receipts import Purpose

    _, gws, manifest, _ = alliance
    gw = gws["fashion"]
    rng = np.random.default_rng(0)
    params = {"w": rng.normal(size=len(features.FEATURE_NAMES)).astype(np.float32), "b": np.zeros(1, np.float32)}
    path, _ = write_release(tmp_path, model_bytes=models.serialise_logreg(params, list(features.FEATURE_NAMES)),
                            model_format="alliance.logreg/1", fields={
                                "task": "redeem", "model": "logreg", "strategy": "fedavg", "data_source": "gateway",
                                "feature_names": list(features.FEATURE_NAMES), "num_rounds": 1, "rounds_completed": 1,
                                "participating_brands": ["fashion"], "privacy": {"guarantee": "none"},
                                "secure_aggregation": {"enabled": False}, "metrics_per_round": [], "final_metrics": {}})
    model = scoring.load_model(path)
    rows = scoring.campaign_targets(gw.engine, model, as_of=manifest["eval_as_of"])
    with gw.engine.connect() as conn:
        mkt = {r for (r,) in conn.execute(select(Member.member_ref).join(Consent, Consent.member_id == Member.id)
                                          .where(Consent.purpose == "marketing", Consent.granted.is_(True)))}
    refs = [r["member_ref"] for r in rows]
    assert refs and set(refs) <= mkt
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True)
    # withdraw marketing for the top target: it disappears from the next campaign
    with transaction(gw.sessions) as s:
        consent.set_consent(s, gw, members.get_by_ref(s, refs[0]), Purpose.MARKETING, False, "app", gw.now())
    again = [r["member_ref"] for r in scoring.campaign_targets(gw.engine, model, as_of=manifest["eval_as_of"])]
    assert refs[0] not in again and len(again) == len(refs) - 1
    # the training-consent scoring path is separate: scoring with marketing never returns non-consented ones
    all_scores = scoring.score_members(gw.engine, model, as_of=manifest["eval_as_of"], purpose="marketing")
    assert set(all_scores) <= mkt - {refs[0]}


@pytest.mark.slow
def test_short_simulation_on_gateway_source_release_audited_and_anchored(alliance, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The ServerApp, given the brands' gateways, publishes its release: audit entry and anchor."""
    from federation import models
    from federation.releases import RELEASE_ANCHOR_KIND, record_digest, releases_root
    from federation.simulation import simulate
    from gateway.db import transaction
    from gateway.models import AuditLogEntry
    from gateway.services import logs

    la, gws, manifest, map_path = alliance
    ov = {"data-source": "gateway", "gateway-map": str(map_path), "task": "redeem", "num-rounds": 3, "local-epochs": 2}
    rec = simulate(ov, 3, release_dir=tmp_path, gateways=gws)
    assert rec["rounds_completed"] == 3 and sorted(rec["participating_brands"]) == sorted(BRANDS)
    # every ClientApp recorded each round's reads in its own gateway, under the run and round
    from sqlalchemy import select

    from gateway.models import Processing

    for b in BRANDS:
        with gws[b].engine.connect() as conn:
            refs = set(conn.execute(select(Processing.ref).where(Processing.kind == "training")).scalars())
        assert {f"run:{rec['run_id']}:round:{r}:{stage}" for r in (1, 2, 3) for stage in ("train", "evaluate")} <= refs, refs
    brands = data.all_brands(ov, 3)
    assert set(rec["metrics_per_round"][-1]["per_brand"]) == set(BRANDS)  # each brand's AUC, and no count of theirs
    X = np.concatenate([b.X_test for b in brands])
    y = np.concatenate([b.y_test for b in brands])
    blob = (Path(rec["_path"]).parent / rec["model_file"]).read_bytes()
    auc = models.roc_auc(y, models.lr_predict(models.deserialise_logreg(blob), X))
    assert auc > 0.6, auc
    out = rec["_published"]
    assert out == json.loads((tmp_path / f"{rec['model_version']}.published.json").read_text())
    digest = record_digest({k: v for k, v in rec.items() if not k.startswith("_")})
    for b in BRANDS:
        gw = gws[b]
        with transaction(gw.sessions) as s:
            entries = [json.loads(e.payload) for e in logs.entries(s, AuditLogEntry)]
            assert logs.verify(s, AuditLogEntry)
        rel = [e for e in entries if e["action"] == "model.released"]
        assert len(rel) == 1
        d = rel[0]["details"]
        assert d["model_sha256"] == rec["model_sha256"] and d["record_digest"] == digest
        assert d["participating_brands"] == rec["participating_brands"] and d["rounds"] == 3
        assert d["guarantee"] == "none" and "auc_pooled" in d["metrics"]
        assert [e for e in entries if e["action"] == "model-releases.anchored"][0]["details"]["tx_hash"] == out[b]["tx_hash"]
        period, anchor = gw.alliance.anchor.latest(gw.brand_address, RELEASE_ANCHOR_KIND)
        assert period == 1 and anchor.size == 1
        assert anchor.root == releases_root([digest]) and anchor.root.hex() == out[b]["root"]
        assert gw.alliance.anchor.is_anchored(gw.brand_address, RELEASE_ANCHOR_KIND, 1, releases_root([digest]))
    # every brand adapted the model on its own rows after the last round (the read recorded), kept its
    # personal model in its own database, and its audit entry names the one the release records
    from federation import scoring
    from gateway.services import personal

    uses = rec["personalisation"]["brands"]
    assert set(uses) == set(BRANDS)
    for b in BRANDS:
        gw = gws[b]
        with gw.engine.connect() as conn:
            refs = set(conn.execute(select(Processing.ref).where(Processing.kind == "training")).scalars())
            held = personal.load(conn, rec["model_sha256"])
        assert f"run:{rec['run_id']}:round:3:personalise" in refs
        assert held is not None and models.sha256_hex(held) == uses[b]["model_sha256"] and uses[b]["kept"] is True
        with transaction(gw.sessions) as s:
            released = [json.loads(e.payload) for e in logs.entries(s, AuditLogEntry) if "model.released" in e.payload]
        assert released[0]["details"]["personal_model"] == uses[b]
        mine = scoring.for_brand(scoring.load_model(rec["_path"]), gw.engine, b)
        assert mine.uses == uses[b]["uses"] and mine.personal is not None and mine.personal.sha256 == uses[b]["model_sha256"]


def test_a_release_is_not_published_without_every_participating_gateway(alliance, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from federation.releases import publish_release

    _, gws, _, _ = alliance
    record = {"participating_brands": ["fashion", "somebody-else"], "model_version": "x", "model_sha256": "00",
              "task": "redeem", "model": "logreg", "strategy": "fedavg", "rounds_completed": 1, "num_rounds": 1}
    with pytest.raises(ValueError, match="somebody-else"):
        publish_release(record, {"fashion": gws["fashion"]})
