"""Members whose wallet is a contract (ERC-1271): redemption, refund after the wallet changed its key,
and a wallet that burns gas answering. The test wallet is compiled here (needs the Node toolchain)."""

from __future__ import annotations

import pytest
import solcx
from components import unavailable
from eth_account import Account

from contracts import build
from contracts.client import Redemption
from contracts_testkit import FAR, reverts

WALLET = """
// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// A smart wallet that accepts a raw ECDSA signature of the digest by its current signer, and can be
/// told to burn every unit of gas it is given when asked (a hostile wallet).
contract TestWallet {
    address public signer;
    bool public greedy;

    constructor(address signer_) { signer = signer_; }

    function setSigner(address signer_) external { signer = signer_; }

    function setGreedy(bool greedy_) external { greedy = greedy_; }

    function isValidSignature(bytes32 digest, bytes calldata signature) external view returns (bytes4) {
        if (greedy) {
            uint256 n;
            while (gasleft() > 0) n++;
        }
        if (signature.length != 65) return 0xffffffff;
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        return ecrecover(digest, v, r, s) == signer ? this.isValidSignature.selector : bytes4(0xffffffff);
    }
}
"""


@pytest.fixture(scope="module")
def wallet_artifact() -> dict:
    try:
        build._require_toolchain()
    except build.ToolchainMissing as exc:
        unavailable("toolchain", f"cannot compile the test wallet: {exc}")
    out = solcx.compile_standard(
        {"language": "Solidity", "sources": {"TestWallet.sol": {"content": WALLET}},
         "settings": {"evmVersion": "prague", "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object"]}}}},
        solc_binary=build.SOLC_WRAPPER)
    compiled = out["contracts"]["TestWallet.sol"]["TestWallet"]
    return {"abi": compiled["abi"], "bytecode": "0x" + compiled["evm"]["bytecode"]["object"]}


def sign_for(wallet_address: str, key, w, brand, amount: int, nonce: int) -> Redemption:
    """An authorisation owned by the smart wallet, signed (raw digest) by one of its keys."""
    r = Redemption(wallet_address, brand.address, amount, nonce, FAR)
    digest = w.points.contract.functions.redemptionDigest(r.as_struct()).call()
    signature = Account.from_key(key.key).unsafe_sign_hash(digest).signature
    return Redemption(r.owner, r.brand, r.amount, r.nonce, r.deadline, bytes(signature))


@pytest.fixture
def smart(w, wallet_artifact):
    first_key, second_key = Account.create(), Account.create()
    factory = w.chain.w3.eth.contract(abi=wallet_artifact["abi"], bytecode=wallet_artifact["bytecode"])
    address = w.gov.send(factory.constructor(first_key.address))["contractAddress"]
    contract = w.chain.w3.eth.contract(address=address, abi=wallet_artifact["abi"])
    w.mint(w.a, address, 500)
    return contract, first_key, second_key


def test_a_smart_wallet_redeems_and_is_refunded_after_changing_its_key(w, smart):
    """L8: v1's refund re-checked the ERC-1271 signature, so a smart wallet that rotated its keys
    could no longer be refunded. A refund now reads the redemption's record, not a signature."""
    contract, first_key, second_key = smart
    r = sign_for(contract.address, first_key, w, w.b, 100, 0)
    w.points.redeem(w.t(w.b), r)
    assert w.points.balance_of(contract.address) == 400
    w.gov.send(contract.functions.setSigner(second_key.address))  # the wallet's key changes
    assert w.points.redemption(contract.address, w.b.address, 0).amount == 100
    w.refund(w.b, r, 100)
    assert w.points.balance_of(contract.address) == 500
    # the old key no longer signs for the wallet; the new one does
    with reverts("InvalidSignature"):
        w.points.redeem(w.t(w.b), sign_for(contract.address, first_key, w, w.b, 1, 1))
    w.points.redeem(w.t(w.b), sign_for(contract.address, second_key, w, w.b, 1, 1))


def test_a_wallet_that_burns_gas_cannot_sink_a_batch(w, smart):
    """The ERC-1271 question gets at most ERC1271_GAS: a hostile wallet's authorisation is rejected
    and the rest of the batch goes through, at a bounded cost."""
    contract, first_key, _ = smart
    w.gov.send(contract.functions.setGreedy(True))
    member = w.members[0]
    w.mint(w.a, member, 50)
    hostile = sign_for(contract.address, first_key, w, w.b, 10, 0)
    honest = w.authorise(member, w.b, 20)
    receipt = w.points.redeem_batch(w.t(w.b), [hostile, honest])
    assert [e["owner"] for e in w.points.events(receipt, "Redeemed")] == [member.address]
    assert [e["owner"] for e in w.points.events(receipt, "RedemptionRejected")] == [contract.address]
    # the honest redemption (the brand's first in the epoch) and the capped question; uncapped, the
    # wallet would take 63/64 of whatever gas the transaction carries
    assert receipt["gasUsed"] < 200_000 + w.points.contract.functions.ERC1271_GAS().call()
    assert w.points.balance_of(contract.address) == 500 and w.points.balance_of(member.address) == 30
