"""Deployment: constructor checks and how the contracts are bound together."""

from __future__ import annotations

from eth_utils import keccak
from web3.logs import DISCARD
from web3.utils.address import get_create_address

from contracts.artifacts import CONTRACT_NAMES, artifact_hash, load_artifact
import json

import pytest

from contracts.client import Redemption
from contracts.defaults import CONTRACTS_VERSION
from contracts.manifest import Manifest
from contracts_testkit import ADMIN_DELAY, EPOCH, MIN_EPOCH, REFUND_WINDOW, VPP, reverts, role

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
    assert (m.contracts_version, m.epoch_lengths, m.refund_window) == (CONTRACTS_VERSION, (MIN_EPOCH, EPOCH), REFUND_WINDOW)
    assert Manifest.from_json(m.to_json()) == m
    assert all(load_artifact(name)["contractsVersion"] == CONTRACTS_VERSION for name in CONTRACT_NAMES)
    p = w.points.contract.functions
    assert (p.registry().call(), p.settlement().call()) == (w.registry.address, w.settlement.address)
    assert w.settlement.contract.functions.points().call() == w.points.address
    assert w.settlement.contract.functions.registry().call() == w.registry.address
    assert p.refundWindow().call() == REFUND_WINDOW
    assert (w.settlement.contract.functions.minEpochLength().call(), w.settlement.contract.functions.epochLength().call()) == (MIN_EPOCH, EPOCH)
    for contract in (w.registry, w.points, w.settlement):
        f = contract.contract.functions
        assert f.hasRole(role("GOVERNOR_ROLE"), w.governor.address).call()
        assert f.hasRole(b"\x00" * 32, w.governor.address).call()
        assert not f.hasRole(role("GOVERNOR_ROLE"), w.a.address).call()
        assert (f.defaultAdmin().call(), f.defaultAdminDelay().call()) == (w.governor.address, ADMIN_DELAY)
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
        w.governor.address, 0, w.registry.address, w.token.address, wrong_points, VPP, [0, EPOCH]))["contractAddress"]
    with reverts("SettlementNotBound", settlement=settlement):
        gov.send(factory(w, "AlliancePoints").constructor(w.governor.address, 0, w.registry.address, settlement, REFUND_WINDOW))
    # and an existing deployment's Settlement cannot be reused either
    with reverts("SettlementNotBound", settlement=w.settlement.address):
        gov.send(factory(w, "AlliancePoints").constructor(w.governor.address, 0, w.registry.address, w.settlement.address, REFUND_WINDOW))


def test_points_constructor_rejects_a_settlement_on_another_registry(w):
    """L7: v1 checked only `settlement.points()`; with two registries no close could ever complete."""
    gov = w.gov
    other_registry = gov.send(factory(w, "AllianceRegistry").constructor(w.governor.address, 0, 86_400))["contractAddress"]
    nonce = w.chain.w3.eth.get_transaction_count(w.governor.address, "pending")
    points_at = get_create_address(w.governor.address, nonce + 1)
    settlement = gov.send(factory(w, "Settlement").constructor(
        w.governor.address, 0, other_registry, w.token.address, points_at, VPP, [0, EPOCH]))["contractAddress"]
    with reverts("SettlementNotBound", settlement=settlement):
        gov.send(factory(w, "AlliancePoints").constructor(w.governor.address, 0, w.registry.address, settlement, REFUND_WINDOW))
    with reverts("ZeroAddress"):
        gov.send(factory(w, "AlliancePoints").constructor(w.governor.address, 0, ZERO, settlement, REFUND_WINDOW))
    with reverts("ZeroAddress"):
        gov.send(factory(w, "ConsentAnchor").constructor(ZERO))


def test_admin_transfer_is_two_step_with_a_delay(w):
    """Informational finding: v1 granted the admin role in one step to one account."""
    f = w.registry.contract.functions
    w.gov.send(f.beginDefaultAdminTransfer(w.candidate.address))
    with reverts("AccessControlEnforcedDefaultAdminDelay"):
        w.t(w.candidate).send(f.acceptDefaultAdminTransfer())
    w.chain.advance_time(ADMIN_DELAY + 1)
    with reverts("AccessControlInvalidDefaultAdmin", defaultAdmin=w.outsider.address):
        w.t(w.outsider).send(f.acceptDefaultAdminTransfer())
    w.t(w.candidate).send(f.acceptDefaultAdminTransfer())
    assert f.defaultAdmin().call() == w.candidate.address
    assert not f.hasRole(b"\x00" * 32, w.governor.address).call()


def test_a_v1_manifest_is_refused():
    v1 = {"chain_id": 1, "addresses": {}, "deployed_block": 0, "governor": ZERO, "value_per_point": 1, "artifact_hashes": {}}
    with pytest.raises(ValueError, match="contracts v1"):
        Manifest.from_json(json.dumps(v1))


def test_settlement_constructor_checks(w):
    f = factory(w, "Settlement")
    g, r, t, p, e = w.governor.address, w.registry.address, w.token.address, w.outsider.address, [0, EPOCH]
    with reverts("AccessControlInvalidDefaultAdmin", defaultAdmin=ZERO):
        w.gov.send(f.constructor(ZERO, 0, r, t, p, VPP, e))
    for args in ((g, 0, ZERO, t, p, VPP, e), (g, 0, r, ZERO, p, VPP, e), (g, 0, r, t, ZERO, VPP, e)):
        with reverts("ZeroAddress"):
            w.gov.send(f.constructor(*args))
    with reverts("ZeroAmount"):
        w.gov.send(f.constructor(g, 0, r, t, p, 0, e))
    with reverts("ZeroAmount"):
        w.gov.send(f.constructor(g, 0, r, t, p, VPP, [0, 0]))
    with reverts("EpochTooShort"):
        w.gov.send(f.constructor(g, 0, r, t, p, VPP, [EPOCH + 1, EPOCH]))


def test_registry_constructor_checks(w):
    f = factory(w, "AllianceRegistry")
    with reverts("AccessControlInvalidDefaultAdmin", defaultAdmin=ZERO):
        w.gov.send(f.constructor(ZERO, 0, 86_400))
    with reverts("NoticeTooShort", notice=86_399, minimum=86_400):
        w.gov.send(f.constructor(w.governor.address, 0, 86_399))
    receipt = w.gov.send(f.constructor(w.governor.address, 0, 86_400))
    registry = w.chain.w3.eth.contract(address=receipt["contractAddress"], abi=load_artifact("AllianceRegistry")["abi"])
    events = registry.events.RateNoticeScheduled().process_receipt(receipt, errors=DISCARD)
    assert [dict(e["args"]) for e in events] == [{"previousNotice": 0, "notice": 86_400, "effectiveAt": events[0]["args"]["effectiveAt"]}]


def test_settlement_token(w):
    f = w.token.contract.functions
    assert (f.name().call(), f.symbol().call(), f.owner().call()) == ("Alliance Settlement Dollar", "ASD", w.governor.address)
    receipt = w.token.mint(w.gov, w.outsider.address, 5)
    assert w.token.events(receipt, "Transfer") == [{"from": ZERO, "to": w.outsider.address, "value": 5}]
    with reverts("OwnableUnauthorizedAccount", account=w.a.address):
        w.token.mint(w.t(w.a), w.a.address, 1)


def test_deploy_without_a_governor_key_saves_the_one_it_makes(tmp_path, monkeypatch):
    """Before, the key it made was neither shown nor saved: the alliance could never be managed.
    ALLIANCE_MANIFEST says where the manifest (and the key beside it) go."""
    import os
    import re
    import stat

    from eth_account import Account
    from typer.testing import CliRunner

    from contracts.cli import app

    monkeypatch.delenv("ALLIANCE_GOVERNOR_KEY", raising=False)
    manifest = tmp_path / "alliance" / "deployment.json"
    result = CliRunner().invoke(app, ["deploy"], env={"ALLIANCE_MANIFEST": str(manifest), "ALLIANCE_CHAIN_URL": "embedded"})
    assert result.exit_code == 0, result.output
    saved = manifest.parent / "governor.key"
    assert manifest.exists() and stat.S_IMODE(os.stat(saved).st_mode) == 0o600
    governor = Account.from_key(saved.read_text().strip())
    assert governor.address in result.output and str(saved) in result.output.replace("\n", "")
    again = CliRunner().invoke(app, ["deploy"], env={"ALLIANCE_MANIFEST": str(manifest), "ALLIANCE_CHAIN_URL": "embedded"})
    assert again.exit_code == 2 and "governor.keyexists" in re.sub(r"[\s│╭╮╰╯─]+", "", again.output)
    assert Account.from_key(saved.read_text().strip()).address == governor.address  # never overwritten


def test_a_read_where_no_contract_is_says_so(w):
    """Before, a chain that lost its state (anvil without --state) made every read a decoding error
    (the gateway's reconciliation answered 500); now it is a ChainError naming the likely cause."""
    from eth_account import Account

    from contracts.chain import ChainError
    from contracts.client import PointsClient

    nowhere = PointsClient(w.chain, Account.create().address)
    with pytest.raises(ChainError, match="was the chain reset"):
        nowhere.balance_of(w.a.address)
