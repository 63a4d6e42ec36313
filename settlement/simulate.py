"""A synthetic alliance on any chain, driven without gateways: for the benchmark, the property tests and
trying the settlement service out on anvil.

Transactions are ABI-encoded with eth_abi and signed locally with numbered nonces, then sent without
waiting (``flush`` waits for the last one and checks every status), which is what lets anvil take
100,000 events in well under a minute. On the embedded chain each send simply waits.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any, Sequence

from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address

from contracts.chain import Chain, ChainError, ContractRevert, Transactor
from contracts.client import Alliance, Redemption
from contracts.defaults import EPOCH_S
from contracts.deploy import BrandTerms, deploy_alliance, onboard_brand


def _selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


MINT_BATCH = _selector("mintBatch(address[],uint256[],bytes32[],uint32)")
MINT = _selector("mint(address,uint256,uint32,bytes32)")
REDEEM = _selector("redeem((address,address,uint256,uint256,uint256),bytes)")
REFUND = _selector("refund(address,uint256,uint256)")
TRANSFER = _selector("transfer(address,uint256)")
DEPOSIT = _selector("deposit(uint256)")
WITHDRAW = _selector("withdraw(uint256)")
CLOSE = _selector("closeEpoch()")
APPROVE = _selector("approve(address,uint256)")
TOKEN_MINT = _selector("mint(address,uint256)")


FUND = 10**19  # 10 ether: many runs fit in one development faucet


class Sender:
    """Signs and sends one account's transactions, numbering nonces locally; ``wait=False`` sends
    without waiting for the receipt (JSON-RPC nodes only)."""

    def __init__(self, chain: Chain, account: LocalAccount):
        self.chain = chain
        self.account = account
        self.tx = Transactor(chain, account)
        self.pending: list[str] = []
        self._nonce: int | None = None
        self._fees: dict[str, int] | None = None

    def send(self, to: str, data: bytes, gas: int, wait: bool = False) -> Any:
        w3 = self.chain.w3
        if self.chain.embedded or wait:
            self.flush()
            receipt = self.tx._sign_and_send({"to": to_checksum_address(to), "data": "0x" + data.hex(), "gas": gas, "value": 0,
                                              "from": self.account.address, "chainId": self.chain.chain_id, **self._fee()}, True)
            self._nonce = None
            return receipt
        if self._nonce is None:
            self._nonce = w3.eth.get_transaction_count(self.account.address, "pending")
        signed = self.account.sign_transaction({"to": to_checksum_address(to), "data": "0x" + data.hex(), "gas": gas, "value": 0,
                                                "nonce": self._nonce, "chainId": self.chain.chain_id, **self._fee()})
        self._nonce += 1
        tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
        self.pending.append("0x" + bytes(tx_hash).hex())
        return tx_hash

    def _fee(self) -> dict[str, int]:
        if self._fees is None:
            base = self.chain.w3.eth.get_block("latest").get("baseFeePerGas", 0) or 0
            self._fees = {"maxFeePerGas": 4 * base + 2 * 10**9, "maxPriorityFeePerGas": 10**9}
        return self._fees

    def flush(self) -> None:
        """Wait for every transaction sent without waiting; raise if any reverted."""
        if not self.pending:
            return
        w3 = self.chain.w3
        w3.eth.wait_for_transaction_receipt(self.pending[-1], timeout=300, poll_latency=0.02)
        failed = []
        for start in range(0, len(self.pending), 500):
            chunk = self.pending[start:start + 500]
            batch = w3.provider.make_batch_request([("eth_getTransactionReceipt", [h]) for h in chunk])
            for h, r in zip(chunk, sorted(batch, key=lambda r: r["id"])):
                result = r.get("result")
                if result is None or int(result["status"], 16) != 1:
                    failed.append(h)
        self.pending.clear()
        self.chain._nonces.pop(self.account.address, None)
        if failed:
            raise ContractRevert("Reverted", {"transactions": failed[:5], "count": len(failed)})


@dataclass
class SimBrand:
    name: str
    account: LocalAccount
    sender: Sender
    rate: int  # brand points per AP (the simulation never changes it: rate version 1)

    @property
    def address(self) -> str:
        return self.account.address


@dataclass
class SimAlliance:
    chain: Chain
    governor: LocalAccount
    alliance: Alliance
    brands: list[SimBrand] = field(default_factory=list)
    members: list[LocalAccount] = field(default_factory=list)
    _nonces: dict[tuple[str, str], int] = field(default_factory=dict)
    redemptions: list[Redemption] = field(default_factory=list)

    @classmethod
    def deploy(cls, chain: Chain, n_brands: int, *, members: int = 10, fund_members: bool = False,
               collateral: int = 10**15, credit_limit: int = 10**12, value_per_point: int = 10_000,
               epoch_lengths: tuple[int, int] = (0, EPOCH_S)) -> "SimAlliance":
        governor = chain.new_account(FUND)
        alliance = deploy_alliance(chain, governor, value_per_point=value_per_point, epoch_lengths=epoch_lengths)
        sim = cls(chain, governor, alliance)
        for i in range(n_brands):
            sim.add_brand(f"Brand {i}", collateral=collateral, credit_limit=credit_limit)
        sim.members = [chain.new_account(FUND // 10) if fund_members else Account.create() for _ in range(members)]
        return sim

    def add_brand(self, name: str, *, collateral: int, credit_limit: int, rate: int = 100) -> SimBrand:
        account = self.chain.new_account(FUND)
        onboard_brand(self.alliance, self.governor, account, BrandTerms(name, rate, credit_limit, collateral))
        brand = SimBrand(name, account, Sender(self.chain, account), rate)
        self.brands.append(brand)
        return brand

    # -- operations (each returns the events it should cause, for the tests' own bookkeeping)

    def mint_batch(self, brand: SimBrand, grants: Sequence[tuple[str, int, bytes]]) -> None:
        """Mint ``grants`` of (member, AP, ref)."""
        to = [to_checksum_address(g[0]) for g in grants]
        data = MINT_BATCH + abi_encode(["address[]", "uint256[]", "bytes32[]", "uint32"],
                                       [to, [g[1] * brand.rate for g in grants], [g[2] for g in grants], 1])
        brand.sender.send(self.alliance.points.address, data, 150_000 + 40_000 * len(grants))

    def mint(self, brand: SimBrand, to: str, amount: int, ref: bytes | None = None) -> bytes:
        ref = ref or secrets.token_bytes(32)
        data = MINT + abi_encode(["address", "uint256", "uint32", "bytes32"], [to_checksum_address(to), amount * brand.rate, 1, ref])
        brand.sender.send(self.alliance.points.address, data, 250_000)
        return ref

    def authorise(self, member: LocalAccount, brand: SimBrand, amount: int, deadline: int = 2**40) -> Redemption:
        key = (member.address, brand.address)
        nonce = self._nonces.get(key, 0)
        self._nonces[key] = nonce + 1
        return Redemption(member.address, brand.address, amount, nonce, deadline).signed_by(
            member, self.chain.chain_id, self.alliance.points.address)

    def redeem(self, member: LocalAccount, brand: SimBrand, amount: int) -> Redemption:
        r = self.authorise(member, brand, amount)
        data = REDEEM + abi_encode(["(address,address,uint256,uint256,uint256)", "bytes"], [r.as_struct(), r.signature])
        brand.sender.send(self.alliance.points.address, data, 220_000)
        self.redemptions.append(r)
        return r

    def refund(self, brand: SimBrand, r: Redemption, amount: int) -> None:
        data = REFUND + abi_encode(["address", "uint256", "uint256"], [r.owner, r.nonce, amount])
        brand.sender.send(self.alliance.points.address, data, 220_000)

    def transfer(self, member: LocalAccount, to: str, amount: int) -> None:
        data = TRANSFER + abi_encode(["address", "uint256"], [to_checksum_address(to), amount])
        Sender(self.chain, member).send(self.alliance.points.address, data, 120_000, wait=True)

    def deposit(self, brand: SimBrand, amount: int) -> None:
        gov = Transactor(self.chain, self.governor)
        self.alliance.token.mint(gov, brand.address, amount)
        brand.sender.flush()
        self.alliance.token.approve(brand.sender.tx, self.alliance.settlement.address, amount)
        self.alliance.settlement.deposit(brand.sender.tx, amount)
        brand.sender._nonce = None  # the Transactor numbered those; read the next nonce from the node

    def withdraw(self, brand: SimBrand, amount: int) -> None:
        brand.sender.flush()
        self.alliance.settlement.withdraw(brand.sender.tx, amount)
        brand.sender._nonce = None

    def flush(self) -> None:
        errors = []
        for b in self.brands:
            try:
                b.sender.flush()
            except ChainError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def close_epoch(self) -> Any:
        self.flush()
        return self.alliance.settlement.close_epoch(Transactor(self.chain, self.governor))
