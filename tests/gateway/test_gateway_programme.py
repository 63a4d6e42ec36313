"""The programme (earn rules, tiers, campaigns) changed by the operator through the API, without a
restart: versioned, audited, refused when edited from a stale version, and in force for the very next
purchase in every process on the database (two gateways on one database stand for two workers)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from harness import Brand, enrol, purchase, start_local_brand
from sqlalchemy import select

from gateway.app import create_app
from gateway.models import AuditLogEntry
from gateway.runtime import build_gateway

@pytest.fixture
def brand(database_url, tmp_path, clock):
    b = start_local_brand(tmp_path, "prog", database_url, clock=clock, member_token_days=1000)
    yield b
    b.close()


def _programme(brand) -> dict:
    r = brand.client.get("/v1/admin/programme", headers=brand.as_("operator"))
    assert r.status_code == 200, r.text
    return r.json()


def _change(brand, version: int, programme: dict, note: str = "test", role: str = "operator"):
    return brand.client.put("/v1/admin/programme", headers=brand.as_(role),
                            json={"expected_version": version, "note": note, "programme": programme})


def _buy(brand, member, amount: int, key: str, clock, **extra) -> dict:
    clock.advance(minutes=2)
    r = purchase(brand, member["member_ref"], amount, key, clock.now, **extra)
    assert r.status_code == 201, r.text
    return r.json()


def test_an_earn_rule_and_a_campaign_apply_to_the_next_purchase_in_every_process(brand, clock, tmp_path):
    member = enrol(brand, "+8613800000001")
    _buy(brand, member, 10_000, "first", clock)  # the first order's multiplier is spent
    assert _buy(brand, member, 10_000, "before", clock)["points"] == 100  # 1 point per yuan

    # A second process on the same database: it has read the programme already, and gets no restart.
    gw = build_gateway(brand.gw.settings)
    gw.clock = clock
    other = Brand(gw, TestClient(create_app(gateway=gw, background=False)), brand.keys)
    assert _buy(other, member, 10_000, "other-before", clock)["points"] == 100

    now = _programme(brand)
    assert now["version"] == 0 and now["programme"]["earn"]["currencies"]["CNY"]["points_per_unit"] == 1
    edited = now["programme"]
    edited["earn"]["currencies"]["CNY"]["points_per_unit"] = 3
    edited["campaigns"] = [{"code": "double-week", "name": "Double points week", "multiplier_pct": 200, "channels": ["online"],
                            "starts_at": (clock.now - timedelta(hours=1)).isoformat(), "ends_at": (clock.now + timedelta(days=7)).isoformat()}]
    r = _change(brand, 0, edited, "spring: 3 points per yuan, double online")
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 1

    assert _buy(other, member, 10_000, "after", clock)["points"] == 300  # the other process: the new rule at once
    online = _buy(other, member, 10_000, "online", clock, channel="online")
    assert (online["points"], online["campaign"]) == (600, "double-week")
    clock.advance(days=8)  # the campaign is over
    assert _buy(brand, member, 10_000, "later", clock, channel="online")["points"] == 300

    # Versioned and audited: both versions readable, the change in the audit log with its digest.
    versions = brand.client.get("/v1/admin/programme/versions", headers=brand.as_("auditor")).json()
    assert [v["version"] for v in versions] == [1, 0]
    assert versions[0]["note"] == "spring: 3 points per yuan, double online" and versions[0]["actor"].startswith("apikey:")
    with brand.gw.sessions() as session:
        entries = [json.loads(p) for p in session.scalars(select(AuditLogEntry.payload))]
    change = next(e for e in entries if e["action"] == "programme.changed")
    assert change["details"]["version"] == 1 and change["details"]["digest"] == versions[0]["digest"]
    other.close()


def test_a_stale_or_invalid_change_is_refused_and_changes_nothing(brand):
    programme = _programme(brand)["programme"]
    assert _change(brand, 0, programme | {"tier_grace_days": 30}).status_code == 200
    stale = _change(brand, 0, programme | {"tier_grace_days": 60})  # edited from version 0, but 1 is in force
    assert stale.status_code == 409 and "version 1" in stale.json()["detail"]

    bad_campaign = programme | {"campaigns": [{"code": "x1", "name": "Backwards", "multiplier_pct": 200,
                                               "starts_at": "2026-03-05T00:00:00Z", "ends_at": "2026-03-04T00:00:00Z"}]}
    assert _change(brand, 1, bad_campaign).status_code == 422
    moved_home = json.loads(json.dumps(programme))
    moved_home["earn"]["currencies"] = {"USD": {"points_per_unit": 1, "minor_per_unit": 100}}
    refused = _change(brand, 1, moved_home)
    assert refused.status_code == 400 and "home currency stays CNY" in refused.json()["detail"]
    assert _change(brand, 1, programme, role="pos").status_code == 403
    assert _change(brand, 1, programme | {"unknown": 1}).status_code == 422
    assert _programme(brand)["version"] == 1 and _programme(brand)["programme"]["tier_grace_days"] == 30
