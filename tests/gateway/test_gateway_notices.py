"""Notices to members, through HTTP on SQLite and PostgreSQL: expiry reminders sent once per lot and
window, in wording that says which points, how many, the date and what they buy (P-31, P-32); a
coupon about to lapse; a reward ordered and shipped; a tier change. Only to active members whose
loyalty_core consent holds; a notifier that is down is tried again; nothing is lost or doubled."""

from __future__ import annotations

import pytest
from harness import consent, enrol, maintenance, purchase, start_local_brand
from sqlalchemy import select

from gateway.models import Notice
from gateway.notify import SmtpNotifier
from gateway.settings import SmtpSettings


@pytest.fixture
def brand(database_url, tmp_path, clock):
    b = start_local_brand(tmp_path, "shop", database_url, clock=clock, member_token_days=1000)
    yield b
    b.close()


def notices_to(brand, member) -> list:
    """What the development notifier sent the member, one-time codes left out."""
    to = brand.gw.pseudonymiser.normalise("phone", member["phone"])
    return [m for m in brand.gw.notifier.messages(to) if m.code is None]


def define(brand, code: str, **spec):
    body = {"kind": "good", "name": code.title(), "points_price": 100, "available_from": brand.gw.now().isoformat()} | spec
    r = brand.client.put(f"/v1/admin/rewards/{code}", json=body, headers=brand.as_("operator"))
    assert r.status_code == 200, r.text


def test_expiry_reminders_once_per_lot_and_window_in_plain_words(brand, clock):
    a = enrol(brand, "+8613800000201")  # 100 welcome points, expiring in 365 days
    clock.advance(days=10)
    earned = purchase(brand, a["member_ref"], 20_000, "p1", clock.now).json()["points"]  # expiring 10 days later
    withdrawn = enrol(brand, "+8613800000202")
    consent(brand, withdrawn, "loyalty_core", False)
    frozen = enrol(brand, "+8613800000203")
    assert brand.client.post(f"/v1/members/{frozen['member_ref']}/status", json={"status": "frozen", "reason": "test"},
                             headers=brand.as_("operator")).status_code == 200
    define(brand, "mug", points_price=250)
    define(brand, "yacht", points_price=10**6)

    assert maintenance(brand)["notices"]["reminders_queued"] == 0  # nothing within 30 days yet
    clock.advance(days=340)  # the welcome lot has 15 days left; the purchase lot 25
    run = maintenance(brand)["notices"]
    assert run["reminders_queued"] == 1 and run["sent"] == 1, run  # one message for both lots, nobody else
    [message] = notices_to(brand, a)
    assert message.channel == "sms"
    assert f"{100 + earned} points of your Shop points will expire" in message.text
    welcome_day = (clock.now.date()).fromordinal(clock.now.date().toordinal() + 15).isoformat()
    assert f"- 100 points expire at the end of {welcome_day} (UTC)" in message.text
    assert f"- {earned} points expire" in message.text
    assert "Mug (250 points)" in message.text and "Yacht" not in message.text  # what the balance buys
    assert message.subject == f"Shop: {100 + earned} points expire on {welcome_day}"
    assert notices_to(brand, withdrawn) == [] and notices_to(brand, frozen) == []

    # Again: nothing new, however often the job runs.
    assert maintenance(brand)["notices"]["reminders_queued"] == 0
    clock.advance(days=1)
    assert maintenance(brand)["notices"]["reminders_queued"] == 0
    assert len(notices_to(brand, a)) == 1
    # A lot that enters the window later gets its own reminder, naming only it.
    clock.advance(minutes=1)
    later = clock.now
    more = purchase(brand, a["member_ref"], 5_000, "p2", later).json()["points"]
    clock.advance(days=340)
    assert maintenance(brand)["notices"]["reminders_queued"] == 1
    newest = notices_to(brand, a)[-1]
    assert f"\n- {more} points expire" in newest.text and newest.text.count(" points expire at the end of") == 1
    assert notices_to(brand, withdrawn) == [] and notices_to(brand, frozen) == []


def test_order_shipping_coupon_and_tier_notices(brand, clock):
    m = enrol(brand, "+8613800000211")
    define(brand, "mug", points_price=60)
    define(brand, "voucher", kind="coupon", points_price=20, coupon_value_minor=500, coupon_min_spend_minor=2_000)
    mug = brand.client.post("/v1/me/reward-orders", json={"reward": "mug"}, headers=m["auth"] | {"Idempotency-Key": "o1"}).json()
    brand.client.post("/v1/me/reward-orders", json={"reward": "voucher"}, headers=m["auth"] | {"Idempotency-Key": "o2"})
    assert brand.client.post(f"/v1/admin/reward-orders/{mug['order_ref']}/status", json={"status": "shipped"},
                             headers=brand.as_("operator")).status_code == 200
    sent = maintenance(brand)["notices"]
    assert sent["sent"] == 3, sent
    texts = [n.text for n in notices_to(brand, m)]
    assert texts[0].startswith("You ordered Mug for 60 points.") and "when it ships" in texts[0]
    assert texts[1].startswith("You ordered Voucher for 20 points.") and "Its code is in your orders" in texts[1]
    assert texts[2] == "Your Mug has shipped."
    assert not any(n.code for n in notices_to(brand, m))  # a coupon's code never travels in a notice

    clock.advance(days=5, hours=12)  # the 7-day coupon has a day and a half left
    assert maintenance(brand)["notices"]["reminders_queued"] == 1
    assert maintenance(brand)["notices"]["reminders_queued"] == 0
    last = notices_to(brand, m)[-1]
    assert "coupon worth 500" in last.text and "at least 2000" in last.text

    # Spending enough for the next tier changes it, and the member is told.
    clock.advance(minutes=1)
    assert purchase(brand, m["member_ref"], 10**7, "big", clock.now).status_code == 201
    maintenance(brand)
    assert "tier changed from" in notices_to(brand, m)[-1].text
    # The member's copy of their data lists what they were sent (kinds and amounts, never a code).
    exported = brand.client.get("/v1/me/export", headers=m["auth"]).json()["notices"]
    assert [(n["kind"], n["status"]) for n in exported] == [("reward_ordered", "sent"), ("reward_ordered", "sent"),
                                                           ("reward_shipped", "sent"), ("coupon_expiring", "sent"),
                                                           ("tier_changed", "sent")]


def test_a_notifier_that_is_down_is_tried_again(database_url, tmp_path, clock):
    """A real SMTP notifier pointed at a port nobody listens on: the notice stays pending (nothing
    lost), is tried on later runs, and fails for good after three tries."""
    b = start_local_brand(tmp_path, "mail", database_url, clock=clock, member_token_days=1000)
    try:
        m = enrol(b, "+8613800000221", identifiers={"phone": "+8613800000221", "email": "li@example.com"})
        b.gw.notifier = SmtpNotifier(SmtpSettings(host="127.0.0.1", port=1, sender="shop@example.com", starttls=False, timeout_s=1))
        b.client.put("/v1/admin/rewards/mug", json={"kind": "digital", "name": "Song", "points_price": 10,
                                                   "available_from": clock.now.isoformat()}, headers=b.as_("operator"))
        assert b.client.post("/v1/me/reward-orders", json={"reward": "mug"}, headers=m["auth"] | {"Idempotency-Key": "o"}).status_code == 201
        runs = [maintenance(b)["notices"] for _ in range(4)]
        assert [(r["sent"], r["failed"]) for r in runs] == [(0, 1), (0, 1), (0, 1), (0, 0)]
        with b.gw.sessions() as session:
            [notice] = session.scalars(select(Notice)).all()
        assert (notice.status, notice.attempts) == ("failed", 3)
    finally:
        b.close()


def test_runs_at_once_send_each_notice_once_and_a_dead_runs_claim_is_freed(brand, clock):
    """The schedule and an operator's maintenance (or several worker processes) send at the same
    moment: each notice goes out once. A run that died holding notices gives them back after the lease."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from gateway.notify import DevNotifier
    from gateway.services import notices

    class SlowPhone(DevNotifier):  # the development notifier, as slow as a real provider: runs overlap
        def send(self, message):
            time.sleep(0.005)
            super().send(message)

    brand.gw.notifier = SlowPhone(brand.gw.settings.notifications_dir, brand.gw.settings.brand_id)
    define(brand, "song", kind="digital", points_price=10)
    ms = [enrol(brand, f"+86138000003{i:02d}") for i in range(12)]
    for i, m in enumerate(ms):
        assert brand.client.post("/v1/me/reward-orders", json={"reward": "song"}, headers=m["auth"] | {"Idempotency-Key": f"s{i}"}).status_code == 201
    start = threading.Barrier(4)

    def run(_):
        start.wait()
        return notices.send_pending(brand.gw, clock.now)

    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(run, range(4)))
    assert sum(r["sent"] for r in runs) == 12, runs
    assert [len(notices_to(brand, m)) for m in ms] == [1] * 12

    late = enrol(brand, "+8613800000399")
    brand.client.post("/v1/me/reward-orders", json={"reward": "song"}, headers=late["auth"] | {"Idempotency-Key": "late"})
    with brand.gw.sessions.begin() as session:  # a run claimed it, then its process died
        session.query(Notice).filter(Notice.status == "pending").update({"status": "sending", "sent_at": clock.now})
    assert notices.send_pending(brand.gw, clock.now)["sent"] == 0
    clock.advance(minutes=6)
    assert notices.send_pending(brand.gw, clock.now)["sent"] == 1
    assert len(notices_to(brand, late)) == 1
