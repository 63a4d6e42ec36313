"""Settlement: collateral in and out, payout and release, the record hooks, pause, and the epoch close."""

from __future__ import annotations

from contracts_testkit import EPOCH, MIN_EPOCH, SPARE_TOKENS, TERMS, VPP, reverts, role

SETTLER = role("SETTLER_ROLE")
GOVERNOR = role("GOVERNOR_ROLE")


def block_time(w, receipt) -> int:
    return w.chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"]


def held(w) -> int:
    return w.token.balance_of(w.settlement.address)


def test_deployed_state(w):
    s = w.settlement
    f = s.contract.functions
    assert s.value_per_point() == VPP
    assert (f.points().call(), f.registry().call(), f.settlementToken().call()) == (w.points.address, w.registry.address, w.token.address)
    assert s.current_epoch() == 1
    assert s.pool_balance() == 0
    assert s.total_collateral() == sum(t.collateral for t in TERMS) == held(w)
    for brand, terms in zip(w.brands, TERMS):
        account = s.account(brand.address)
        assert (account.collateral, account.credit_limit, account.issued, account.redeemed) == (terms.collateral, terms.credit_limit, 0, 0)
        assert s.open_position(brand.address).free_collateral == terms.collateral
    assert f.hasRole(SETTLER, w.governor.address).call()


def test_deposit(w):
    before = held(w)
    receipt = w.settlement.deposit(w.t(w.a), 12_345)
    assert w.settlement.events(receipt, "CollateralDeposited") == [
        {"brand": w.a.address, "amount": 12_345, "collateral": TERMS[0].collateral + 12_345}
    ]
    assert w.settlement.account(w.a.address).collateral == TERMS[0].collateral + 12_345
    assert w.settlement.total_collateral() == sum(t.collateral for t in TERMS) + 12_345
    assert held(w) == before + 12_345
    assert w.token.balance_of(w.a.address) == SPARE_TOKENS - 12_345


def test_deposit_reverts(w):
    with reverts("ZeroAmount"):
        w.settlement.deposit(w.t(w.a), 0)
    with reverts("NotAdmitted", account=w.outsider.address):
        w.settlement.deposit(w.t(w.outsider), 1)
    w.token.approve(w.t(w.a), w.settlement.address, 10)
    with reverts("ERC20InsufficientAllowance", spender=w.settlement.address, allowance=10, needed=11):
        w.settlement.deposit(w.t(w.a), 11)
    with reverts("ERC20InsufficientBalance", sender=w.a.address, balance=SPARE_TOKENS, needed=SPARE_TOKENS + 1):
        w.token.approve(w.t(w.a), w.settlement.address, 2**256 - 1)
        w.settlement.deposit(w.t(w.a), SPARE_TOKENS + 1)


def test_withdraw(w):
    receipt = w.settlement.withdraw(w.t(w.c), 1_000)
    assert w.settlement.events(receipt, "CollateralWithdrawn") == [
        {"brand": w.c.address, "amount": 1_000, "collateral": TERMS[2].collateral - 1_000, "to": w.c.address}
    ]
    assert w.token.balance_of(w.c.address) == SPARE_TOKENS + 1_000
    assert w.settlement.total_collateral() == held(w)
    with reverts("ZeroAmount"):
        w.settlement.withdraw(w.t(w.c), 0)
    with reverts("InsufficientCollateral", brand=w.c.address, required=TERMS[2].collateral, available=TERMS[2].collateral - 1_000):
        w.settlement.withdraw(w.t(w.c), TERMS[2].collateral)
    with reverts("BrandNotActive", account=w.outsider.address):
        w.settlement.withdraw(w.t(w.outsider), 1)
    w.settlement.withdraw(w.t(w.c), TERMS[2].collateral - 1_000)  # everything
    assert w.settlement.account(w.c.address).collateral == 0


def test_a_suspended_brands_collateral_leaves_only_by_governance(w):
    """M3: v1's withdraw had no status check and paid msg.sender, so a stolen gateway key withdrew
    everything after governance suspended the brand."""
    b = w.b
    w.registry.suspend(w.gov, b.address, "key compromised")
    w.settlement.deposit(w.t(b), 500)  # adding is still allowed
    with reverts("BrandNotActive", account=b.address):
        w.settlement.withdraw(w.t(b), 1)
    with reverts("NoPayout", brand=b.address):
        w.settlement.release_collateral(w.gov, b.address, 700)
    with reverts("AccessControlUnauthorizedAccount", account=b.address, neededRole=GOVERNOR):
        w.settlement.set_payout(w.t(b), b.address, w.outsider.address)
    treasury = w.candidate.address
    receipt = w.settlement.set_payout(w.gov, b.address, treasury)
    assert w.settlement.events(receipt, "PayoutSet") == [{"id": 2, "brand": b.address, "payout": treasury}]
    with reverts("AccessControlUnauthorizedAccount", account=b.address, neededRole=GOVERNOR):
        w.settlement.release_collateral(w.t(b), b.address, 700)
    receipt = w.settlement.release_collateral(w.gov, b.address, 700)
    assert w.settlement.events(receipt, "CollateralWithdrawn") == [
        {"brand": b.address, "amount": 700, "collateral": TERMS[1].collateral - 200, "to": treasury}]
    assert w.token.balance_of(treasury) == 700
    assert w.settlement.account(b.address).collateral == TERMS[1].collateral - 200
    w.registry.reinstate(w.gov, b.address)
    with reverts("BrandIsActive", brand=b.address):  # an active brand withdraws for itself
        w.settlement.release_collateral(w.gov, b.address, 1)
    w.settlement.withdraw(w.t(b), 300)  # to its payout address now
    assert w.token.balance_of(treasury) == 1_000
    assert w.token.balance_of(b.address) == SPARE_TOKENS - 500


def test_rotation_keeps_the_brands_collateral_record_and_nonces(w):
    """M3: a compromised gateway key is replaced without losing the brand's position; the old key can
    do nothing more, and authorisations signed for the old account are void."""
    b, m = w.b, w.members[0]
    new = w.candidate
    w.mint(w.a, m, 500)
    r, _ = w.redeem(m, b, 100)
    stale = w.authorise(m, b, 50, nonce=7)
    before = w.settlement.account(b.address)
    w.registry.rotate(w.gov, b.address, new.address)
    assert w.settlement.account(new.address) == before
    for act in (lambda: w.settlement.withdraw(w.t(b), 1), lambda: w.refund(b, r, 1),
                lambda: w.points.mint(w.t(b), m.address, TERMS[1].rate, 1)):
        with reverts("BrandNotActive", account=b.address):
            act()
    with reverts("WrongBrand", expected=b.address, caller=new.address):
        w.points.redeem(w.t(new), stale)
    assert w.points.is_nonce_used(m.address, new.address, r.nonce)  # the member's nonces carried over
    w.refund(new, r, 100)
    w.settlement.withdraw(w.t(new), 1)
    w.token.approve(w.t(new), w.settlement.address, 0)
    receipt = w.close()
    assert {e["brand"] for e in w.settlement.events(receipt, "BrandSettled")} == {w.a.address, new.address}


def test_withdraw_never_touches_reserved_collateral(w):
    b, m = w.b, w.members[0]
    collateral = TERMS[1].collateral
    w.mint(b, m, 3_000)
    free = collateral - 3_000 * VPP
    assert w.settlement.open_position(b.address).free_collateral == free
    with reverts("InsufficientCollateral", brand=b.address, required=free + 1, available=free):
        w.settlement.withdraw(w.t(b), free + 1)
    # a redemption at the issuing brand releases part of the reservation ...
    w.redeem(m, b, 1_000)
    assert w.settlement.open_position(b.address).free_collateral == free + 1_000 * VPP
    # ... a redemption elsewhere does not
    w.redeem(m, w.c, 500)
    assert w.settlement.open_position(b.address).free_collateral == free + 1_000 * VPP
    w.settlement.withdraw(w.t(b), free + 1_000 * VPP)
    with reverts("InsufficientCollateral", brand=b.address, required=1, available=0):
        w.settlement.withdraw(w.t(b), 1)
    # the close moves the net issuance to the pool: what is left is free again
    w.close()
    account = w.settlement.account(b.address)
    assert account.collateral == 0  # 2_000 AP net issued, exactly what was left
    w.settlement.deposit(w.t(b), 5 * VPP)
    assert w.settlement.open_position(b.address).free_collateral == 5 * VPP
    w.settlement.withdraw(w.t(b), 5 * VPP)


def test_collateral_free_again_after_close(w):
    a, m = w.a, w.members[1]
    w.mint(a, m, 2_000)
    reserved_free = TERMS[0].collateral - 2_000 * VPP
    assert w.settlement.open_position(a.address).free_collateral == reserved_free
    w.close()
    position = w.settlement.open_position(a.address)
    assert (position.issued, position.redeemed, position.free_collateral) == (0, 0, reserved_free)
    w.settlement.withdraw(w.t(a), reserved_free)
    # a brand owed by the pool gets the credit as collateral at the close, and may take it out
    w.redeem(m, w.c, 2_000)
    w.close()
    assert w.settlement.account(w.c.address).collateral == TERMS[2].collateral + 2_000 * VPP
    w.settlement.withdraw(w.t(w.c), TERMS[2].collateral + 2_000 * VPP)
    assert w.settlement.pool_balance() == 0 == w.points.total_supply()
    assert held(w) == w.settlement.total_collateral() == TERMS[1].collateral


def test_close_epoch(w):
    a, b, c = w.a, w.b, w.c
    m0, m1, m2 = w.members[:3]
    opened_at = w.settlement.contract.functions.epochOpenedAt().call()
    w.mint_batch(a, [(m0.address, 1_000, "e1"), (m1.address, 500, "e2")])
    w.mint(c, m2, 200)
    w.redeem(m0, b, 300)
    w.redeem(m1, a, 100)
    r, _ = w.redeem(m2, c, 50)
    w.refund(c, r, 20)
    before = {x.address: w.settlement.account(x.address).collateral for x in w.brands}

    receipt = w.close()
    settled = w.settlement.events(receipt, "BrandSettled")
    expected = {
        a.address: (1_500, 100),
        b.address: (0, 300),
        c.address: (220, 50),  # the refund counts as issued
    }
    assert [e["brand"] for e in settled] == [a.address, c.address, b.address]  # first-activity order
    for e in settled:
        issued, redeemed = expected[e["brand"]]
        net = (redeemed - issued) * VPP
        assert (e["epoch"], e["issued"], e["redeemed"], e["netValue"]) == (1, issued, redeemed, net)
        assert e["collateral"] == before[e["brand"]] + net == w.settlement.account(e["brand"]).collateral
    supply = w.points.total_supply()
    assert supply == 1_700 - 430
    assert w.settlement.events(receipt, "EpochClosed") == [
        {"epoch": 1, "openedAt": opened_at, "issued": 1_720, "redeemed": 450, "pool": supply * VPP, "supply": supply}
    ]
    assert w.settlement.pool_balance() == supply * VPP
    assert sum(e["netValue"] for e in settled) == -w.settlement.pool_balance()
    assert held(w) == w.settlement.pool_balance() + w.settlement.total_collateral()
    assert w.settlement.current_epoch() == 2
    assert w.settlement.contract.functions.epochOpenedAt().call() == block_time(w, receipt)
    account = w.settlement.account(a.address)
    assert (account.issued, account.redeemed, account.settled_issued, account.settled_redeemed) == (1_500, 100, 1_500, 100)

    # next epoch: only B is active; the others emit nothing
    pool = w.settlement.pool_balance()
    w.redeem(m1, b, 400)
    receipt = w.close()
    settled = w.settlement.events(receipt, "BrandSettled")
    assert [(e["epoch"], e["brand"], e["issued"], e["redeemed"], e["netValue"]) for e in settled] == [
        (2, b.address, 0, 400, 400 * VPP)
    ]
    assert w.settlement.pool_balance() == pool - 400 * VPP == w.points.total_supply() * VPP
    closed = w.settlement.events(receipt, "EpochClosed")[0]
    assert (closed["epoch"], closed["issued"], closed["redeemed"]) == (2, 0, 400)

    # an empty epoch closes with no movement at all
    receipt = w.close()
    assert w.settlement.events(receipt, "BrandSettled") == []
    closed = w.settlement.events(receipt, "EpochClosed")[0]
    assert (closed["epoch"], closed["issued"], closed["redeemed"], closed["pool"]) == (3, 0, 0, pool - 400 * VPP)
    assert w.settlement.current_epoch() == 4


def test_close_epoch_is_independent_of_brand_order(w):
    m = w.members[0]
    w.mint(w.c, m, 100)
    w.redeem(m, w.a, 10)
    w.mint(w.c, m, 1)
    w.redeem(m, w.c, 1)
    w.close()
    w.mint(w.c, m, 100)
    w.redeem(m, w.a, 10)  # A is settled first this time, owed by a pool that holds none of C's new mint
    w.settlement.set_credit_limit(w.gov, w.a.address, 0)
    assert w.settlement.touched_brands() == [3, 1]
    receipt = w.close()
    settled = w.settlement.events(receipt, "BrandSettled")
    assert [(e["brand"], e["netValue"]) for e in settled] == [(w.c.address, -100 * VPP), (w.a.address, 10 * VPP)]
    assert w.settlement.pool_balance() == 180 * VPP == w.points.total_supply() * VPP


def test_close_epoch_with_a_creditor_settled_before_the_issuer(w):
    m = w.members[0]
    w.mint(w.c, m, 100)
    w.close()
    w.redeem(m, w.a, 100)  # A first: owed 100 by the pool
    w.mint(w.c, m, 10)
    receipt = w.close()
    settled = w.settlement.events(receipt, "BrandSettled")
    assert [(e["brand"], e["netValue"]) for e in settled] == [(w.a.address, 100 * VPP), (w.c.address, -10 * VPP)]
    assert w.settlement.pool_balance() == 10 * VPP == w.points.total_supply() * VPP


def test_close_epoch_settles_a_suspended_brand(w):
    w.mint(w.a, w.members[0], 100)
    w.redeem(w.members[0], w.b, 60)
    w.registry.suspend(w.gov, w.b.address, "review")
    w.registry.suspend(w.gov, w.a.address, "review")
    receipt = w.close()
    assert [(e["brand"], e["netValue"]) for e in w.settlement.events(receipt, "BrandSettled")] == [
        (w.a.address, -100 * VPP), (w.b.address, 60 * VPP)
    ]
    assert w.settlement.pool_balance() == 40 * VPP


def test_close_epoch_timing_and_who_may_close(w):
    """M2 and L6: v1 had no minimum epoch length (the settler could close at will) and only the
    settler key could ever close, so the alliance's liveness rested on one key."""
    opened = w.settlement.epoch_opened_at()
    open_for = w.now() + 1 - opened  # the next block's time
    with reverts("EpochTooShort", minimum=MIN_EPOCH):
        w.settlement.close_epoch(w.gov)
    w.chain.advance_time(opened + MIN_EPOCH - w.now())
    for caller in (w.a, w.outsider):  # before the epoch length only the settler role closes
        with reverts("EarlyCloseNotAllowed", caller=caller.address, epochLength=EPOCH):
            w.settlement.close_epoch(w.t(caller))
    grant = w.settlement.contract.functions.grantRole(SETTLER, w.outsider.address)
    w.gov.send(grant)  # the role can be granted to a settlement service
    receipt = w.settlement.close_epoch(w.t(w.outsider))
    assert w.settlement.events(receipt, "EpochClosed")[0]["epoch"] == 1
    # after the epoch length, anyone
    w.chain.advance_time(EPOCH)
    receipt = w.settlement.close_epoch(w.t(w.a))
    assert w.settlement.events(receipt, "EpochClosed")[0]["epoch"] == 2
    assert open_for < MIN_EPOCH


def test_close_epoch_is_refused_while_paused(w):
    """M2 and L1: v1 closed while AlliancePoints was paused (refunds blocked), and Settlement's deposit,
    withdraw and close had no pause at all."""
    m = w.members[0]
    w.mint(w.a, m, 10)
    w.chain.advance_time(MIN_EPOCH)
    w.points.pause(w.gov)
    with reverts("PointsPaused"):
        w.settlement.close_epoch(w.gov)
    w.points.unpause(w.gov)
    receipt = w.settlement.pause(w.gov)
    assert w.settlement.events(receipt, "Paused") == [{"account": w.governor.address}]
    for act in (lambda: w.settlement.close_epoch(w.gov), lambda: w.settlement.deposit(w.t(w.a), 1),
                lambda: w.settlement.withdraw(w.t(w.a), 1), lambda: w.mint(w.a, m, 1), lambda: w.redeem(m, w.b, 1)):
        with reverts("EnforcedPause"):
            act()
    with reverts("AccessControlUnauthorizedAccount", account=w.a.address, neededRole=GOVERNOR):
        w.settlement.unpause(w.t(w.a))
    w.settlement.unpause(w.gov)
    assert w.settlement.events(w.settlement.close_epoch(w.gov), "EpochClosed")[0]["issued"] == 10


def test_close_visits_only_the_brands_active_in_the_epoch(w):
    """L6: v1's close looped over every brand ever admitted, each with an external call."""
    m = w.members[0]
    assert w.settlement.touched_brands() == []
    w.mint(w.c, m, 10)
    w.redeem(m, w.c, 5)
    w.mint(w.c, m, 10)
    assert w.settlement.touched_brands() == [3]
    w.redeem(m, w.a, 5)
    assert w.settlement.touched_brands() == [3, 1]
    receipt = w.close()
    assert [e["brand"] for e in w.settlement.events(receipt, "BrandSettled")] == [w.c.address, w.a.address]
    assert w.settlement.touched_brands() == []


def test_record_hooks_only_for_the_points_contract(w):
    f = w.settlement.contract.functions
    for caller in (w.a, w.governor):
        t = w.t(caller) if caller is not w.governor else w.gov
        for call in (f.recordIssue(1, 1), f.recordRedemption(1, 1)):
            with reverts("OnlyPoints", caller=caller.address):
                t.send(call)
    assert w.settlement.account(w.a.address).issued == 0
