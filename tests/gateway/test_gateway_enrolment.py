"""Enrolment that discloses nothing and proves the identifier; rate limits on enrolment, login and
codes; the lock that repeated failed logins earn. (The harness enrols with the codes; these tests
look at the flow itself, with the gateway's default limits.)"""

from __future__ import annotations

import itertools
import statistics
import time

import pytest
from harness import PASSPHRASE, enrol, last_code, login, start_enrolment, start_local_brand, verify_enrolment
from sqlalchemy import select

from gateway.models import Member, PendingEnrolment
from gateway.services import members
from gateway.services.throttle import address_of
from gateway.settings import Throttle, Throttles

_phones = itertools.count(1)


def phone() -> str:
    return f"+86137{next(_phones):08d}"


@pytest.fixture
def brand(tmp_path, database_url, clock):
    """The gateway's default limits and lock, except the login and per-address limits (every test
    request comes from one client, and the lock is what is tested here)."""
    b = start_local_brand(tmp_path, "door", database_url, clock=clock,
                          throttles=Throttles(enrol_per_address=Throttle(burst=1000, period_s=60),
                                              login_per_identifier=Throttle(burst=1000, period_s=60),
                                              login_per_address=Throttle(burst=1000, period_s=60),
                                              code_per_address=Throttle(burst=1000, period_s=60)))
    yield b
    b.close()


def _shape(body: dict) -> dict:
    return {k: type(v).__name__ for k, v in body.items()}


def test_enrolment_answers_the_same_whether_or_not_the_identifier_has_an_account(brand):
    taken, email = phone(), "taken@example.com"
    enrol(brand, taken, identifiers={"phone": taken, "email": email})
    fresh = phone()
    answers = {name: start_enrolment(brand, ids, "Mallory") for name, ids in
               (("taken", {"phone": taken}), ("fresh", {"phone": fresh}), ("taken email", {"email": email}),
                ("fresh email", {"email": "fresh@example.com"}))}
    assert {r.status_code for r in answers.values()} == {202}
    assert len({tuple(sorted(_shape(r.json()).items())) for r in answers.values()}) == 1
    assert answers["taken"].json()["sent_to"] == answers["fresh"].json()["sent_to"] == ["phone"]
    assert {tuple(r.headers.keys()) for r in answers.values()} == {tuple(answers["fresh"].headers.keys())}
    # Only the identifier's owner learns the difference, from the message: a notice, no code.
    notice = brand.gw.notifier.messages(taken)[-1]
    assert notice.code is None and "already has an account" in notice.text
    assert brand.gw.notifier.messages(fresh)[-1].code is not None
    # And the account that exists cannot be claimed: no code was sent, so none verifies it.
    r = verify_enrolment(brand, answers["taken"].json()["enrolment_id"], {"phone": "000000"})
    assert r.status_code == 400 and r.json()["code"] == "code_invalid"


def test_enrolment_takes_as_long_whether_or_not_the_identifier_has_an_account(brand):
    """The same work both ways (the passphrase hash, the sealing, a stored enrolment, a message):
    the medians of alternating requests differ by far less than the passphrase hash's cost, which
    the old code spent only on new identifiers."""
    taken = phone()
    enrol(brand, taken)
    times = {"taken": [], "fresh": []}
    for i in range(16):
        for name in ("taken", "fresh"):
            number = taken if name == "taken" else phone()
            started = time.perf_counter()
            assert start_enrolment(brand, {"phone": number}, "Timer").status_code == 202
            times[name].append(time.perf_counter() - started)
        brand.gw.clock.advance(hours=1)  # keeps the taken identifier under its own limit
    taken_s, fresh_s = statistics.median(times["taken"]), statistics.median(times["fresh"])
    started = time.perf_counter()
    members.hash_passphrase(PASSPHRASE)
    scrypt_s = time.perf_counter() - started
    assert abs(taken_s - fresh_s) < 0.5 * scrypt_s, (taken_s, fresh_s, scrypt_s)


def test_the_account_exists_only_once_every_identifier_is_proven(brand, clock):
    number, email = phone(), "two@example.com"
    started = start_enrolment(brand, {"phone": number, "email": email}, "Two Codes", birthday="1990-05-17").json()
    assert started["sent_to"] == ["email", "phone"]
    # Before the codes come back: no account, no login, no welcome points anywhere.
    r = brand.client.post("/v1/sessions", json={"kind": "phone", "value": number, "passphrase": PASSPHRASE})
    assert r.status_code == 401
    with brand.gw.sessions() as session:
        assert session.scalars(select(Member)).all() == []
        pending = session.scalars(select(PendingEnrolment)).one()
        assert number not in pending.sealed and "Two Codes" not in pending.sealed  # sealed, not kept in clear
    codes = {"phone": last_code(brand, "phone", number), "email": last_code(brand, "email", email)}
    # One right code is not enough; each wrong attempt counts.
    r = verify_enrolment(brand, started["enrolment_id"], {"phone": codes["phone"]})
    assert r.status_code == 400 and r.json()["attempts_left"] == 4
    wrong = "111111" if codes["email"] != "111111" else "222222"
    r = verify_enrolment(brand, started["enrolment_id"], codes | {"email": wrong})
    assert r.status_code == 400 and r.json()["attempts_left"] == 3
    r = verify_enrolment(brand, started["enrolment_id"], codes)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["welcome_points"] == body["balance"] == 100 and body["consents"]["loyalty_core"] is True
    assert login(brand, "email", email)
    # A code is good once: the enrolment is gone.
    assert verify_enrolment(brand, started["enrolment_id"], codes).status_code == 404
    with brand.gw.sessions() as session:
        assert session.scalars(select(Member.identity_proof)).one() == "code:email,phone"


def test_codes_run_out_and_expire(brand, clock):
    number = phone()
    spent = start_enrolment(brand, {"phone": number}, "Guesser").json()
    code = last_code(brand, "phone", number)
    wrong = "000001" if code != "000001" else "000002"
    answers = [verify_enrolment(brand, spent["enrolment_id"], {"phone": wrong}) for _ in range(5)]
    assert [r.json()["attempts_left"] for r in answers] == [4, 3, 2, 1, 0]
    assert verify_enrolment(brand, spent["enrolment_id"], {"phone": code}).status_code == 404  # spent: the right code is too late
    late = start_enrolment(brand, {"phone": number}, "Slow").json()
    clock.advance(minutes=11)
    assert verify_enrolment(brand, late["enrolment_id"], {"phone": last_code(brand, "phone", number)}).status_code == 404
    # Maintenance forgets enrolments nobody verified (their sealed data with them).
    start_enrolment(brand, {"phone": phone()}, "Never")
    clock.advance(minutes=11)
    assert brand.client.post("/v1/admin/maintenance", headers=brand.as_("operator")).json()["enrolments_expired"] >= 1
    with brand.gw.sessions() as session:
        assert session.scalars(select(PendingEnrolment)).all() == []


def test_two_pending_enrolments_of_one_identifier_make_one_account(brand):
    number = phone()
    first = start_enrolment(brand, {"phone": number}, "First").json()
    first_code = last_code(brand, "phone", number)
    second = start_enrolment(brand, {"phone": number}, "Second").json()
    second_code = last_code(brand, "phone", number)
    assert verify_enrolment(brand, second["enrolment_id"], {"phone": second_code}).status_code == 201
    # The owner, who proved the phone again, is told to log in; no second account.
    r = verify_enrolment(brand, first["enrolment_id"], {"phone": first_code})
    assert r.status_code == 409 and "log in" in r.json()["detail"]
    with brand.gw.sessions() as session:
        assert len(session.scalars(select(Member)).all()) == 1


def test_staff_enrol_without_a_code_and_it_is_recorded(brand):
    number = phone()
    r = brand.client.post("/v1/members", headers=brand.as_("pos"),
                          json={"identifiers": {"phone": number, "card": "4539 1488 0343 6467"}, "name": "At The Till"})
    assert r.status_code == 201 and r.json()["welcome_points"] == 100, r.text
    assert "token" not in r.json()  # the till never holds the member's credentials
    assert brand.gw.notifier.messages(brand.gw.pseudonymiser.normalise("phone", number)) == []
    audit = brand.client.get("/v1/audit/logs/audit-log", headers=brand.as_("auditor")).json()["entries"]
    enrolled = [e["payload"] for e in audit if e["payload"]["action"] == "member.enrolled"]
    assert enrolled[-1]["details"] == {"member_ref": r.json()["member_ref"], "identity_proof": "staff", "identifiers": ["card", "phone"]}
    assert enrolled[-1]["actor"].startswith("apikey:")
    with brand.gw.sessions() as session:
        assert session.scalars(select(Member.identity_proof)).one() == "staff"
    # A member cannot enrol themselves through the staff route, nor anyone without credentials.
    assert brand.client.post("/v1/members", json={"identifiers": {"phone": phone()}, "name": "N"}).status_code == 401
    member = enrol(brand, phone())
    assert brand.client.post("/v1/members", headers=member["auth"], json={"identifiers": {"phone": phone()}, "name": "N"}).status_code == 403


def test_enrolment_is_rate_limited_per_identifier_and_per_address(tmp_path, clock):
    brand = start_local_brand(tmp_path, "limits", clock=clock, throttles=Throttles())  # the defaults, per address too
    try:
        taken, fresh = phone(), phone()
        staff = brand.client.post("/v1/members", headers=brand.as_("pos"), json={"identifiers": {"phone": taken}, "name": "Owner"})
        assert staff.status_code == 201
        # Per identifier: 3 an hour, the same for an identifier with an account and one without.
        for number in (taken, fresh):
            statuses = [start_enrolment(brand, {"phone": number}, "Spammer").status_code for _ in range(4)]
            assert statuses == [202, 202, 202, 429], number
        r = start_enrolment(brand, {"phone": fresh}, "Spammer")
        assert r.headers["Retry-After"] == "1200" and r.json()["retry_after_s"] == 1200  # one every 20 minutes
        # Per address: 10 an hour from one client, whatever the identifiers (6 used above, the refusals did not count).
        statuses = [start_enrolment(brand, {"phone": phone()}, "Farm").status_code for _ in range(5)]
        assert statuses == [202, 202, 202, 202, 429]
        clock.advance(minutes=6)  # one every 6 minutes comes back
        assert start_enrolment(brand, {"phone": phone()}, "Farm").status_code == 202
    finally:
        brand.close()


def test_code_attempts_are_rate_limited(tmp_path, clock):
    brand = start_local_brand(tmp_path, "codes", clock=clock, throttles=Throttles(
        enrol_per_address=Throttle(burst=1000, period_s=60), code_per_address=Throttle(burst=6, period_s=600)))
    try:
        enrolments = [start_enrolment(brand, {"phone": phone()}, "Guesser").json()["enrolment_id"] for _ in range(3)]
        statuses = [verify_enrolment(brand, e, {"phone": "123456"}).status_code for e in enrolments for _ in range(2)]
        assert statuses == [400] * 6
        r = verify_enrolment(brand, enrolments[0], {"phone": "123456"})
        assert r.status_code == 429 and int(r.headers["Retry-After"]) == 100
    finally:
        brand.close()


def test_failed_logins_lock_the_identifier_with_exponential_back_off(brand, clock):
    """The finding: 40 wrong passphrases, then the right one was accepted."""
    m = enrol(brand, "+8613700009999")
    wrong = {"kind": "phone", "value": "+8613700009999", "passphrase": "not the passphrase"}
    right = wrong | {"passphrase": PASSPHRASE}
    statuses = [brand.client.post("/v1/sessions", json=wrong).status_code for _ in range(6)]
    assert statuses == [401] * 5 + [429]  # the 5th failure locks it for a minute
    locked = brand.client.post("/v1/sessions", json=right)
    assert locked.status_code == 429 and 0 < int(locked.headers["Retry-After"]) <= 60, locked.text  # even the right one
    clock.advance(seconds=61)
    assert brand.client.post("/v1/sessions", json=wrong).status_code == 401  # the 6th failure: locked for 2 minutes
    clock.advance(seconds=61)
    assert brand.client.post("/v1/sessions", json=right).status_code == 429
    clock.advance(seconds=60)
    assert brand.client.post("/v1/sessions", json=right).status_code == 200  # a success clears the count
    assert [brand.client.post("/v1/sessions", json=wrong).status_code for _ in range(5)] == [401] * 5
    # Every lock is in the audit log, with the member it protects.
    audit = brand.client.get("/v1/audit/logs/audit-log", headers=brand.as_("auditor")).json()["entries"]
    locks = [e["payload"]["details"] for e in audit if e["payload"]["action"] == "login.locked"]
    assert [(d["member_ref"], d["failures"]) for d in locks] == [(m["member_ref"], 5), (m["member_ref"], 6), (m["member_ref"], 5)]
    # An identifier nobody has locks the same way (a lock says nothing about membership).
    nobody = {"kind": "phone", "value": phone(), "passphrase": "whatever it is"}
    assert [brand.client.post("/v1/sessions", json=nobody).status_code for _ in range(6)] == [401] * 5 + [429]


def test_a_locked_or_throttled_login_costs_no_passphrase_hash(brand, monkeypatch):
    """Refusals come before the scrypt check, so a flood of attempts cannot burn the gateway's CPU."""
    checks = []
    real = members.check_passphrase
    monkeypatch.setattr(members, "check_passphrase", lambda stored, given: checks.append(1) or real(stored, given))
    body = {"kind": "phone", "value": phone(), "passphrase": "wrong passphrase"}
    for _ in range(20):
        brand.client.post("/v1/sessions", json=body)
    assert len(checks) == 5


def test_login_is_rate_limited_per_identifier_and_per_address(tmp_path, clock):
    brand = start_local_brand(tmp_path, "logins", clock=clock, login_lock_after=100,
                              throttles=Throttles(enrol_per_address=Throttle(burst=1000, period_s=60)))
    try:
        target = {"kind": "phone", "value": phone(), "passphrase": "guess number x"}
        assert [brand.client.post("/v1/sessions", json=target).status_code for _ in range(11)] == [401] * 10 + [429]
        # Spraying one guess over many identifiers: the address limit (30 a minute) stops it.
        spray = [brand.client.post("/v1/sessions", json=target | {"value": phone()}).status_code for _ in range(21)]
        assert spray == [401] * 20 + [429]
        clock.advance(seconds=2)
        assert brand.client.post("/v1/sessions", json=target | {"value": phone()}).status_code == 401
    finally:
        brand.close()


def test_limits_count_an_ipv4_client_by_its_address_and_an_ipv6_one_by_its_64():
    assert address_of("203.0.113.7") == "203.0.113.7"
    assert address_of("::ffff:203.0.113.7") == "203.0.113.7"
    assert address_of("2001:db8:1:2:aaaa::1") == address_of("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert address_of("2001:db8:1:3::1") != address_of("2001:db8:1:2::1")
    assert address_of(None) == "unknown" and address_of("testclient") == "testclient"
