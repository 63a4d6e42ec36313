"""Deployment: constructor checks and how the contracts are bound together."""

from __future__ import annotations

from eth_utils import keccak
from web3.logs import DISCARD
from web3.utils.address import get_create_address

from contracts.artifacts import CONTRACT_NAMES, artifact_hash, load_artifact
from contracts.client import Redemption
from contracts_testkit import VPP, reverts, role

ZERO = "0x" + "00" * 20


def factory(w, name):
    artifact = load_artifact(name)
    return w.chain.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])


def test_wiring_and_manifest(w):
    m = w.alliance.manifest
    assert m.chain_id == w.chain.chain_id
    assert m.governor == w.governor.address
    assert m.value_per_point == VPP
    assert m.artifact_hashes == {name: artifact_hash(name) for name in CONTRACT_NAMES}
    p = w.points.contract.functions
    assert (p.registry().call(), p.settlement().call()) == (w.registry.address, w.settlement.address)
    assert w.settlement.contract.functions.points().call() == w.points.address
    for contract in (w.registry, w.points, w.settlement):
        f = contract.contract.functions
        assert f.hasRole(role("GOVERNOR_ROLE"), w.governor.address).call()
        assert f.hasRole(b"\x00" * 32, w.governor.address).call()
        assert not f.hasRole(role("GOVERNOR_ROLE"), w.a.address).call()
    # the EIP-712 domain the wallets sign for
    domain = Redemption.domain(w.chain.chain_id, w.points.address)
    expected = keccak(
        keccak(text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
        + keccak(text=domain["name"]) + keccak(text=domain["version"])
        + domain["chainId"].to_bytes(32, "big") + bytes(12) + bytes.fromhex(w.points.address[2:])
    )
    assert p.domainSeparator().call() == expected
    assert p.REDEEM_TYPEHASH().call() == keccak(text="Redeem(address owner,address brand,uint256 amount,uint256 nonce,uint256 deadline)")
    assert w.token.contract.functions.decimals().call() == 6


def test_points_constructor_rejects_a_settlement_bound_elsewhere(w):
    """A Settlement whose `points` is not the address the AlliancePoints is deployed at."""
    gov = w.gov
    nonce = w.chain.w3.eth.get_transaction_count(w.governor.address, "pending")
    wrong_points = get_create_address(w.governor.address, nonce + 5)  # not the next contract
    settlement = gov.send(factory(w, "Settlement").constructor(
        w.governor.address, w.registry.address, w.token.address, wrong_points, VPP))["contractAddress"]
    with reverts("SettlementNotBound", settlement=settlement):
        gov.send(factory(w, "AlliancePoints").constructor(w.governor.address, w.registry.address, settlement))
    # and an existing deployment's Settlement cannot be reused either
    with reverts("SettlementNotBound", settlement=w.settlement.address):
        gov.send(factory(w, "AlliancePoints").constructor(w.governor.address, w.registry.address, w.settlement.address))


def test_settlement_constructor_checks(w):
    f = factory(w, "Settlement")
    g, r, t, p = w.governor.address, w.registry.address, w.token.address, w.outsider.address
    for args in ((ZERO, r, t, p, VPP), (g, ZERO, t, p, VPP), (g, r, ZERO, p, VPP), (g, r, t, ZERO, VPP)):
        with reverts("ZeroAddress"):
            w.gov.send(f.constructor(*args))
    with reverts("ZeroAmount"):
        w.gov.send(f.constructor(g, r, t, p, 0))


def test_registry_constructor_checks(w):
    f = factory(w, "AllianceRegistry")
    with reverts("ZeroAddress"):
        w.gov.send(f.constructor(ZERO, 86_400))
    with reverts("NoticeTooShort", notice=86_399, minimum=86_400):
        w.gov.send(f.constructor(w.governor.address, 86_399))
    receipt = w.gov.send(f.constructor(w.governor.address, 86_400))
    registry = w.chain.w3.eth.contract(address=receipt["contractAddress"], abi=load_artifact("AllianceRegistry")["abi"])
    events = registry.events.RateNoticeChanged().process_receipt(receipt, errors=DISCARD)
    assert [dict(e["args"]) for e in events] == [{"previousNotice": 0, "newNotice": 86_400}]


def test_settlement_token(w):
    f = w.token.contract.functions
    assert (f.name().call(), f.symbol().call(), f.owner().call()) == ("Alliance Settlement Dollar", "ASD", w.governor.address)
    receipt = w.token.mint(w.gov, w.outsider.address, 5)
    assert w.token.events(receipt, "Transfer") == [{"from": ZERO, "to": w.outsider.address, "value": 5}]
    with reverts("OwnableUnauthorizedAccount", account=w.a.address):
        w.token.mint(w.t(w.a), w.a.address, 1)
