"""Processings that rely on consent, on SQLite and PostgreSQL: the operator's campaign targeting (marketing
consent only, every target recorded with the consent it relied on), federated training reads recorded by
the gateway data source (a member set stored once per distinct set), and the auditor's paged listing."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from harness import consent, enrol, purchase, start_local_brand, write_release
from sqlalchemy import func, select

from gateway.models import MemberSet, Processing


@pytest.fixture
def brand(database_url, tmp_path, clock):
    write_release(tmp_path / "releases")
    b = start_local_brand(tmp_path, "shop", database_url, clock=clock, releases_dir=tmp_path / "releases")
    yield b
    b.close()


def _members(brand, clock, n: int = 4) -> list[dict]:
    out = []
    members = [enrol(brand, f"+86136{i:08d}") for i in range(n)]
    clock.advance(days=n + 1)  # their purchases below go back up to n days
    for i, m in enumerate(members):
        r = purchase(brand, m["member_ref"], 10_000 * (i + 1), f"p{i}", clock.now - timedelta(days=i + 1))
        assert r.status_code == 201, r.text
        out.append(m)
    return out


def _seq(brand, member: dict, purpose: str) -> int:
    history = brand.client.get("/v1/me/consents/history", headers=member["auth"]).json()
    return [h["seq"] for h in history if h["consent"]["purpose"] == purpose][-1]


def _listing(brand, limit: int = 5000, **params) -> list[dict]:
    items, since = [], None
    while True:
        r = brand.client.get("/v1/audit/processings", params={"limit": limit, **params, **({"since": since} if since else {})},
                             headers=brand.as_("auditor"))
        assert r.status_code == 200, r.text
        items += r.json()["items"]
        since = r.json()["next"]
        if since is None:
            return items


def test_campaign_targets_only_marketing_consented_and_records_each(brand, clock):
    ms = _members(brand, clock)
    for m in ms[:3]:
        consent(brand, m, "marketing")
    consent(brand, ms[2], "marketing", granted=False)
    r = brand.client.post("/v1/campaigns/targets", json={"top_k": 10}, headers=brand.as_("operator"))
    assert r.status_code == 200, r.text
    body = r.json()
    refs = [t["member_ref"] for t in body["targets"]]
    assert set(refs) == {ms[0]["member_ref"], ms[1]["member_ref"]} and body["count"] == 2
    assert [t["score"] for t in body["targets"]] == sorted((t["score"] for t in body["targets"]), reverse=True)
    assert body["model_version"] == "redeem-logreg-gateway-v1" and len(body["model_sha256"]) == 64
    listed = _listing(brand, kind="campaign")
    assert {(i["ref"], i["member_ref"], i["consent_seq"]) for i in listed} == {
        (body["campaign_ref"], m["member_ref"], _seq(brand, m, "marketing")) for m in ms[:2]}
    assert all(i["purpose"] == "marketing" and i["decided_at"] == body["decided_at"] and i["status"] is None for i in listed)
    best = brand.client.post("/v1/campaigns/targets", json={"top_k": 1, "model_version": body["model_version"]},
                             headers=brand.as_("operator")).json()
    assert [t["member_ref"] for t in best["targets"]] == refs[:1]
    actions = [e["payload"]["action"] for e in brand.client.get("/v1/audit/logs/audit-log", headers=brand.as_("auditor")).json()["entries"]]
    assert actions.count("campaign.targeted") == 2


@pytest.mark.parametrize("body, status, says", [
    ({"top_k": 0}, 422, "top_k"),
    ({"top_k": "5"}, 422, "top_k"),
    ({"top_k": 1_000_000}, 422, "top_k"),
    ({"min_score": 2}, 422, "min_score"),
    ({"min_score": "NaN"}, 422, "min_score"),
    ({"model_version": "../../etc/passwd"}, 422, "model_version"),
    ({"model_version": "nope-v9"}, 404, "no release 'nope-v9'"),
    ({"top_k": 5, "member_ref": "x"}, 422, "member_ref"),
])
def test_campaign_bad_input_is_a_4xx_with_a_reason(brand, body, status, says):
    r = brand.client.post("/v1/campaigns/targets", json=body, headers=brand.as_("operator"))
    assert r.status_code == status, r.text
    assert says in r.text


def test_campaign_refuses_unusable_releases(brand, clock, tmp_path):
    future = (clock.now + timedelta(days=1)).isoformat()
    r = brand.client.post("/v1/campaigns/targets", json={"as_of": future}, headers=brand.as_("operator"))
    assert r.status_code == 400 and "future" in r.json()["detail"]
    release_dir = tmp_path / "releases"
    other = write_release(release_dir, feature_names=["a", "b"])  # v2: not the alliance feature definition
    r = brand.client.post("/v1/campaigns/targets", json={}, headers=brand.as_("operator"))  # the latest
    assert r.status_code == 409 and "feature definition" in r.json()["detail"], r.text
    record = json.loads(other.read_text())
    (release_dir / record["model_file"]).write_text("tampered")
    r = brand.client.post("/v1/campaigns/targets", json={"model_version": record["model_version"]}, headers=brand.as_("operator"))
    assert r.status_code == 409 and "SHA-256" in r.json()["detail"], r.text
    (release_dir / record["model_file"]).unlink()
    r = brand.client.post("/v1/campaigns/targets", json={"model_version": record["model_version"]}, headers=brand.as_("operator"))
    assert r.status_code == 409 and "model file" in r.json()["detail"], r.text
    with brand.gw.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Processing)) == 0  # nothing was targeted, nothing recorded
    brand.gw.settings.releases_dir = None
    r = brand.client.post("/v1/campaigns/targets", json={}, headers=brand.as_("operator"))
    assert r.status_code == 409 and "GATEWAY_RELEASES_DIR" in r.json()["detail"]


def test_training_reads_recorded_once_per_member_set_and_listed_in_pages(brand, clock):
    from federation import data

    ms = _members(brand, clock)
    for m in ms[:3]:
        consent(brand, m, "federated_training")
    url = brand.gw.settings.database_url
    as_of = clock.now.isoformat()
    for r in (1, 2):
        frames = data.read_for_training(url, [as_of], f"run:7:round:{r}:train")
        assert set(frames[0].member_refs) == {m["member_ref"] for m in ms[:3]}
    everyone = {m["member_ref"]: _seq(brand, m, "federated_training") for m in ms[:3]}  # the grants relied on
    consent(brand, ms[0], "federated_training", granted=False)
    data.read_for_training(url, [as_of], "run:7:round:3:train")
    with brand.gw.sessions() as session:
        assert session.scalar(select(func.count()).select_from(MemberSet)) == 2  # rounds 1 and 2 share one
    listed = _listing(brand, kind="training")
    by_round = {}
    for i in listed:
        by_round.setdefault(i["ref"], {})[i["member_ref"]] = i["consent_seq"]
    assert by_round == {"run:7:round:1:train": everyone, "run:7:round:2:train": everyone,
                        "run:7:round:3:train": {k: v for k, v in everyone.items() if k != ms[0]["member_ref"]}}
    # A campaign too: paging one item at a time walks every kind in order and misses nothing.
    consent(brand, ms[1], "marketing")
    assert brand.client.post("/v1/campaigns/targets", json={}, headers=brand.as_("operator")).status_code == 200
    whole = _listing(brand)
    assert [i["kind"] for i in whole] == ["training"] * 8 + ["campaign"]
    assert _listing(brand, limit=1) == whole == _listing(brand, limit=3)


@pytest.mark.parametrize("params, says", [
    ({"since": "training:12"}, "malformed cursor"),
    ({"since": "exchange:1.2"}, "malformed cursor"),
    ({"since": "nonsense"}, "malformed cursor"),
    ({"since": "exchange:9999999999999999999"}, "malformed cursor"),
    ({"kind": "campaign", "since": "training:1.1"}, "the cursor is of kind 'training'"),
])
def test_processings_listing_refuses_bad_filters(brand, params, says):
    r = brand.client.get("/v1/audit/processings", params=params, headers=brand.as_("auditor"))
    assert r.status_code == 400 and says in r.json()["detail"], r.text
    for bad in ({"limit": 0}, {"kind": "purchase"}):  # outside the schema (kind is an enum)
        r = brand.client.get("/v1/audit/processings", params=bad, headers=brand.as_("auditor"))
        assert r.status_code == 422 and r.json()["code"] == "invalid_request", r.text


def test_campaign_as_of_out_of_range_is_refused(brand):
    for as_of, says in (("0001-01-02T00:00:00Z", "before 1970"), ("9999-12-31T00:00:00Z", "future")):
        r = brand.client.post("/v1/campaigns/targets", json={"as_of": as_of}, headers=brand.as_("operator"))
        assert r.status_code == 400 and says in r.json()["detail"], r.text
    r = brand.client.post("/v1/campaigns/targets", json={"as_of": "9999-12-31T00:00:00"}, headers=brand.as_("operator"))
    assert r.status_code == 422 and "RFC 3339" in r.json()["detail"], r.text  # a time without its offset


def test_campaign_refuses_a_malformed_release_record(brand, tmp_path):
    release_dir = tmp_path / "releases"
    for name, text in (("list-v1", "[1, 2]"), ("broken-v1", "{not json"), ("bare-v1", '{"model_file": "x"}')):
        (release_dir / f"{name}.release.json").write_text(text)
        r = brand.client.post("/v1/campaigns/targets", json={"model_version": name}, headers=brand.as_("operator"))
        assert r.status_code == 409 and name in r.json()["detail"], r.text


def test_a_campaign_scores_with_the_brands_own_model_where_the_release_names_one(brand, clock, tmp_path):
    from federation import models, personalise
    from federation.releases import load_release, model_path
    from federation.releases import write_release as write
    from gateway.services import personal

    for m in _members(brand, clock):
        consent(brand, m, "marketing")
    ask = lambda version: brand.client.post("/v1/campaigns/targets", json={"top_k": 10, "model_version": version},  # noqa: E731
                                            headers=brand.as_("operator"))
    plain = ask("redeem-logreg-gateway-v1")
    assert plain.status_code == 200 and plain.json()["model_used"] == "global"
    # The next release of the same model names this brand's own model of it: here one that ranks the other way round.
    first = tmp_path / "releases" / "redeem-logreg-gateway-v1.release.json"
    record, blob = load_release(first), model_path(first, load_release(first)).read_bytes()
    own = personalise.PersonalModel("local-logreg", models.sha256_hex(blob), ((-1.0, "logreg", blob),))
    fields = {k: record[k] for k in ("task", "model", "strategy", "data_source", "feature_names", "num_rounds", "rounds_completed",
                                     "participating_brands", "privacy", "secure_aggregation", "metrics_per_round", "final_metrics")}
    write(tmp_path / "releases", model_bytes=blob, model_format=record["model_format"], fields=fields | {
        "personalisation": {"enabled": True, "brands": {"shop": {"uses": "local-logreg", "model_sha256": own.sha256, "kept": True}}}})
    r = ask("redeem-logreg-gateway-v2")
    assert r.status_code == 409 and "does not hold" in r.json()["detail"]  # named, but not in this brand's database: refused
    with brand.gw.engine.begin() as conn:
        personal.store(conn, global_sha256=models.sha256_hex(blob), task="redeem", choice="local-logreg", model=own.serialise())
    mine = ask("redeem-logreg-gateway-v2")
    assert mine.status_code == 200 and mine.json()["model_used"] == "local-logreg"
    assert [t["member_ref"] for t in mine.json()["targets"]] == [t["member_ref"] for t in plain.json()["targets"]][::-1]
    logged = [e["payload"] for e in brand.client.get("/v1/audit/logs/audit-log", headers=brand.as_("auditor")).json()["entries"]]
    assert [e["details"]["model_used"] for e in logged if e["action"] == "campaign.targeted"] == ["global", "local-logreg"]
