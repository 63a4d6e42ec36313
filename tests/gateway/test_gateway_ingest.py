"""Purchase ingest: a batch obeys exactly the rules of the same purchases sent one by one, and
concurrent single purchases grouped into shared transactions are each answered with their own
committed outcome."""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta, timezone

import httpx
from harness import Clock, db_balance, enrol, start_local_brand
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import event, select

from gateway.groupcommit import GroupCommit
from gateway.models import Member, PointLot, TierChange
from gateway.settings import EarnRules, TierRule

RULES = {
    "earn": EarnRules(daily_cap=3_000, member_day=None),
    "tiers": [TierRule(name="member", min_spend_minor=0, min_purchases=0, min_actions=0, earn_multiplier_pct=100),
              TierRule(name="silver", min_spend_minor=400_000, min_purchases=3, min_actions=99, earn_multiplier_pct=125),
              TierRule(name="gold", min_spend_minor=900_000, min_purchases=6, min_actions=99, earn_multiplier_pct=150)],
    "purchases_per_member_per_minute": 8,
    "max_purchase_minor": 2_000_000,
}
PHONES = ["+8613800000101", "+8613800000102", "+8613800000103"]
UNKNOWN_REF = "00000000-0000-0000-0000-000000000000"
_run = itertools.count()
ENROLLED_BEFORE = timedelta(days=5)  # the members enrol this long before the purchases are sent

EVENT = st.fixed_dictionaries({
    "member": st.integers(0, 3),  # 3: no such member; member 2 is frozen
    "by_identifier": st.booleans(),
    "amount_minor": st.integers(1, 2_500_000),
    "days_ago": st.integers(0, 9),  # members enrolled 5 days ago; the backdating window is 7 days
    "hours_ago": st.integers(0, 30),
    "offset": st.sampled_from(["+00:00", "+08:00", "-05:00"]),
    "eco": st.booleans(),
    "key": st.integers(0, 12),
    "repeat": st.booleans(),  # send the previous event again, key and body (a retry)
})


def _shop(tmp_path, name: str, clock: Clock):
    brand = start_local_brand(tmp_path / name, name, clock=clock, **RULES)
    members = [enrol(brand, phone, birthday="1990-%02d-15" % (clock.now + ENROLLED_BEFORE).month if i == 0 else None)
               for i, phone in enumerate(PHONES)]
    r = brand.client.post(f"/v1/members/{members[2]['member_ref']}/status", json={"status": "frozen", "reason": "fraud check"},
                          headers=brand.as_("operator"))
    assert r.status_code == 200, r.text
    return brand, members


def _bodies(events: list[dict], members: list[dict], now) -> list[dict]:
    bodies = []
    for e in events:
        if e["repeat"] and bodies:
            bodies.append(dict(bodies[-1]))
            continue
        when = (now - timedelta(days=e["days_ago"], hours=e["hours_ago"])).astimezone(timezone(timedelta(hours=int(e["offset"][:3]))))
        body = {"amount_minor": e["amount_minor"], "occurred_at": when.isoformat(), "eco": e["eco"], "idempotency_key": f"k{e['key']}"}
        if e["member"] == 3:
            body["member_ref"] = UNKNOWN_REF
        elif e["by_identifier"]:
            body |= {"identifier_kind": "phone", "identifier": PHONES[e["member"]]}
        else:
            body["member_ref"] = members[e["member"]]["member_ref"]
        bodies.append(body)
    return bodies


def _state(brand, members) -> list[tuple]:
    out = []
    with brand.gw.sessions() as session:
        for m in members:
            row = session.scalars(select(Member).where(Member.member_ref == m["member_ref"])).one()
            changes = session.execute(select(TierChange.from_tier, TierChange.to_tier).where(TierChange.member_id == row.id)
                                      .order_by(TierChange.id)).all()
            lots = session.execute(select(PointLot.amount, PointLot.remaining).where(PointLot.member_id == row.id)
                                   .order_by(PointLot.id)).all()
            out.append((row.balance, row.tier, row.purchase_count, row.earned_day, row.earned_today, row.downgrade_due_at is None,
                        changes, lots))
    return [state + (db_balance(brand, m["member_ref"]),) for state, m in zip(out, members, strict=True)]


def _event(member=0, amount_minor=250_000, days_ago=0, hours_ago=0, offset="+00:00", key=0, **extra) -> dict:
    return {"member": member, "by_identifier": False, "amount_minor": amount_minor, "days_ago": days_ago, "hours_ago": hours_ago,
            "offset": offset, "eco": False, "key": key, "repeat": False} | extra


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(events=st.lists(EVENT, min_size=1, max_size=30))
# A late event for a day that was the latest earlier in the batch: that day's points are not stored yet.
@example(events=[_event(hours_ago=26, key=1), _event(hours_ago=2, key=2), _event(hours_ago=25, key=3)])
# The same instant written at two offsets is one day of the brand's.
@example(events=[_event(days_ago=1, hours_ago=3, offset="+08:00", key=1), _event(hours_ago=1, key=2),
                 _event(days_ago=1, hours_ago=3, offset="-05:00", key=3)])
def test_a_batch_obeys_the_rules_of_one_by_one(tmp_path, events):
    """The same events at two identical brands: one sends them one by one, the other in one batch.
    Every event gets the same outcome (points, or the same refusal) and both books end identical:
    balances, tiers and their changes, the daily-cap counters, lots."""
    clock = Clock()
    run = next(_run)
    single, single_members = _shop(tmp_path, f"single{run}", clock)
    batch, batch_members = _shop(tmp_path, f"batch{run}", clock)
    clock.advance(days=ENROLLED_BEFORE.days)
    try:
        one_by_one = []
        for body in _bodies(events, single_members, clock.now):
            key = body.pop("idempotency_key")
            r = single.client.post("/v1/purchases", json=body, headers=single.as_("pos") | {"Idempotency-Key": key})
            assert r.status_code in (200, 201, 404, 400, 409, 422, 429, 403), r.text
            one_by_one.append((True, r.json()["points"]) if r.status_code in (200, 201) else (False, r.json()["code"]))
        r = batch.client.post("/v1/purchases/batch", json={"events": _bodies(events, batch_members, clock.now)},
                              headers=batch.as_("pos"))
        assert r.status_code == 200, r.text
        batched = [(x["ok"], x["points"] if x["ok"] else x["code"]) for x in r.json()["results"]]
        assert batched == one_by_one
        assert _state(batch, batch_members) == _state(single, single_members)
    finally:
        single.close()
        batch.close()


def _count_commits(engine) -> list[int]:
    commits = [0]

    @event.listens_for(engine, "commit")
    def _commit(_conn):
        commits[0] += 1

    return commits


def test_concurrent_purchases_share_transactions(tmp_path, database_url):
    """64 purchases in flight at once: each gets its own committed outcome, retries of the same key
    in flight together get one purchase, and they took far fewer commits than requests."""
    clock = Clock()
    brand = start_local_brand(tmp_path, "grouped", database_url, clock=clock, purchases_per_member_per_minute=1000)
    members = [enrol(brand, f"+86138000002{i:02d}") for i in range(4)]
    commits = _count_commits(brand.gw.engine)
    headers = brand.as_("pos")

    async def send_all():
        transport = httpx.ASGITransport(app=brand.client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            async def buy(n: int, key: str):
                body = {"member_ref": members[n % 4]["member_ref"], "amount_minor": 1_000 + n, "occurred_at": clock.now.isoformat()}
                return await client.post("/v1/purchases", json=body, headers=headers | {"Idempotency-Key": key})

            return await asyncio.gather(*(buy(n, f"g{n}") for n in range(64)), buy(0, "g0"), buy(0, "g0"))

    try:
        responses = asyncio.run(send_all())
        assert all(r.status_code in (200, 201) for r in responses), [r.text for r in responses if r.status_code >= 300]
        same_key = [r.json() for r in responses if r.json()["purchase_ref"] == responses[0].json()["purchase_ref"]]
        assert len(same_key) == 3 and sum(not r["replayed"] for r in same_key) == 1
        assert sum(r.status_code == 201 for r in responses) == 64
        earned = {}
        for r in responses[:64]:
            earned[r.json()["member_ref"]] = earned.get(r.json()["member_ref"], 0) + r.json()["points"]
        for m in members:
            assert db_balance(brand, m["member_ref"])[:2] == (100 + earned[m["member_ref"]],) * 2
        assert commits[0] < 40, f"{commits[0]} commits for 66 requests: not grouped"
    finally:
        brand.close()


def test_a_failing_write_does_not_fail_its_neighbours():
    """Whatever makes a grouped write fail (a value the database refuses, say) is retried item by
    item: only the item at fault gets the error."""
    calls = []

    def write(items: list[int]) -> list[int]:
        calls.append(list(items))
        if 13 in items:
            raise ValueError("unlucky")
        return [i * 2 for i in items]

    async def run():
        group = GroupCommit(write)
        return await asyncio.gather(*(group.submit(i) for i in range(10, 20)), return_exceptions=True)

    results = asyncio.run(run())
    assert [r for r in results if not isinstance(r, Exception)] == [i * 2 for i in range(10, 20) if i != 13]
    assert isinstance(results[3], ValueError)
    assert len(calls[0]) > 1, "the first write did not group the waiting items"

