"""AllianceRegistry: admission, suspension, rates with a notice period, governance checks."""

from __future__ import annotations

from contracts.client import BrandStatus, PendingRate
from contracts_testkit import RATE_NOTICE, TERMS, call_revert, reverts, role

GOVERNOR = role("GOVERNOR_ROLE")
DAY = 24 * 3600


def block_time(w, receipt) -> int:
    return w.chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"]


def test_deployed_state(w):
    reg = w.registry
    assert reg.brands() == [b.address for b in w.brands]
    assert reg.contract.functions.brandCount().call() == 3
    assert reg.contract.functions.brandAt(1).call() == w.b.address
    assert reg.rate_notice() == RATE_NOTICE
    assert reg.contract.functions.MIN_RATE_NOTICE().call() == DAY
    for brand, terms in zip(w.brands, TERMS):
        info = reg.info(brand.address)
        assert (info.name, info.status, info.rate, info.rate_version) == (terms.name, BrandStatus.ACTIVE, terms.rate, 1)
        assert reg.rate(brand.address) == (terms.rate, 1)
        assert reg.pending_rate(brand.address) is None
    assert reg.status(w.outsider.address) == BrandStatus.NONE
    assert not reg.is_active(w.outsider.address)
    assert not reg.contract.functions.isAdmitted(w.outsider.address).call()
    assert reg.contract.functions.hasRole(GOVERNOR, w.governor.address).call()
    assert reg.contract.functions.hasRole(b"\x00" * 32, w.governor.address).call()


def test_admit(w):
    receipt = w.registry.admit(w.gov, w.candidate.address, "Delta Foods", 75)
    ts = block_time(w, receipt)
    assert w.registry.events(receipt, "BrandAdmitted") == [{"brand": w.candidate.address, "name": "Delta Foods", "rate": 75}]
    assert w.registry.events(receipt, "RateScheduled") == [
        {"brand": w.candidate.address, "version": 1, "rate": 75, "effectiveAt": ts}
    ]
    info = w.registry.info(w.candidate.address)
    assert (info.name, info.status, info.admitted_at, info.rate, info.rate_version) == ("Delta Foods", BrandStatus.ACTIVE, ts, 75, 1)
    assert w.registry.brands()[-1] == w.candidate.address
    assert w.registry.is_active(w.candidate.address)
    assert w.registry.contract.functions.isAdmitted(w.candidate.address).call()


def test_admit_reverts(w):
    with reverts("AlreadyAdmitted", brand=w.a.address):
        w.registry.admit(w.gov, w.a.address, "again", 10)
    with reverts("ZeroAddress"):
        w.registry.admit(w.gov, "0x" + "00" * 20, "nobody", 10)
    with reverts("InvalidRate"):
        w.registry.admit(w.gov, w.candidate.address, "Delta Foods", 0)
    with reverts("AccessControlUnauthorizedAccount", account=w.a.address, neededRole=GOVERNOR):
        w.registry.admit(w.t(w.a), w.candidate.address, "Delta Foods", 75)
    assert w.registry.status(w.candidate.address) == BrandStatus.NONE


def test_suspend_and_reinstate(w):
    receipt = w.registry.suspend(w.gov, w.b.address, "late settlement")
    assert w.registry.events(receipt, "BrandSuspended") == [{"brand": w.b.address, "reason": "late settlement"}]
    assert w.registry.status(w.b.address) == BrandStatus.SUSPENDED
    assert not w.registry.is_active(w.b.address)
    assert w.registry.contract.functions.isAdmitted(w.b.address).call()  # still settles, refunds, anchors
    assert w.registry.info(w.b.address).status == BrandStatus.SUSPENDED

    receipt = w.registry.reinstate(w.gov, w.b.address)
    assert w.registry.events(receipt, "BrandReinstated") == [{"brand": w.b.address}]
    assert w.registry.status(w.b.address) == BrandStatus.ACTIVE
    assert w.registry.is_active(w.b.address)


def test_suspend_and_reinstate_reverts(w):
    with reverts("BrandNotActive", brand=w.outsider.address):
        w.registry.suspend(w.gov, w.outsider.address, "never admitted")
    with reverts("BrandNotSuspended", brand=w.a.address):
        w.registry.reinstate(w.gov, w.a.address)
    with reverts("BrandNotSuspended", brand=w.outsider.address):
        w.registry.reinstate(w.gov, w.outsider.address)
    with reverts("AccessControlUnauthorizedAccount", account=w.c.address, neededRole=GOVERNOR):
        w.registry.suspend(w.t(w.c), w.a.address, "rival")
    w.registry.suspend(w.gov, w.a.address, "audit")
    with reverts("BrandNotActive", brand=w.a.address):
        w.registry.suspend(w.gov, w.a.address, "twice")
    with reverts("AccessControlUnauthorizedAccount", account=w.a.address, neededRole=GOVERNOR):
        w.registry.reinstate(w.t(w.a), w.a.address)
    assert w.registry.status(w.a.address) == BrandStatus.SUSPENDED


def test_schedule_rate_takes_effect_after_notice(w):
    brand = w.a.address
    receipt = w.registry.schedule_rate(w.gov, brand, 120)
    effective_at = block_time(w, receipt) + RATE_NOTICE
    assert w.registry.events(receipt, "RateScheduled") == [
        {"brand": brand, "version": 2, "rate": 120, "effectiveAt": effective_at}
    ]
    # published, not in force
    assert w.registry.rate(brand) == (100, 1)
    assert w.registry.pending_rate(brand) == PendingRate(120, 2, effective_at)
    w.chain.advance_time(effective_at - w.now() - 60)
    assert w.now() < effective_at
    assert w.registry.rate(brand) == (100, 1)
    assert w.registry.info(brand).rate == 100
    # in force
    w.chain.advance_time(effective_at - w.now())
    assert w.now() >= effective_at
    assert w.registry.rate(brand) == (120, 2)
    assert w.registry.pending_rate(brand) is None
    info = w.registry.info(brand)
    assert (info.rate, info.rate_version) == (120, 2)
    # the next schedule folds the due rate in and gets the next version
    receipt = w.registry.schedule_rate(w.gov, brand, 90)
    assert w.registry.events(receipt, "RateScheduled")[0]["version"] == 3
    assert w.registry.rate(brand) == (120, 2)
    assert w.registry.pending_rate(brand).version == 3
    # other brands untouched
    assert w.registry.rate(w.b.address) == (TERMS[1].rate, 1)


def test_schedule_rate_replaces_a_pending_rate(w):
    brand = w.c.address
    first = w.registry.schedule_rate(w.gov, brand, 50)
    first_at = block_time(w, first) + RATE_NOTICE
    w.chain.advance_time(DAY)
    second = w.registry.schedule_rate(w.gov, brand, 60)
    second_at = block_time(w, second) + RATE_NOTICE
    assert second_at > first_at
    assert w.registry.events(second, "RateScheduled") == [
        {"brand": brand, "version": 2, "rate": 60, "effectiveAt": second_at}
    ]
    assert w.registry.pending_rate(brand) == PendingRate(60, 2, second_at)
    # the replaced rate never comes into force, not even at its own effective time
    w.chain.advance_time(first_at - w.now() + 1)
    assert w.registry.rate(brand) == (TERMS[2].rate, 1)
    w.chain.advance_time(second_at - w.now())
    assert w.registry.rate(brand) == (60, 2)


def test_schedule_rate_for_a_suspended_brand(w):
    w.registry.suspend(w.gov, w.b.address, "review")
    receipt = w.registry.schedule_rate(w.gov, w.b.address, 300)
    assert w.registry.events(receipt, "RateScheduled")[0]["rate"] == 300


def test_schedule_rate_reverts(w):
    with reverts("InvalidRate"):
        w.registry.schedule_rate(w.gov, w.a.address, 0)
    with reverts("UnknownBrand", brand=w.outsider.address):
        w.registry.schedule_rate(w.gov, w.outsider.address, 10)
    with reverts("AccessControlUnauthorizedAccount", account=w.a.address, neededRole=GOVERNOR):
        w.registry.schedule_rate(w.t(w.a), w.a.address, 1_000)


def test_set_rate_notice(w):
    with reverts("NoticeTooShort", notice=DAY - 1, minimum=DAY):
        w.registry.set_rate_notice(w.gov, DAY - 1)
    with reverts("AccessControlUnauthorizedAccount", account=w.b.address, neededRole=GOVERNOR):
        w.registry.set_rate_notice(w.t(w.b), 3 * DAY)
    receipt = w.registry.set_rate_notice(w.gov, 3 * DAY)
    assert w.registry.events(receipt, "RateNoticeChanged") == [{"previousNotice": RATE_NOTICE, "newNotice": 3 * DAY}]
    assert w.registry.rate_notice() == 3 * DAY
    receipt = w.registry.schedule_rate(w.gov, w.a.address, 110)
    assert w.registry.pending_rate(w.a.address).effective_at == block_time(w, receipt) + 3 * DAY
    w.registry.set_rate_notice(w.gov, DAY)  # the minimum itself is allowed
    assert w.registry.rate_notice() == DAY


def test_reads_of_an_unknown_brand_revert(w):
    for read in (w.registry.rate, w.registry.pending_rate, w.registry.info):
        err = call_revert(lambda: read(w.outsider.address))
        assert (err.error, err.args_["brand"].lower()) == ("UnknownBrand", w.outsider.address.lower())
