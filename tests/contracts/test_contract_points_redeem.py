"""AlliancePoints spend side: redeem by EIP-712 authorisation, refunds, cancelled authorisations."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.messages import _hash_eip191_message, encode_typed_data

from eth_utils import function_abi_to_4byte_selector

from contracts.client import NONCES_PER_WORD, Redemption, RedemptionRecord
from contracts_testkit import FAR, REFUND_WINDOW, TERMS, VPP, reverts

ZERO = "0x" + "00" * 20


@pytest.fixture
def funded(w):
    """w with members[0..2] holding 1_000 AP each, issued by brand A."""
    w.mint_batch(w.a, [(m.address, 1_000, f"seed-{i}") for i, m in enumerate(w.members[:3])])
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


def test_neighbouring_nonces_share_a_record_slot_without_touching_each_other(funded):
    """Records of nonces 2k and 2k+1 are two halves of one storage slot: a redemption, a refund or a
    cancellation of one leaves the other's record as it was."""
    w = funded
    m = w.members[0]
    even, first = w.redeem(m, w.b, 300, nonce=4)
    odd, second = w.redeem(m, w.b, 200, nonce=5)
    at = [w.chain.w3.eth.get_block(r["blockNumber"])["timestamp"] for r in (first, second)]
    w.refund(w.b, odd, 200)  # all of the odd one back
    w.refund(w.b, even, 1)
    assert w.points.redemption(m.address, w.b.address, 4) == RedemptionRecord(300, 1, at[0], False)
    assert w.points.redemption(m.address, w.b.address, 5) == RedemptionRecord(200, 200, at[1], False)
    with reverts("RefundTooLarge", amount=1, refundable=0):
        w.refund(w.b, odd, 1)
    w.grant_gas(m)
    w.points.cancel_authorization(w.t(m), w.b.address, 7)  # the odd half of a fresh slot
    assert w.points.redemption(m.address, w.b.address, 7) == RedemptionRecord(0, 0, 0, True)
    assert not w.points.is_nonce_used(m.address, w.b.address, 6)
    w.redeem(m, w.b, 5, nonce=6)
    assert w.points.redemption(m.address, w.b.address, 7).cancelled
    assert w.points.contract.functions.usedNonces(m.address, w.b.address, 0).call() == 0b1111_0000
    assert w.points.balance_of(m.address) == 1_000 - 300 - 200 + 201 - 5


def test_a_redemption_above_48_bits_is_refused(funded):
    """A record keeps 48 bits of the amount: anything larger is refused, never truncated."""
    w = funded
    r = w.authorise(w.members[0], w.b, 2**48)
    with reverts("AmountTooLarge", amount=2**48):
        w.points.redeem(w.t(w.b), r)


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
    with reverts("BrandNotActive", account=w.b.address):
        w.points.redeem(w.t(w.b), r)
    with reverts("BrandNotActive", account=w.outsider.address):
        w.points.redeem(w.t(w.outsider), w.authorise(w.members[0], w.outsider, 10))


def test_redeem_more_than_balance(funded):
    w = funded
    m = w.members[0]
    with reverts("InsufficientPoints", owner=m.address, balance=1_000, amount=1_001):
        w.redeem(m, w.a, 1_001)
    stranger = Account.create()
    with reverts("InsufficientPoints", owner=stranger.address, balance=0, amount=1):
        w.redeem(stranger, w.a, 1)
    assert not w.points.is_nonce_used(m.address, w.a.address, 0)


# ---------------------------------------------------------------------- refund


def test_refund(funded):
    w = funded
    m = w.members[0]
    r, redeemed = w.redeem(m, w.b, 400, deadline=w.now() + 60)
    at = w.chain.w3.eth.get_block(redeemed["blockNumber"])["timestamp"]
    assert w.points.redemption(m.address, w.b.address, r.nonce) == RedemptionRecord(400, 0, at, False)
    w.chain.advance_time(600)  # the authorisation's deadline does not bind refunds
    receipt = w.refund(w.b, r, 150)
    assert w.points.events(receipt, "Refunded") == [
        {"owner": m.address, "brand": w.b.address, "nonce": r.nonce, "amount": 150, "epoch": 1}
    ]
    assert w.points.events(receipt, "Transfer") == [{"from": ZERO, "to": m.address, "value": 150}]
    assert w.points.balance_of(m.address) == 750
    assert w.points.total_supply() == 2_750
    position = w.settlement.open_position(w.b.address)
    assert (position.issued, position.redeemed) == (150, 400)  # a refund is booked as AP the brand issues
    assert w.points.redemption(m.address, w.b.address, r.nonce).refunded == 150
    assert w.points.is_nonce_used(m.address, w.b.address, r.nonce)  # a refund never frees the nonce
    again = w.authorise(m, w.b, 400, nonce=r.nonce)
    with reverts("NonceAlreadyUsed"):
        w.points.redeem(w.t(w.b), again)
    w.refund(w.b, r, 250)  # the rest, in a second refund
    with reverts("RefundTooLarge", amount=1, refundable=0):
        w.refund(w.b, r, 1)
    assert w.points.balance_of(m.address) == 1_000


def test_refund_never_exceeds_what_the_redemption_burned(funded):
    """M1: v1 refunded on any valid signature over the same (owner, brand, nonce), bounded only by that
    signature's amount: a member redeemed 10 AP and the brand refunded 900 with a stale authorisation
    of the same nonce. The amount burned is now recorded at redemption; no signature is consulted."""
    w = funded
    m = w.members[0]
    stale = w.authorise(m, w.c, 900, nonce=4, deadline=w.now() + 30)  # signed, expired, never submitted
    w.chain.advance_time(60)
    r, _ = w.redeem(m, w.c, 10, nonce=stale.nonce)
    with reverts("RefundTooLarge", amount=900, refundable=10):
        w.points.refund(w.t(w.c), m.address, stale.nonce, 900)
    with reverts("RefundTooLarge", amount=11, refundable=10):
        w.refund(w.c, r, 11)
    w.refund(w.c, r, 10)
    assert w.points.balance_of(m.address) == 1_000
    assert w.points.total_supply() == 3_000


def test_refund_bounds(funded):
    w = funded
    m = w.members[0]
    r, _ = w.redeem(m, w.b, 40)
    with reverts("RefundTooLarge", amount=41, refundable=40):
        w.refund(w.b, r, 41)
    with reverts("ZeroAmount"):
        w.refund(w.b, r, 0)
    # only the brand the redemption was made at: another brand finds no redemption of its own
    with reverts("NotRefundable", owner=m.address, brand=w.c.address, nonce=r.nonce):
        w.refund(w.c, r, 1)
    with reverts("NotRefundable", owner=m.address, brand=w.b.address, nonce=r.nonce + 1):
        w.points.refund(w.t(w.b), m.address, r.nonce + 1, 1)
    with reverts("BrandNotActive", account=w.outsider.address):
        w.points.refund(w.t(w.outsider), m.address, r.nonce, 1)
    w.refund(w.b, r, 40)  # the whole redemption
    assert w.points.balance_of(m.address) == 1_000


def test_refund_of_a_closed_epochs_redemption_is_booked_in_the_open_one(funded):
    """M2: in v1 the refund right disappeared at the epoch close (and a pause let the settler close
    with refunds blocked). A refund is now bounded by a window of time, not by the epoch."""
    w = funded
    m0 = w.members[0]
    r, _ = w.redeem(m0, w.b, 50)
    w.close()
    receipt = w.refund(w.b, r, 50)
    assert w.points.events(receipt, "Refunded")[0]["epoch"] == 2
    position = w.settlement.open_position(w.b.address)
    assert (position.issued, position.redeemed) == (50, 0)
    w.close()
    settled = w.settlement.account(w.b.address)
    assert (settled.issued, settled.redeemed, settled.collateral) == (50, 50, TERMS[1].collateral)


def test_refund_window(funded):
    w = funded
    r, receipt = w.redeem(w.members[0], w.b, 20)
    at = w.chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"]
    w.chain.advance_time(at + REFUND_WINDOW - w.now() - 5)
    w.refund(w.b, r, 5)  # still inside
    w.chain.advance_time(10)
    with reverts("RefundWindowClosed", redeemedAt=at, window=REFUND_WINDOW):
        w.refund(w.b, r, 5)


def test_refund_is_refused_for_a_suspended_brand(funded):
    """M1/M3: v1 let a suspended brand refund (paid from its collateral, past its suspension)."""
    w = funded
    r, _ = w.redeem(w.members[2], w.c, 80)
    w.registry.suspend(w.gov, w.c.address, "wind-down")
    with reverts("BrandNotActive", account=w.c.address):
        w.refund(w.c, r, 80)
    w.registry.reinstate(w.gov, w.c.address)
    w.refund(w.c, r, 80)


def test_refund_paused(funded):
    w = funded
    r, _ = w.redeem(w.members[0], w.b, 10)
    w.points.pause(w.gov)
    with reverts("EnforcedPause"):
        w.refund(w.b, r, 10)
    w.points.unpause(w.gov)
    w.settlement.pause(w.gov)
    with reverts("EnforcedPause"):
        w.refund(w.b, r, 10)


def test_refund_counts_against_the_credit_limit(w):
    """L2: v1's refunds skipped the credit limit (open net issuance reached 10,500 against 10,000)."""
    m = w.members[0]
    limit = TERMS[0].credit_limit
    w.mint(w.b, m, 1_000)
    r, _ = w.redeem(m, w.a, 1_000)  # A's open net issuance: -1,000
    w.mint(w.a, m, limit + 1_000)  # A at its limit: 11,000 issued, 1,000 redeemed
    with reverts("CreditLimitExceeded", brand=w.a.address, openNetIssued=limit + 500, limit=limit):
        w.refund(w.a, r, 500)


def test_refund_needs_collateral_cover(w):
    """A refund puts AP back in circulation as issued by the brand: its collateral must cover its
    open net issuance afterwards."""
    m = w.members[0]
    cover = TERMS[1].collateral // VPP
    w.mint(w.b, m, cover)
    r, _ = w.redeem(m, w.b, 100)
    w.settlement.withdraw(w.t(w.b), 100 * VPP)  # the redemption freed this much
    with reverts("InsufficientCollateral", brand=w.b.address, required=cover * VPP, available=(cover - 100) * VPP):
        w.refund(w.b, r, 100)
    w.settlement.deposit(w.t(w.b), 100 * VPP)
    w.refund(w.b, r, 100)


# ---------------------------------------------------------------------- batch


def test_redeem_batch_skips_bad_authorisations_and_settles_the_rest_once(funded):
    w = funded
    m0, m1, m2 = w.members[:3]
    soon = w.now() + 30
    good = [w.authorise(m0, w.b, 100), w.authorise(m1, w.b, 200), w.authorise(m2, w.b, 300, nonce=9)]
    used, _ = w.redeem(m2, w.b, 1)
    expired = w.authorise(m0, w.b, 5, nonce=50, deadline=soon)
    w.chain.advance_time(60)
    bad = {
        "WrongBrand": w.authorise(m0, w.c, 5, nonce=51),
        "AuthorizationExpired": expired,
        "NonceAlreadyUsed": w.authorise(m2, w.b, 5, nonce=used.nonce),
        "InsufficientPoints": w.authorise(m1, w.b, 10_000, nonce=52),
        "InvalidSignature": Redemption(m0.address, w.b.address, 5, 53, FAR, w.authorise(m1, w.b, 5, nonce=53).signature),
        "ZeroAmount": w.authorise(m0, w.b, 0, nonce=54),
    }
    batch = [good[0], *bad.values(), good[1], good[2]]
    receipt = w.points.redeem_batch(w.t(w.b), batch)
    assert [(e["owner"], e["nonce"], e["amount"]) for e in w.points.events(receipt, "Redeemed")] == [
        (r.owner, r.nonce, r.amount) for r in good]
    rejected = w.points.events(receipt, "RedemptionRejected")
    selectors = {name: function_abi_to_4byte_selector(entry) for name, entry in
                 ((e["name"], e) for e in w.points.contract.abi if e["type"] == "error")}
    assert [(e["owner"], e["nonce"], e["reason"]) for e in rejected] == [
        (r.owner, r.nonce, selectors[name]) for name, r in bad.items()]
    assert w.settlement.open_position(w.b.address).redeemed == 601
    assert [w.points.balance_of(m.address) for m in (m0, m1, m2)] == [900, 800, 699]
    # the same batch again: every one is now used (or still bad), nothing moves
    receipt = w.points.redeem_batch(w.t(w.b), batch)
    assert w.points.events(receipt, "Redeemed") == []
    assert len(w.points.events(receipt, "RedemptionRejected")) == len(batch)
    assert w.settlement.open_position(w.b.address).redeemed == 601


def test_redeem_batch_checks(funded):
    w = funded
    f = w.points.contract.functions
    r = w.authorise(w.members[0], w.b, 1)
    with reverts("LengthMismatch"):
        w.t(w.b).send(f.redeemBatch([r.as_struct()], []))
    with reverts("BrandNotActive", account=w.outsider.address):
        w.points.redeem_batch(w.t(w.outsider), [r])
    w.points.pause(w.gov)
    with reverts("EnforcedPause"):
        w.points.redeem_batch(w.t(w.b), [r])


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
    with reverts("NotRefundable", owner=m.address, brand=w.a.address, nonce=3):
        w.refund(w.a, r, 10)
    # a redeemed nonce cannot be cancelled
    done, _ = w.redeem(m, w.a, 1)
    with reverts("NonceAlreadyUsed", nonce=done.nonce):
        w.points.cancel_authorization(w.t(m), w.a.address, done.nonce)
    with reverts("NotAdmitted", account=w.outsider.address):
        w.points.cancel_authorization(w.t(m), w.outsider.address, 1)
    assert w.points.balance_of(m.address) == 999


def test_the_pause_stops_every_movement_of_points(funded):
    """L1: v1's pause covered mint, redeem and refund only; AP transfers and cancellations went on."""
    w = funded
    m = w.members[0]
    w.grant_gas(m)
    w.points.pause(w.gov)
    with reverts("EnforcedPause"):
        w.t(m).send(w.points.contract.functions.transfer(w.members[1].address, 1))
    with reverts("EnforcedPause"):
        w.points.cancel_authorization(w.t(m), w.a.address, 200)
    w.points.unpause(w.gov)
    w.t(m).send(w.points.contract.functions.transfer(w.members[1].address, 1))
    w.points.cancel_authorization(w.t(m), w.a.address, 200)
    assert w.points.is_nonce_used(m.address, w.a.address, 200)


def test_reverted_blocks_leave_no_logs(funded):
    """Every test of this module minted "seed-0" and was reverted: only this test's mint is left."""
    logs = funded.points.issued_logs("seed-0")
    assert [(log["brand"], log["to"], log["amount"]) for log in logs] == [(funded.a.address, funded.members[0].address, 1_000)]


def test_the_redeem_gas_limit_bounds_the_costliest_redemptions(w):
    """The gateway's sender gives a batch of redemptions `redeem_gas_limit` instead of estimating it:
    the bound must hold for the costliest case, a brand's first redemptions in its epoch, each by a
    member redeeming there for the first time (a fresh record slot)."""
    holders = [Account.create() for _ in range(40)]
    w.mint_batch(w.a, [(h.address, 100, f"holder-{i}") for i, h in enumerate(holders)])
    single = w.points.redeem(w.t(w.c), w.authorise(holders[0], w.c, 10))
    assert len(w.points.events(single, "Redeemed")) == 1
    assert single["gasUsed"] <= w.points.redeem_gas_limit(1)
    batch = w.points.redeem_batch(w.t(w.b), [w.authorise(h, w.b, 10, nonce=7) for h in holders])
    assert len(w.points.events(batch, "Redeemed")) == len(holders)
    assert batch["gasUsed"] <= w.points.redeem_gas_limit(len(holders))
    assert batch["gasUsed"] / len(holders) >= w.points.REDEEM_GAS_PER_AUTHORISATION / 2  # a bound, not a blank cheque


def test_logs_decode_as_web3_decodes_them(funded):
    """`logs` (eth_abi straight from the ABI, for the sender's speed) agrees with web3's own decoding on
    every event of a batch: indexed addresses, bytes4 reasons, integers, and a mint's indexed bytes32."""
    from web3.logs import DISCARD

    w = funded
    m0, m1 = w.members[:2]
    receipts = [w.points.redeem_batch(w.t(w.b), [w.authorise(m0, w.b, 7), w.authorise(m1, w.b, 10**9), w.authorise(m1, w.b, 3, nonce=4)]),
                w.mint_batch(w.a, [(m0.address, 5, "again-0"), (m1.address, 6, "again-1")])]
    for receipt in receipts:
        names = ("Issued", "Redeemed", "RedemptionRejected", "Transfer")
        expected = sorted(((e["logIndex"], e["event"], dict(e["args"])) for name in names
                           for e in getattr(w.points.contract.events, name)().process_receipt(receipt, errors=DISCARD)),
                          key=lambda e: e[0])
        assert [(name, args) for _, name, args in expected] == w.points.logs(receipt, names)
        assert expected
