"""AlliancePoints issue side: mint and mintBatch by brand points at the rate in force, credit limit and
collateral checks, pause."""

from __future__ import annotations

from contracts_testkit import RATE_NOTICE, TERMS, VPP, b32, reverts, role

GOVERNOR = role("GOVERNOR_ROLE")
ZERO = "0x" + "00" * 20


def test_token_metadata(w):
    f = w.points.contract.functions
    assert (f.name().call(), f.symbol().call(), f.decimals().call()) == ("Alliance Points", "AP", 0)
    assert w.points.total_supply() == 0
    assert not w.points.paused()


def test_mint(w):
    m = w.members[0]
    ref = b32("exchange-0001")
    receipt = w.mint(w.a, m, 1_250, ref)
    assert w.points.events(receipt, "Issued") == [{"brand": w.a.address, "to": m.address, "ref": ref, "amount": 1_250, "rateVersion": 1}]
    assert w.points.events(receipt, "Transfer") == [{"from": ZERO, "to": m.address, "value": 1_250}]
    assert w.points.balance_of(m.address) == 1_250
    assert w.points.total_supply() == 1_250
    position = w.settlement.open_position(w.a.address)
    assert (position.issued, position.redeemed) == (1_250, 0)
    assert position.free_collateral == TERMS[0].collateral - 1_250 * VPP
    account = w.settlement.account(w.a.address)
    assert (account.issued, account.redeemed, account.settled_issued) == (1_250, 0, 0)
    # the brand's reference finds its mint, and only that
    logs = w.points.issued_logs(ref)
    assert len(logs) == 1
    assert logs[0]["blockNumber"] == receipt["blockNumber"]
    assert logs[0]["transactionHash"] == receipt["transactionHash"]
    assert (logs[0]["brand"], logs[0]["to"], logs[0]["amount"]) == (w.a.address, m.address, 1_250)
    assert w.points.issued_logs("exchange-0002") == []


def test_issued_logs_finds_a_retried_mint(w):
    m = w.members[1]
    w.mint(w.c, m, 10, "order-77")
    w.mint(w.c, m, 10, "order-77")  # the chain does not dedupe: the brand must look first
    logs = w.points.issued_logs("order-77")
    assert [log["amount"] for log in logs] == [10, 10]
    assert logs[0]["blockNumber"] < logs[1]["blockNumber"]
    assert w.points.issued_logs("order-77", from_block=logs[1]["blockNumber"]) == logs[1:]


def test_mint_batch(w):
    grants = [(w.members[0].address, 5, "x-1"), (w.members[1].address, 7, "x-2"), (w.members[0].address, 9, "x-3")]
    receipt = w.mint_batch(w.c, grants)
    assert w.points.events(receipt, "Issued") == [
        {"brand": w.c.address, "to": to, "ref": b32(ref), "amount": amount, "rateVersion": 1} for to, amount, ref in grants
    ]
    assert w.points.balance_of(w.members[0].address) == 14
    assert w.points.balance_of(w.members[1].address) == 7
    assert w.points.total_supply() == 21
    assert w.settlement.open_position(w.c.address).issued == 21
    assert w.points.issued_logs("x-2")[0]["to"] == w.members[1].address


def test_mint_reverts(w):
    m = w.members[0]
    with reverts("ZeroAmount"):
        w.mint(w.a, m, 0)
    with reverts("BrandNotActive", account=w.outsider.address):
        w.points.mint(w.t(w.outsider), m.address, 100, 1)
    with reverts("ERC20InvalidReceiver", receiver=ZERO):
        w.mint(w.a, ZERO, 1)
    w.registry.suspend(w.gov, w.a.address, "audit")
    with reverts("BrandNotActive", account=w.a.address):
        w.mint(w.a, m, 1)
    w.registry.reinstate(w.gov, w.a.address)
    w.mint(w.a, m, 1)
    assert w.points.total_supply() == 1


def test_mint_batch_reverts(w):
    t = w.t(w.c)
    f = w.points.contract.functions
    m0, m1 = w.members[0].address, w.members[1].address
    r = [b32("r1"), b32("r2")]
    rate = TERMS[2].rate
    with reverts("LengthMismatch"):
        t.send(f.mintBatch([m0, m1], [rate], r, 1))
    with reverts("LengthMismatch"):
        t.send(f.mintBatch([m0, m1], [rate, 2 * rate], r[:1], 1))
    with reverts("ZeroAmount"):
        t.send(f.mintBatch([m0, m1], [rate, 0], r, 1))
    with reverts("InexactExchange", brandPoints=rate + 1, rate=rate):
        t.send(f.mintBatch([m0, m1], [rate, rate + 1], r, 1))
    with reverts("ZeroAmount"):
        t.send(f.mintBatch([], [], [], 1))
    with reverts("RateVersionMismatch", expected=2, current=1):
        t.send(f.mintBatch([m0], [rate], r[:1], 2))
    with reverts("BrandNotActive", account=w.outsider.address):
        w.points.mint_batch(w.t(w.outsider), [(m0, 1, "r")], 1)
    w.registry.suspend(w.gov, w.c.address, "audit")
    with reverts("BrandNotActive", account=w.c.address):
        w.points.mint_batch(t, [(m0, rate, "r")], 1)
    assert w.points.total_supply() == 0


def test_credit_limit_bounds_open_net_issuance(w):
    limit = TERMS[0].credit_limit
    m = w.members[0]
    w.mint(w.a, m, limit)
    with reverts("CreditLimitExceeded", brand=w.a.address, openNetIssued=limit + 1, limit=limit):
        w.mint(w.a, m, 1)
    with reverts("CreditLimitExceeded", brand=w.a.address, openNetIssued=limit + 3, limit=limit):
        w.mint_batch(w.a, [(m.address, 1, "a"), (m.address, 2, "b")])
    # redemptions at the issuing brand net against its issuance within the epoch
    w.redeem(m, w.a, 400)
    w.mint_batch(w.a, [(m.address, 150, "a"), (m.address, 250, "b")])
    with reverts("CreditLimitExceeded"):
        w.mint(w.a, m, 1)
    # redemptions elsewhere do not
    w.redeem(m, w.b, 100)
    with reverts("CreditLimitExceeded"):
        w.mint(w.a, m, 1)
    # the limit is per open epoch
    w.close()
    w.mint(w.a, m, limit)
    with reverts("CreditLimitExceeded"):
        w.mint(w.a, m, 1)


def test_collateral_bounds_open_net_issuance(w):
    cover = TERMS[1].collateral // VPP  # B's collateral binds before its credit limit
    m = w.members[1]
    w.mint_batch(w.b, [(m.address, cover - 1, "a"), (m.address, 1, "b")])
    with reverts("InsufficientCollateral", brand=w.b.address, required=(cover + 1) * VPP, available=cover * VPP):
        w.mint(w.b, m, 1)
    with reverts("InsufficientCollateral"):
        w.mint_batch(w.b, [(m.address, 1, "c")])
    w.settlement.deposit(w.t(w.b), VPP)
    w.mint(w.b, m, 1)
    assert w.settlement.open_position(w.b.address).free_collateral == 0


def test_set_credit_limit(w):
    receipt = w.settlement.set_credit_limit(w.gov, w.a.address, 0)
    assert w.settlement.events(receipt, "CreditLimitSet") == [{"id": 1, "brand": w.a.address, "limit": 0}]
    assert w.settlement.account(w.a.address).credit_limit == 0
    with reverts("CreditLimitExceeded", brand=w.a.address, openNetIssued=1, limit=0):
        w.mint(w.a, w.members[0], 1)
    w.settlement.set_credit_limit(w.gov, w.a.address, 5)
    w.mint(w.a, w.members[0], 5)
    with reverts("NotAdmitted", account=w.outsider.address):
        w.settlement.set_credit_limit(w.gov, w.outsider.address, 100)
    with reverts("AccessControlUnauthorizedAccount", account=w.a.address, neededRole=GOVERNOR):
        w.settlement.set_credit_limit(w.t(w.a), w.a.address, 10**9)
    # a suspended brand is still admitted: its limit can be set
    w.registry.suspend(w.gov, w.b.address, "review")
    w.settlement.set_credit_limit(w.gov, w.b.address, 1)
    assert w.settlement.account(w.b.address).credit_limit == 1


def test_pause_stops_minting(w):
    m = w.members[0]
    receipt = w.points.pause(w.gov)
    assert w.points.events(receipt, "Paused") == [{"account": w.governor.address}]
    assert w.points.paused()
    with reverts("EnforcedPause"):
        w.mint(w.a, m, 1)
    with reverts("EnforcedPause"):
        w.mint_batch(w.a, [(m.address, 1, "r")])
    with reverts("EnforcedPause"):
        w.points.pause(w.gov)
    with reverts("AccessControlUnauthorizedAccount", account=w.a.address, neededRole=GOVERNOR):
        w.points.unpause(w.t(w.a))
    receipt = w.points.unpause(w.gov)
    assert w.points.events(receipt, "Unpaused") == [{"account": w.governor.address}]
    with reverts("ExpectedPause"):
        w.points.unpause(w.gov)
    with reverts("AccessControlUnauthorizedAccount", account=w.b.address, neededRole=GOVERNOR):
        w.points.pause(w.t(w.b))
    w.mint(w.a, m, 1)


def test_the_rate_is_enforced_on_chain(w):
    """L3: v1's mint took an AP amount and `rateOf` was advisory, so a mint mined after a rate switch
    used the old rate unnoticed. The brand now mints brand points at the version it quoted."""
    m, brand = w.members[0], w.a
    rate = TERMS[0].rate
    w.registry.schedule_rate(w.gov, brand.address, 80)
    w.points.mint(w.t(brand), m.address, 3 * rate, 1, "quoted-before")  # version 1 still in force
    w.chain.advance_time(RATE_NOTICE)
    with reverts("RateVersionMismatch", expected=1, current=2):  # quoted before, mined after the switch
        w.points.mint(w.t(brand), m.address, 3 * rate, 1, "quoted-before-2")
    with reverts("InexactExchange", brandPoints=100, rate=80):
        w.points.mint(w.t(brand), m.address, 100, 2, "inexact")
    with reverts("ZeroAmount"):
        w.points.mint(w.t(brand), m.address, 0, 2, "nothing")
    receipt = w.points.mint(w.t(brand), m.address, 160, 2, "at-the-new-rate")
    assert w.points.events(receipt, "Issued")[0] | {"ref": None} == {
        "brand": brand.address, "to": m.address, "ref": None, "amount": 2, "rateVersion": 2}
    assert w.points.balance_of(m.address) == 5
