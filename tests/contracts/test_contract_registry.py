"""AllianceRegistry: admission, suspension, rotation, rates with a notice period, governance checks."""

from __future__ import annotations

from contracts.client import BrandStatus, PendingRate
from contracts_testkit import RATE_NOTICE, TERMS, call_revert, reverts, role

GOVERNOR = role("GOVERNOR_ROLE")
DAY = 24 * 3600
ZERO = "0x" + "00" * 20


def block_time(w, receipt) -> int:
    return w.chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"]


def test_deployed_state(w):
    reg = w.registry
    assert reg.brands() == [b.address for b in w.brands]
    assert reg.contract.functions.brandCount().call() == 3
    assert [reg.id_of(b.address) for b in w.brands] == [1, 2, 3]
    assert reg.contract.functions.accountOf(2).call() == w.b.address
    assert reg.rate_notice() == RATE_NOTICE
    assert reg.contract.functions.MIN_RATE_NOTICE().call() == DAY
    for brand, terms in zip(w.brands, TERMS):
        info = reg.info(brand.address)
        assert (info.name, info.status, info.rate, info.rate_version) == (terms.name, BrandStatus.ACTIVE, terms.rate, 1)
        assert info.id == reg.id_of(brand.address)
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
    assert w.registry.events(receipt, "BrandAdmitted") == [{"id": 4, "brand": w.candidate.address, "name": "Delta Foods", "rate": 75}]
    assert w.registry.events(receipt, "RateScheduled") == [
        {"id": 4, "brand": w.candidate.address, "version": 1, "rate": 75, "effectiveAt": ts}
    ]
    info = w.registry.info(w.candidate.address)
    assert (info.name, info.status, info.admitted_at, info.rate, info.rate_version) == ("Delta Foods", BrandStatus.ACTIVE, ts, 75, 1)
    assert w.registry.brands()[-1] == w.candidate.address
    assert w.registry.is_active(w.candidate.address)
    assert w.registry.contract.functions.isAdmitted(w.candidate.address).call()


def test_admit_reverts(w):
    with reverts("AlreadyAdmitted", account=w.a.address):
        w.registry.admit(w.gov, w.a.address, "again", 10)
    with reverts("ZeroAddress"):
        w.registry.admit(w.gov, "0x" + "00" * 20, "nobody", 10)
    with reverts("InvalidRate"):
        w.registry.admit(w.gov, w.candidate.address, "Delta Foods", 0)
    with reverts("AccessControlUnauthorizedAccount", account=w.a.address, neededRole=GOVERNOR) as refused:
        w.registry.admit(w.t(w.a), w.candidate.address, "Delta Foods", 75)
    assert "neededRole=GOVERNOR_ROLE" in str(refused.value)  # the role by name, not as raw bytes
    assert w.registry.status(w.candidate.address) == BrandStatus.NONE


def test_suspend_and_reinstate(w):
    receipt = w.registry.suspend(w.gov, w.b.address, "late settlement")
    assert w.registry.events(receipt, "BrandSuspended") == [{"id": 2, "brand": w.b.address, "reason": "late settlement"}]
    assert w.registry.status(w.b.address) == BrandStatus.SUSPENDED
    assert not w.registry.is_active(w.b.address)
    assert w.registry.contract.functions.isAdmitted(w.b.address).call()  # still settles, refunds, anchors
    assert w.registry.info(w.b.address).status == BrandStatus.SUSPENDED

    receipt = w.registry.reinstate(w.gov, w.b.address)
    assert w.registry.events(receipt, "BrandReinstated") == [{"id": 2, "brand": w.b.address}]
    assert w.registry.status(w.b.address) == BrandStatus.ACTIVE
    assert w.registry.is_active(w.b.address)


def test_suspend_and_reinstate_reverts(w):
    with reverts("UnknownBrand", account=w.outsider.address):
        w.registry.suspend(w.gov, w.outsider.address, "never admitted")
    with reverts("BrandNotSuspended", account=w.a.address):
        w.registry.reinstate(w.gov, w.a.address)
    with reverts("UnknownBrand", account=w.outsider.address):
        w.registry.reinstate(w.gov, w.outsider.address)
    with reverts("AccessControlUnauthorizedAccount", account=w.c.address, neededRole=GOVERNOR):
        w.registry.suspend(w.t(w.c), w.a.address, "rival")
    w.registry.suspend(w.gov, w.a.address, "audit")
    with reverts("BrandNotActive", account=w.a.address):
        w.registry.suspend(w.gov, w.a.address, "twice")
    with reverts("AccessControlUnauthorizedAccount", account=w.a.address, neededRole=GOVERNOR):
        w.registry.reinstate(w.t(w.a), w.a.address)
    assert w.registry.status(w.a.address) == BrandStatus.SUSPENDED


def test_schedule_rate_takes_effect_after_notice(w):
    brand = w.a.address
    receipt = w.registry.schedule_rate(w.gov, brand, 120)
    effective_at = block_time(w, receipt) + RATE_NOTICE
    assert w.registry.events(receipt, "RateScheduled") == [
        {"id": 1, "brand": brand, "version": 2, "rate": 120, "effectiveAt": effective_at}
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


def test_schedule_rate_replaces_a_pending_rate_under_a_new_version(w):
    """L4: v1 gave the replacing rate the replaced one's version, so a receipt's version named two
    rates; every published rate now has its own version."""
    brand = w.c.address
    first = w.registry.schedule_rate(w.gov, brand, 50)
    first_at = block_time(w, first) + RATE_NOTICE
    w.chain.advance_time(DAY)
    second = w.registry.schedule_rate(w.gov, brand, 60)
    second_at = block_time(w, second) + RATE_NOTICE
    assert second_at > first_at
    assert w.registry.events(first, "RateScheduled")[0]["version"] == 2
    assert w.registry.events(second, "RateScheduled") == [
        {"id": 3, "brand": brand, "version": 3, "rate": 60, "effectiveAt": second_at}
    ]
    assert w.registry.pending_rate(brand) == PendingRate(60, 3, second_at)
    # the replaced rate never comes into force, not even at its own effective time
    w.chain.advance_time(first_at - w.now() + 1)
    assert w.registry.rate(brand) == (TERMS[2].rate, 1)
    w.chain.advance_time(second_at - w.now())
    assert w.registry.rate(brand) == (60, 3)


def test_schedule_rate_for_a_suspended_brand(w):
    w.registry.suspend(w.gov, w.b.address, "review")
    receipt = w.registry.schedule_rate(w.gov, w.b.address, 300)
    assert w.registry.events(receipt, "RateScheduled")[0]["rate"] == 300


def test_schedule_rate_reverts(w):
    with reverts("InvalidRate"):
        w.registry.schedule_rate(w.gov, w.a.address, 0)
    with reverts("UnknownBrand", account=w.outsider.address):
        w.registry.schedule_rate(w.gov, w.outsider.address, 10)
    with reverts("AccessControlUnauthorizedAccount", account=w.a.address, neededRole=GOVERNOR):
        w.registry.schedule_rate(w.t(w.a), w.a.address, 1_000)


def test_set_rate_notice(w):
    with reverts("NoticeTooShort", notice=DAY - 1, minimum=DAY):
        w.registry.set_rate_notice(w.gov, DAY - 1)
    with reverts("AccessControlUnauthorizedAccount", account=w.b.address, neededRole=GOVERNOR):
        w.registry.set_rate_notice(w.t(w.b), 3 * DAY)
    receipt = w.registry.set_rate_notice(w.gov, 3 * DAY)  # longer: at once
    assert w.registry.events(receipt, "RateNoticeScheduled") == [
        {"previousNotice": RATE_NOTICE, "notice": 3 * DAY, "effectiveAt": block_time(w, receipt)}]
    assert w.registry.rate_notice() == 3 * DAY
    receipt = w.registry.schedule_rate(w.gov, w.a.address, 110)
    assert w.registry.pending_rate(w.a.address).effective_at == block_time(w, receipt) + 3 * DAY


def test_shortening_the_notice_takes_the_old_notice(w):
    """L4: v1 let governance cut the notice to one day at once, so a rate published right after took
    effect a day later although members had been promised the old notice."""
    receipt = w.registry.set_rate_notice(w.gov, DAY)  # the minimum itself is allowed, in RATE_NOTICE
    at = block_time(w, receipt) + RATE_NOTICE
    assert w.registry.events(receipt, "RateNoticeScheduled") == [{"previousNotice": RATE_NOTICE, "notice": DAY, "effectiveAt": at}]
    assert w.registry.rate_notice() == RATE_NOTICE
    assert w.registry.contract.functions.pendingRateNotice().call() == [DAY, at]
    scheduled = w.registry.schedule_rate(w.gov, w.a.address, 110)  # still under the old notice
    assert w.registry.pending_rate(w.a.address).effective_at == block_time(w, scheduled) + RATE_NOTICE
    w.chain.advance_time(at - w.now())
    assert w.registry.rate_notice() == DAY
    assert w.registry.contract.functions.pendingRateNotice().call() == [0, 0]
    scheduled = w.registry.schedule_rate(w.gov, w.b.address, 300)
    assert w.registry.pending_rate(w.b.address).effective_at == block_time(w, scheduled) + DAY


def test_rotate_moves_a_brand_to_a_new_account(w):
    """M3: a brand's account could never change in v1, so a stolen gateway key stayed the brand's."""
    old, new = w.b.address, w.candidate.address
    with reverts("AccessControlUnauthorizedAccount", account=old, neededRole=GOVERNOR):
        w.registry.rotate(w.t(w.b), old, new)
    receipt = w.registry.rotate(w.gov, old, new)
    assert w.registry.events(receipt, "BrandRotated") == [{"id": 2, "previous": old, "account": new}]
    info = w.registry.info(new)
    assert (info.id, info.name, info.status, info.rate) == (2, TERMS[1].name, BrandStatus.ACTIVE, TERMS[1].rate)
    assert w.registry.brands() == [w.a.address, new, w.c.address]
    assert w.registry.status(old) == BrandStatus.NONE and not w.registry.is_active(old)
    assert w.registry.id_of(old) == 2  # history stays attributable
    with reverts("AlreadyAdmitted", account=old):  # a retired account never comes back
        w.registry.admit(w.gov, old, "again", 10)
    with reverts("AlreadyAdmitted", account=w.a.address):
        w.registry.rotate(w.gov, new, w.a.address)
    with reverts("UnknownBrand", account=old):
        w.registry.rotate(w.gov, old, w.outsider.address)
    with reverts("ZeroAddress"):
        w.registry.rotate(w.gov, new, ZERO)


def test_reads_of_an_unknown_brand_revert(w):
    for read in (w.registry.rate, w.registry.pending_rate, w.registry.info):
        err = call_revert(lambda: read(w.outsider.address))
        assert (err.error, err.args_["account"].lower()) == ("UnknownBrand", w.outsider.address.lower())
