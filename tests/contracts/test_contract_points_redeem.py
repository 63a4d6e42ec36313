"""AlliancePoints spend side: redeem by EIP-712 authorisation, refunds, cancelled authorisations."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.messages import _hash_eip191_message, encode_typed_data

from contracts.client import NONCES_PER_WORD, Redemption
from contracts_testkit import FAR, TERMS, VPP, reverts

ZERO = "0x" + "00" * 20


@pytest.fixture
def funded(w):
    """w with members[0..2] holding 1_000 AP each, issued by brand A."""
    w.points.mint_batch(w.t(w.a), [(m.address, 1_000, f"seed-{i}") for i, m in enumerate(w.members[:3])])
    return w


# ---------------------------------------------------------------------- redeem


def test_redeem(funded):
    w = funded
    m = w.members[0]
    r = w.authorise(m, w.b, 300)
    assert r.nonce == 0
    # the contract's digest is the one the wallet signed
    digest = w.points.contract.functions.redemptionDigest(r.as_struct()).call()
    signable = encode_typed_data(Redemption.domain(w.chain.chain_id, w.points.address), Redemption.TYPES, r.message())
    assert digest == _hash_eip191_message(signable)
    assert Account.recover_message(signable, signature=r.signature) == m.address
    receipt = w.points.redeem(w.t(w.b), r)
    assert w.points.events(receipt, "Redeemed") == [
        {"owner": m.address, "brand": w.b.address, "nonce": 0, "amount": 300, "epoch": 1}
    ]
    assert w.points.events(receipt, "Transfer") == [{"from": m.address, "to": ZERO, "value": 300}]
    assert w.points.balance_of(m.address) == 700
    assert w.points.total_supply() == 2_700
    assert w.settlement.open_position(w.b.address).redeemed == 300
    assert w.settlement.account(w.b.address).redeemed == 300
    assert w.points.is_nonce_used(m.address, w.b.address, 0)
    assert not w.points.is_nonce_used(m.address, w.a.address, 0)  # nonces are per (owner, brand)
    assert w.points.free_nonce(m.address, w.b.address) == 1
    # the member paid no gas and needs none
    assert w.chain.w3.eth.get_balance(m.address) == 0


def test_redeem_nonces_are_unordered_and_per_brand(funded):
    w = funded
    m = w.members[0]
    for brand, nonce in ((w.a, 5), (w.a, 2), (w.a, NONCES_PER_WORD + 1), (w.b, 5)):
        w.redeem(m, brand, 1, nonce=nonce)
    assert w.points.contract.functions.usedNonces(m.address, w.a.address, 0).call() == (1 << 5) | (1 << 2)
    assert w.points.contract.functions.usedNonces(m.address, w.a.address, 1).call() == 1 << 1
    assert w.points.free_nonce(m.address, w.a.address) == 0
    assert w.points.free_nonce(m.address, w.a.address, reserved=[0, 1]) == 3
    assert w.points.balance_of(m.address) == 996


def test_redeem_at_another_brand_is_wrong_brand(funded):
    w = funded
    r = w.authorise(w.members[0], w.b, 10)
    with reverts("WrongBrand", expected=w.b.address, caller=w.c.address):
        w.points.redeem(w.t(w.c), r)
    assert w.points.balance_of(w.members[0].address) == 1_000


def test_redeem_expired(funded):
    w = funded
    deadline = w.now() + 30
    r = w.authorise(w.members[0], w.a, 10, deadline=deadline)
    w.chain.advance_time(120)
    with reverts("AuthorizationExpired", deadline=deadline) as info:
        w.points.redeem(w.t(w.a), r)
    assert info.value.args_["nowTs"] > deadline


def test_redeem_invalid_signatures(funded):
    w = funded
    m, other = w.members[0], w.members[1]
    chain_id = w.chain.chain_id
    base = Redemption(m.address, w.a.address, 10, 7, FAR)
    bad = {
        "another key": base.signed_by(other, chain_id, w.points.address),
        "another chain id": base.signed_by(m, chain_id + 1, w.points.address),
        "another verifying contract": base.signed_by(m, chain_id, w.settlement.address),
        "another amount": Redemption(m.address, w.a.address, 11, 7, FAR, base.signed_by(m, chain_id, w.points.address).signature),
        "garbage": Redemption(m.address, w.a.address, 10, 7, FAR, b"\x01" * 65),
        "empty": Redemption(m.address, w.a.address, 10, 7, FAR, b""),
    }
    for case, r in bad.items():
        with reverts("InvalidSignature"):
            w.points.redeem(w.t(w.a), r)
    # an owner that is a contract without ERC-1271 support never validates
    contract_owner = Redemption(w.settlement.address, w.a.address, 1, 0, FAR).signed_by(m, chain_id, w.points.address)
    with reverts("InvalidSignature"):
        w.points.redeem(w.t(w.a), contract_owner)
    assert not w.points.is_nonce_used(m.address, w.a.address, 7)
    w.points.redeem(w.t(w.a), base.signed_by(m, chain_id, w.points.address))


def test_redeem_replay_is_rejected(funded):
    w = funded
    m = w.members[0]
    r, _ = w.redeem(m, w.c, 10)
    with reverts("NonceAlreadyUsed", owner=m.address, brand=w.c.address, nonce=r.nonce):
        w.points.redeem(w.t(w.c), r)
    # same nonce, new amount: still the same (owner, brand, nonce)
    again = w.authorise(m, w.c, 5, nonce=r.nonce)
    with reverts("NonceAlreadyUsed"):
        w.points.redeem(w.t(w.c), again)
    assert w.points.balance_of(m.address) == 990


def test_redeem_zero_amount(funded):
    with reverts("ZeroAmount"):
        funded.redeem(funded.members[0], funded.a, 0)


def test_redeem_paused(funded):
    w = funded
    r = w.authorise(w.members[0], w.a, 10)
    w.points.pause(w.gov)
    with reverts("EnforcedPause"):
        w.points.redeem(w.t(w.a), r)
    w.points.unpause(w.gov)
    w.points.redeem(w.t(w.a), r)


def test_redeem_at_suspended_brand(funded):
    w = funded
    r = w.authorise(w.members[0], w.b, 10)
    w.registry.suspend(w.gov, w.b.address, "audit")
    with reverts("BrandNotActive", brand=w.b.address):
        w.points.redeem(w.t(w.b), r)
    with reverts("BrandNotActive", brand=w.outsider.address):
        w.points.redeem(w.t(w.outsider), w.authorise(w.members[0], w.outsider, 10))


def test_redeem_more_than_balance(funded):
    w = funded
    m = w.members[0]
    with reverts("ERC20InsufficientBalance", sender=m.address, balance=1_000, needed=1_001):
        w.redeem(m, w.a, 1_001)
    stranger = Account.create()
    with reverts("ERC20InsufficientBalance", sender=stranger.address, balance=0, needed=1):
        w.redeem(stranger, w.a, 1)
    assert not w.points.is_nonce_used(m.address, w.a.address, 0)


# ---------------------------------------------------------------------- refund


def test_refund(funded):
    w = funded
    m = w.members[0]
    r, _ = w.redeem(m, w.b, 400, deadline=w.now() + 60)
    w.chain.advance_time(600)  # the authorisation's deadline does not bind refunds
    receipt = w.points.refund(w.t(w.b), r, 150)
    assert w.points.events(receipt, "Refunded") == [
        {"owner": m.address, "brand": w.b.address, "nonce": r.nonce, "amount": 150, "epoch": 1}
    ]
    assert w.points.events(receipt, "Transfer") == [{"from": ZERO, "to": m.address, "value": 150}]
    assert w.points.balance_of(m.address) == 750
    assert w.points.total_supply() == 2_750
    assert w.settlement.open_position(w.b.address).redeemed == 250
    assert w.points.is_nonce_used(m.address, w.b.address, r.nonce)  # a refund never frees the nonce
    again = w.authorise(m, w.b, 400, nonce=r.nonce)
    with reverts("NonceAlreadyUsed"):
        w.points.redeem(w.t(w.b), again)


def test_refund_only_once(funded):
    w = funded
    r, _ = w.redeem(w.members[0], w.b, 400)
    w.points.refund(w.t(w.b), r, 100)
    with reverts("NotRefundable", owner=w.members[0].address, brand=w.b.address, nonce=r.nonce):
        w.points.refund(w.t(w.b), r, 100)
    assert w.settlement.open_position(w.b.address).redeemed == 300


def test_refund_bounds(funded):
    w = funded
    r, _ = w.redeem(w.members[0], w.b, 40)
    with reverts("RefundTooLarge", amount=41, authorised=40):
        w.points.refund(w.t(w.b), r, 41)
    with reverts("ZeroAmount"):
        w.points.refund(w.t(w.b), r, 0)
    with reverts("WrongBrand", expected=w.b.address, caller=w.c.address):
        w.points.refund(w.t(w.c), r, 1)
    forged = Redemption(r.owner, r.brand, r.amount, r.nonce, r.deadline, w.authorise(w.members[1], w.b, 40).signature)
    with reverts("InvalidSignature"):
        w.points.refund(w.t(w.b), forged, 1)
    outsider_r = w.authorise(w.members[0], w.outsider, 5)
    with reverts("NotAdmitted", brand=w.outsider.address):
        w.points.refund(w.t(w.outsider), outsider_r, 1)
    w.points.refund(w.t(w.b), r, 40)  # the whole redemption
    assert w.points.balance_of(w.members[0].address) == 1_000


def test_refund_after_the_epoch_closed(funded):
    w = funded
    m0, m1 = w.members[0], w.members[1]
    r, _ = w.redeem(m0, w.b, 50)
    w.close()
    # nothing redeemed at B in the new epoch: the settlement refuses first
    with reverts("RefundExceedsEpochRedemptions", brand=w.b.address, amount=50, redeemedInEpoch=0):
        w.points.refund(w.t(w.b), r, 50)
    # with enough redeemed in the new epoch, the nonce word proves r is from a closed epoch
    w.redeem(m1, w.b, 200)
    with reverts("NotRefundable", owner=m0.address, brand=w.b.address, nonce=r.nonce):
        w.points.refund(w.t(w.b), r, 50)
    # a later redemption in the same nonce word re-stamps the word's epoch: still not refundable
    r2, _ = w.redeem(m0, w.b, 60)
    assert r2.nonce == r.nonce + 1
    with reverts("NotRefundable"):
        w.points.refund(w.t(w.b), r, 50)
    w.points.refund(w.t(w.b), r2, 60)
    assert w.settlement.open_position(w.b.address).redeemed == 200


def test_refund_cannot_exceed_the_brands_open_redemptions(funded):
    w = funded
    m = w.members[0]
    r, _ = w.redeem(m, w.c, 30)
    # two authorisations with the same nonce: only one can be redeemed, but a refund checks the
    # signed amount, so the settlement's own open-epoch bound is what stops the larger one
    bigger = w.authorise(m, w.c, 500, nonce=r.nonce)
    with reverts("RefundExceedsEpochRedemptions", brand=w.c.address, amount=500, redeemedInEpoch=30):
        w.points.refund(w.t(w.c), bigger, 500)


def test_refund_by_a_suspended_brand(funded):
    w = funded
    r, _ = w.redeem(w.members[2], w.c, 80)
    w.registry.suspend(w.gov, w.c.address, "wind-down")
    receipt = w.points.refund(w.t(w.c), r, 80)
    assert w.points.events(receipt, "Refunded")[0]["amount"] == 80
    assert w.points.balance_of(w.members[2].address) == 1_000


def test_refund_paused(funded):
    w = funded
    r, _ = w.redeem(w.members[0], w.b, 10)
    w.points.pause(w.gov)
    with reverts("EnforcedPause"):
        w.points.refund(w.t(w.b), r, 10)


def test_refund_needs_collateral_cover(w):
    """A refund puts AP back in circulation as if issued again: the brand's collateral must cover
    its open net issuance afterwards (the credit limit is not checked)."""
    m = w.members[0]
    cover = TERMS[1].collateral // VPP
    w.mint(w.b, m, cover)
    r, _ = w.redeem(m, w.b, 100)
    w.settlement.withdraw(w.t(w.b), 100 * VPP)  # the redemption freed this much
    with reverts("InsufficientCollateral", brand=w.b.address, required=cover * VPP, available=(cover - 100) * VPP):
        w.points.refund(w.t(w.b), r, 100)
    w.settlement.deposit(w.t(w.b), 100 * VPP)
    w.points.refund(w.t(w.b), r, 100)


# ---------------------------------------------------------------------- cancel


def test_cancel_authorization(funded):
    w = funded
    m = w.members[0]
    w.grant_gas(m)  # a cancellation is the member's own transaction
    r = w.authorise(m, w.a, 10, nonce=3)
    receipt = w.points.cancel_authorization(w.t(m), w.a.address, 3)
    assert w.points.events(receipt, "AuthorizationCancelled") == [{"owner": m.address, "brand": w.a.address, "nonce": 3}]
    assert w.points.is_nonce_used(m.address, w.a.address, 3)
    with reverts("NonceAlreadyUsed", owner=m.address, brand=w.a.address, nonce=3):
        w.points.redeem(w.t(w.a), r)
    with reverts("NonceAlreadyUsed", owner=m.address, brand=w.a.address, nonce=3):
        w.points.cancel_authorization(w.t(m), w.a.address, 3)
    # a cancelled nonce was never redeemed, so there is nothing to refund
    w.redeem(w.members[1], w.a, 50)
    with reverts("NotRefundable", owner=m.address, brand=w.a.address, nonce=3):
        w.points.refund(w.t(w.a), r, 10)
    # a redeemed nonce cannot be cancelled; cancelling works while paused
    done, _ = w.redeem(m, w.a, 1)
    with reverts("NonceAlreadyUsed", nonce=done.nonce):
        w.points.cancel_authorization(w.t(m), w.a.address, done.nonce)
    w.points.pause(w.gov)
    w.points.cancel_authorization(w.t(m), w.a.address, 200)
    assert w.points.is_nonce_used(m.address, w.a.address, 200)
    assert w.points.balance_of(m.address) == 999


def test_reverted_blocks_leave_no_logs(funded):
    """Every test of this module minted "seed-0" and was reverted: only this test's mint is left."""
    logs = funded.points.issued_logs("seed-0")
    assert [(log["brand"], log["to"], log["amount"]) for log in logs] == [(funded.a.address, funded.members[0].address, 1_000)]
