"""Webhooks to the brand's own systems, through HTTP on SQLite and PostgreSQL, posted to a real HTTP
server: subscriptions per event type, deliveries signed by the Standard Webhooks specification and
verified with its library, retried with back-off, logged, replayed with the same id, a rotated
secret; references in the payload, never personal data; private addresses refused by default."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from harness import enrol, maintenance, start_local_brand
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


class Receiver:
    """An HTTP endpoint of "the brand's CRM": records what it is sent, answers the queued statuses (200 after)."""

    def __init__(self):
        self.received: list[tuple[dict, bytes]] = []
        self.answers: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.answers.pop(0) if receiver.answers else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/loyalty"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def brand(database_url, tmp_path, clock):
    b = start_local_brand(tmp_path, "shop", database_url, clock=clock, member_token_days=1000, webhook_allow_private=True)
    b.client.put("/v1/admin/rewards/mug", json={"kind": "good", "name": "Mug", "points_price": 10, "available_from": clock.now.isoformat()},
                 headers=b.as_("operator"))
    yield b
    b.close()


def subscribe(brand, url: str, event_types: list[str]) -> dict:
    r = brand.client.post("/v1/admin/webhooks", json={"url": url, "event_types": event_types, "description": "CRM"},
                          headers=brand.as_("operator"))
    assert r.status_code == 201, r.text
    return r.json()


def order(brand, member, key: str) -> dict:
    r = brand.client.post("/v1/me/reward-orders", json={"reward": "mug"}, headers=member["auth"] | {"Idempotency-Key": key})
    assert r.status_code == 201, r.text
    return r.json()


def log(brand, sub_id: int) -> list[dict]:
    r = brand.client.get(f"/v1/admin/webhooks/{sub_id}/deliveries", headers=brand.as_("operator"))
    assert r.status_code == 200, r.text
    return r.json()


def test_signed_deliveries_per_event_type_with_references_only(brand, receiver):
    sub = subscribe(brand, receiver.url, ["reward_order.granted", "reward_order.shipped"])
    assert sub["secret"].startswith("whsec_")
    listed = brand.client.get("/v1/admin/webhooks", headers=brand.as_("operator")).json()
    assert [s["id"] for s in listed] == [sub["id"]] and listed[0]["secret"] is None  # shown once
    m = enrol(brand, "+8613800000301", name="Mei Lin")
    placed = order(brand, m, "o1")
    brand.client.post(f"/v1/admin/reward-orders/{placed['order_ref']}/status", json={"status": "shipped"}, headers=brand.as_("operator"))
    brand.client.post(f"/v1/admin/reward-orders/{placed['order_ref']}/status", json={"status": "delivered"}, headers=brand.as_("operator"))

    assert maintenance(brand)["webhooks"] == {"delivered": 2, "retrying": 0, "failed": 0}
    signer = Webhook(sub["secret"])
    events = [signer.verify(body, headers) for headers, body in receiver.received]  # raises if a signature is wrong
    assert [(e["type"], e["data"]["status"]) for e in events] == [("reward_order.granted", "ordered"), ("reward_order.shipped", "shipped")]
    assert events[0]["data"] == {"order_ref": placed["order_ref"], "member_ref": m["member_ref"], "reward": "mug", "kind": "good",
                                 "points": 10, "status": "ordered"}
    for headers, body in receiver.received:
        assert b"Mei" not in body and b"8613800000301" not in body and headers["webhook-id"].startswith("msg_")
    # A forged or altered body does not verify.
    headers, body = receiver.received[0]
    with pytest.raises(WebhookVerificationError):
        signer.verify(body.replace(b'"points":10', b'"points":99'), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 43 + "=").verify(body, headers)
    assert [(d["event_type"], d["status"], [a["status_code"] for a in d["log"]]) for d in log(brand, sub["id"])] == [
        ("reward_order.shipped", "delivered", [200]), ("reward_order.granted", "delivered", [200])]
    assert maintenance(brand)["webhooks"]["delivered"] == 0  # each once


def test_retries_with_back_off_then_replay_with_the_same_id(brand, receiver, clock):
    sub = subscribe(brand, receiver.url, ["reward_order.granted"])
    m = enrol(brand, "+8613800000311")
    receiver.answers = [500, 503]
    order(brand, m, "o1")
    assert maintenance(brand)["webhooks"] == {"delivered": 0, "retrying": 1, "failed": 0}
    assert maintenance(brand)["webhooks"]["retrying"] == 0  # not due yet: 5 s back-off
    clock.advance(seconds=6)
    assert maintenance(brand)["webhooks"]["retrying"] == 1  # 503; next in 30 s
    clock.advance(seconds=20)
    assert maintenance(brand)["webhooks"] == {"delivered": 0, "retrying": 0, "failed": 0}
    clock.advance(seconds=11)
    assert maintenance(brand)["webhooks"]["delivered"] == 1
    [delivery] = log(brand, sub["id"])
    assert [a["status_code"] for a in delivery["log"]] == [500, 503, 200] and delivery["attempts"] == 3
    ids = {h["webhook-id"] for h, _ in receiver.received}
    assert len(ids) == 1 and len(receiver.received) == 3  # the same message each time: the receiver deduplicates on its id

    r = brand.client.post(f"/v1/admin/webhook-deliveries/{delivery['msg_id']}/replay", headers=brand.as_("operator"))
    assert r.status_code == 200 and r.json()["status"] == "pending"
    assert maintenance(brand)["webhooks"]["delivered"] == 1
    assert receiver.received[-1][0]["webhook-id"] == delivery["msg_id"]
    Webhook(sub["secret"]).verify(receiver.received[-1][1], receiver.received[-1][0])
    assert brand.client.post("/v1/admin/webhook-deliveries/msg_" + "0" * 32 + "/replay", headers=brand.as_("operator")).status_code == 404


def test_an_endpoint_that_never_answers_fails_after_the_schedule(brand, clock):
    dead = Receiver()
    url = dead.url
    dead.close()  # nobody listens there any more
    sub = subscribe(brand, url, ["reward_order.granted"])
    order(brand, enrol(brand, "+8613800000321"), "o1")
    outcomes = []
    for _ in range(10):
        outcomes.append(maintenance(brand)["webhooks"])
        clock.advance(hours=7)
    assert sum(o["retrying"] for o in outcomes) == 8 and sum(o["failed"] for o in outcomes) == 1
    [delivery] = log(brand, sub["id"])
    assert delivery["status"] == "failed" and len(delivery["log"]) == 9 and all(a["error"] == "ConnectError" for a in delivery["log"])


def test_a_rotated_secret_signs_later_deliveries(brand, receiver):
    sub = subscribe(brand, receiver.url, ["reward_order.granted"])
    rotated = brand.client.post(f"/v1/admin/webhooks/{sub['id']}/secret", headers=brand.as_("operator")).json()
    assert rotated["secret"] != sub["secret"] and rotated["secret_version"] == 2
    order(brand, enrol(brand, "+8613800000331"), "o1")
    maintenance(brand)
    headers, body = receiver.received[-1]
    Webhook(rotated["secret"]).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(sub["secret"]).verify(body, headers)
    # Inactive: nothing more is queued for it.
    change = brand.client.put(f"/v1/admin/webhooks/{sub['id']}", json={"url": receiver.url, "event_types": ["reward_order.granted"],
                                                                       "active": False}, headers=brand.as_("operator"))
    assert change.status_code == 200 and not change.json()["active"]
    order(brand, enrol(brand, "+8613800000332"), "o2")
    assert maintenance(brand)["webhooks"]["delivered"] == 0


def test_bad_subscriptions_are_refused_with_a_reason(database_url, tmp_path, clock):
    b = start_local_brand(tmp_path, "strict", database_url, clock=clock)  # private addresses not allowed (the default)
    try:
        def attempt(url, types=("coupon.used",)):
            return b.client.post("/v1/admin/webhooks", json={"url": url, "event_types": list(types)}, headers=b.as_("operator"))

        for url, why in [("http://127.0.0.1:8080/x", "non-public"), ("http://169.254.169.254/latest", "non-public"),
                         ("http://localhost/x", "non-public"), ("ftp://example.com/x", "http(s)"),
                         ("https://user:pw@example.com/x", "credentials")]:
            r = attempt(url)
            assert r.status_code == 400 and why in r.json()["detail"], (url, r.text)
        assert attempt("https://crm.example/x", types=("points.stolen",)).status_code == 422
        assert attempt("https://crm.example/x", types=()).status_code == 422
        assert b.client.post("/v1/admin/webhooks", json={"url": "https://crm.example/x", "event_types": ["coupon.used"]},
                             headers=b.as_("pos")).status_code == 403
        assert b.client.get("/v1/admin/webhooks/99/deliveries", headers=b.as_("operator")).status_code == 404
    finally:
        b.close()


def test_runs_at_once_post_each_delivery_once(brand, receiver, clock):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from gateway.services import webhooks

    subscribe(brand, receiver.url, ["reward_order.granted"])
    for i in range(8):
        order(brand, enrol(brand, f"+86138000003{40 + i}"), f"o{i}")
    start = threading.Barrier(4)

    def run(_):
        start.wait()
        return webhooks.deliver_due(brand.gw, clock.now)

    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(run, range(4)))
    assert sum(r["delivered"] for r in runs) == 8, runs
    assert len(receiver.received) == 8 and len({h["webhook-id"] for h, _ in receiver.received}) == 8


def test_erasure_takes_the_members_webhooks_and_notices_with_it(brand, receiver):
    """Delivered or not, what the gateway keeps of webhooks and notices about an erased member goes:
    their times would tie the account to events (the brand's own systems erase what they received)."""
    from gateway.models import Notice, WebhookDelivery

    sub = subscribe(brand, receiver.url, ["reward_order.granted"])
    gone, stays = enrol(brand, "+8613800000351"), enrol(brand, "+8613800000352")
    order(brand, gone, "g1")
    order(brand, stays, "s1")
    assert maintenance(brand)["webhooks"]["delivered"] == 2
    order(brand, gone, "g2")  # queued, not yet delivered
    assert brand.client.post(f"/v1/members/{gone['member_ref']}/erasure", headers=brand.as_("operator")).status_code == 200
    refs = [d["payload"]["data"]["member_ref"] for d in log(brand, sub["id"])]
    assert refs == [stays["member_ref"]]
    assert maintenance(brand)["webhooks"]["delivered"] == 0  # the queued one about the erased member is not sent
    with brand.gw.sessions() as session:
        assert session.query(Notice).count() == 1  # the remaining member's one; the erased member's two are gone
        assert all(gone["member_ref"] not in d.payload for d in session.query(WebhookDelivery))
