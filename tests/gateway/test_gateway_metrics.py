"""GET /metrics: Prometheus exposition for an operator key, counting requests by route template and
reading the outbox, the chain head and the anchors at scrape time; no reference ever a label."""

from __future__ import annotations

from harness import consent, enrol, link_wallet, new_wallet, purchase, queue_exchange, start_world_brand
from prometheus_client.parser import text_string_to_metric_families


def scrape(brand) -> dict[tuple[str, tuple], float]:
    r = brand.client.get("/metrics", headers=brand.as_("operator"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain"), r.text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in text_string_to_metric_families(r.text) for s in family.samples}


def test_metrics_count_requests_and_read_the_outbox_chain_and_anchors(world, tmp_path, clock):
    brand = start_world_brand(world, "metered", 10, clock=clock)
    try:
        assert brand.client.get("/metrics").status_code == 401
        assert brand.client.get("/metrics", headers=brand.as_("pos")).status_code == 403
        m = enrol(brand, "+8613600000077")
        assert purchase(brand, m["member_ref"], 10_000, "till-1", clock.now).status_code == 201
        assert purchase(brand, m["member_ref"], 10_000, "till-1", clock.now).status_code == 200  # a replay
        assert brand.client.get(f"/v1/members/{m['member_ref']}", headers=brand.as_("operator")).status_code == 200
        consent(brand, m, "alliance_exchange")
        link_wallet(brand, m, new_wallet())
        queue_exchange(brand, m, 3, "waiting")  # stored, not yet sent
        clock.advance(minutes=5)
        r = brand.client.post("/v1/admin/anchors", json={"kind": "consent-log"}, headers=brand.as_("operator"))
        assert r.status_code == 200 and r.json()["anchored"], r.text
        clock.advance(seconds=90)
        samples = scrape(brand)
        route = ("method", "POST"), ("route", "/v1/purchases")
        assert samples[("gateway_requests_total", (*route, ("status", "201")))] == 1
        assert samples[("gateway_requests_total", (*route, ("status", "200")))] == 1
        assert samples[("gateway_request_seconds_count", route)] == 2
        member_route = (("method", "GET"), ("route", "/v1/members/{member_ref}"), ("status", "200"))
        assert samples[("gateway_requests_total", member_route)] == 1
        assert samples[("gateway_outbox_pending", (("kind", "exchange"),))] == 1
        assert samples[("gateway_outbox_pending", (("kind", "redemption"),))] == 0
        assert samples[("gateway_outbox_oldest_pending_seconds", (("kind", "exchange"),))] >= 5 * 60
        assert 90 <= samples[("gateway_anchor_age_seconds", (("log", "consent-log"),))] < 5 * 60
        assert ("gateway_chain_head_age_seconds", ()) in samples
        text = brand.client.get("/metrics", headers=brand.as_("operator")).text
        assert m["member_ref"] not in text and "+86136" not in text
    finally:
        brand.close()
