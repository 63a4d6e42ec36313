"""Typed clients for the alliance contracts, used by the gateways, the settlement service and the
operator CLI. Reads are plain methods; every write takes the Transactor of the account that signs it
and returns the transaction receipt (or raises ContractRevert naming the Solidity error)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import IntEnum
from typing import Any, Iterable, Sequence

from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from web3.contract import Contract

from .artifacts import load_artifact
from .chain import REVERTS, Chain, Transactor, decode_revert
from .manifest import Manifest

BYTES32_ZERO = b"\x00" * 32
NONCES_PER_WORD = 96  # AlliancePoints packs 96 redemption nonces per storage word


class BrandStatus(IntEnum):
    NONE = 0
    ACTIVE = 1
    SUSPENDED = 2


@dataclass(frozen=True)
class BrandInfo:
    address: str
    name: str
    status: BrandStatus
    admitted_at: int
    rate: int  # brand points per alliance point, in force now
    rate_version: int


@dataclass(frozen=True)
class PendingRate:
    rate: int
    version: int
    effective_at: int


@dataclass(frozen=True)
class SettlementAccount:
    collateral: int
    credit_limit: int
    issued: int  # cumulative
    redeemed: int  # cumulative, net of refunds
    settled_issued: int
    settled_redeemed: int


@dataclass(frozen=True)
class OpenPosition:
    issued: int
    redeemed: int
    free_collateral: int


@dataclass(frozen=True)
class Anchor:
    root: bytes
    size: int
    posted_at: int
    block_number: int


@dataclass(frozen=True)
class Redemption:
    """A member's EIP-712 authorisation to redeem `amount` AP at `brand`, and its signature."""

    owner: str
    brand: str
    amount: int
    nonce: int
    deadline: int
    signature: bytes = b""

    TYPES = {
        "Redeem": [
            {"name": "owner", "type": "address"},
            {"name": "brand", "type": "address"},
            {"name": "amount", "type": "uint256"},
            {"name": "nonce", "type": "uint256"},
            {"name": "deadline", "type": "uint256"},
        ]
    }

    @staticmethod
    def domain(chain_id: int, points_address: str) -> dict[str, Any]:
        return {"name": "AlliancePoints", "version": "1", "chainId": chain_id, "verifyingContract": to_checksum_address(points_address)}

    def message(self) -> dict[str, Any]:
        return {"owner": to_checksum_address(self.owner), "brand": to_checksum_address(self.brand), "amount": self.amount, "nonce": self.nonce, "deadline": self.deadline}

    def signed_by(self, member: LocalAccount, chain_id: int, points_address: str) -> "Redemption":
        signable = encode_typed_data(self.domain(chain_id, points_address), self.TYPES, self.message())
        signature = member.sign_message(signable).signature
        return Redemption(self.owner, self.brand, self.amount, self.nonce, self.deadline, bytes(signature))

    def as_struct(self) -> tuple:
        m = self.message()
        return (m["owner"], m["brand"], m["amount"], m["nonce"], m["deadline"])

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["signature"] = "0x" + self.signature.hex()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Redemption":
        sig = d.get("signature", "")
        return cls(d["owner"], d["brand"], int(d["amount"]), int(d["nonce"]), int(d["deadline"]),
                   bytes.fromhex(sig[2:] if sig.startswith("0x") else sig))


def _bytes32(value: bytes | str) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    if len(raw) > 32:
        raise ValueError("value longer than 32 bytes")
    return raw.ljust(32, b"\x00")


class _Bound:
    name: str

    def __init__(self, chain: Chain, address: str):
        self.chain = chain
        self.address = to_checksum_address(address)
        self.contract: Contract = chain.w3.eth.contract(address=self.address, abi=load_artifact(self.name)["abi"])

    @staticmethod
    def _read(call) -> Any:
        """A view call; a revert is a ContractRevert naming the Solidity error, as for transactions."""
        try:
            return call.call()
        except REVERTS as exc:
            raise decode_revert(exc) from None

    def events(self, receipt: Any, event: str) -> list[dict[str, Any]]:
        """Decoded `event` logs of this contract in a receipt."""
        from web3.logs import DISCARD

        return [dict(e["args"]) for e in getattr(self.contract.events, event)().process_receipt(receipt, errors=DISCARD)]


class RegistryClient(_Bound):
    name = "AllianceRegistry"

    def admit(self, tx: Transactor, brand: str, name: str, rate: int):
        return tx.send(self.contract.functions.admit(to_checksum_address(brand), name, rate))

    def suspend(self, tx: Transactor, brand: str, reason: str):
        return tx.send(self.contract.functions.suspend(to_checksum_address(brand), reason))

    def reinstate(self, tx: Transactor, brand: str):
        return tx.send(self.contract.functions.reinstate(to_checksum_address(brand)))

    def schedule_rate(self, tx: Transactor, brand: str, rate: int):
        return tx.send(self.contract.functions.scheduleRate(to_checksum_address(brand), rate))

    def set_rate_notice(self, tx: Transactor, seconds: int):
        return tx.send(self.contract.functions.setRateNotice(seconds))

    def is_active(self, brand: str) -> bool:
        return self._read(self.contract.functions.isActive(to_checksum_address(brand)))

    def status(self, brand: str) -> BrandStatus:
        return BrandStatus(self._read(self.contract.functions.statusOf(to_checksum_address(brand))))

    def rate(self, brand: str) -> tuple[int, int]:
        """(rate, version) in force now."""
        return tuple(self._read(self.contract.functions.rateOf(to_checksum_address(brand))))

    def pending_rate(self, brand: str) -> PendingRate | None:
        rate, version, at = self._read(self.contract.functions.pendingRateOf(to_checksum_address(brand)))
        return PendingRate(rate, version, at) if rate else None

    def rate_notice(self) -> int:
        return self._read(self.contract.functions.rateNotice())

    def info(self, brand: str) -> BrandInfo:
        name, status, admitted_at, rate, version = self._read(self.contract.functions.brandInfo(to_checksum_address(brand)))
        return BrandInfo(to_checksum_address(brand), name, BrandStatus(status), admitted_at, rate, version)

    def brands(self) -> list[str]:
        return list(self._read(self.contract.functions.brands()))


class TokenClient(_Bound):
    name = "SettlementToken"

    def mint(self, tx: Transactor, to: str, amount: int):
        return tx.send(self.contract.functions.mint(to_checksum_address(to), amount))

    def approve(self, tx: Transactor, spender: str, amount: int):
        return tx.send(self.contract.functions.approve(to_checksum_address(spender), amount))

    def balance_of(self, account: str) -> int:
        return self._read(self.contract.functions.balanceOf(to_checksum_address(account)))


class SettlementClient(_Bound):
    name = "Settlement"

    def set_credit_limit(self, tx: Transactor, brand: str, limit: int):
        return tx.send(self.contract.functions.setCreditLimit(to_checksum_address(brand), limit))

    def deposit(self, tx: Transactor, amount: int):
        return tx.send(self.contract.functions.deposit(amount))

    def withdraw(self, tx: Transactor, amount: int):
        return tx.send(self.contract.functions.withdraw(amount))

    def close_epoch(self, tx: Transactor):
        return tx.send(self.contract.functions.closeEpoch())

    def current_epoch(self) -> int:
        return self._read(self.contract.functions.currentEpoch())

    def pool_balance(self) -> int:
        return self._read(self.contract.functions.poolBalance())

    def total_collateral(self) -> int:
        return self._read(self.contract.functions.totalCollateral())

    def value_per_point(self) -> int:
        return self._read(self.contract.functions.valuePerPoint())

    def account(self, brand: str) -> SettlementAccount:
        return SettlementAccount(*self._read(self.contract.functions.accountOf(to_checksum_address(brand))))

    def open_position(self, brand: str) -> OpenPosition:
        return OpenPosition(*self._read(self.contract.functions.openPosition(to_checksum_address(brand))))


class PointsClient(_Bound):
    name = "AlliancePoints"

    def mint(self, tx: Transactor, to: str, amount: int, ref: bytes | str = BYTES32_ZERO):
        return tx.send(self.contract.functions.mint(to_checksum_address(to), amount, _bytes32(ref)))

    def mint_batch(self, tx: Transactor, grants: Sequence[tuple[str, int, bytes | str]]):
        """Mint to many members in one transaction: ``grants`` of (member, amount, ref)."""
        to = [to_checksum_address(g[0]) for g in grants]
        return tx.send(self.contract.functions.mintBatch(to, [g[1] for g in grants], [_bytes32(g[2]) for g in grants]))

    def redeem(self, tx: Transactor, redemption: Redemption):
        return tx.send(self.contract.functions.redeem(redemption.as_struct(), redemption.signature))

    def refund(self, tx: Transactor, redemption: Redemption, amount: int):
        return tx.send(self.contract.functions.refund(redemption.as_struct(), redemption.signature, amount))

    def cancel_authorization(self, tx: Transactor, brand: str, nonce: int):
        return tx.send(self.contract.functions.cancelAuthorization(to_checksum_address(brand), nonce))

    def pause(self, tx: Transactor):
        return tx.send(self.contract.functions.pause())

    def unpause(self, tx: Transactor):
        return tx.send(self.contract.functions.unpause())

    def free_nonce(self, owner: str, brand: str, reserved: Iterable[int] = ()) -> int:
        """The lowest nonce not used on chain and not in ``reserved`` (nonces the wallet has signed
        but not yet seen used). Low nonces share a storage word, which keeps redemptions cheap."""
        reserved = set(reserved)
        owner, brand = to_checksum_address(owner), to_checksum_address(brand)
        word = 0
        while True:
            used = self._read(self.contract.functions.usedNonces(owner, brand, word))
            for bit in range(NONCES_PER_WORD):
                nonce = word * NONCES_PER_WORD + bit
                if not used >> bit & 1 and nonce not in reserved:
                    return nonce
            word += 1

    def authorise(self, member: LocalAccount, brand: str, amount: int, deadline: int, nonce: int | None = None) -> Redemption:
        """Build and sign a redemption as the member's wallet does."""
        if nonce is None:
            nonce = self.free_nonce(member.address, brand)
        r = Redemption(member.address, to_checksum_address(brand), amount, nonce, deadline)
        return r.signed_by(member, self.chain.chain_id, self.address)

    def balance_of(self, account: str) -> int:
        return self._read(self.contract.functions.balanceOf(to_checksum_address(account)))

    def total_supply(self) -> int:
        return self._read(self.contract.functions.totalSupply())

    def paused(self) -> bool:
        return self._read(self.contract.functions.paused())

    def is_nonce_used(self, owner: str, brand: str, nonce: int) -> bool:
        return self._read(self.contract.functions.isNonceUsed(to_checksum_address(owner), to_checksum_address(brand), nonce))

    def issued_logs(self, ref: bytes | str, from_block: int = 0) -> list[dict[str, Any]]:
        """Issued events carrying the brand's reference `ref` (how a retried mint is detected)."""
        logs = self.contract.events.Issued().get_logs(from_block=from_block, argument_filters={"ref": _bytes32(ref)})
        return [dict(log["args"]) | {"blockNumber": log["blockNumber"], "transactionHash": log["transactionHash"]} for log in logs]


class AnchorClient(_Bound):
    name = "ConsentAnchor"

    CONSENT_LOG = _bytes32("consent-log")
    AUDIT_LOG = _bytes32("audit-log")
    MODEL_RELEASES = _bytes32("model-releases")

    def post(self, tx: Transactor, kind: bytes | str, period: int, size: int, root: bytes):
        return tx.send(self.contract.functions.post(_bytes32(kind), period, size, root))

    def anchor(self, brand: str, kind: bytes | str, period: int) -> Anchor:
        return Anchor(*self._read(self.contract.functions.anchorOf(to_checksum_address(brand), _bytes32(kind), period)))

    def latest(self, brand: str, kind: bytes | str) -> tuple[int, Anchor] | None:
        exists, period, anchor = self._read(self.contract.functions.latestOf(to_checksum_address(brand), _bytes32(kind)))
        return (period, Anchor(*anchor)) if exists else None

    def is_anchored(self, brand: str, kind: bytes | str, period: int, root: bytes) -> bool:
        return self._read(self.contract.functions.isAnchored(to_checksum_address(brand), _bytes32(kind), period, root))


class Alliance:
    """All alliance contracts of one deployment."""

    def __init__(self, chain: Chain, manifest: Manifest):
        if manifest.chain_id != chain.chain_id:
            raise ValueError(f"manifest is for chain {manifest.chain_id}, connected to chain {chain.chain_id}")
        self.chain = chain
        self.manifest = manifest
        a = manifest.addresses
        self.registry = RegistryClient(chain, a["AllianceRegistry"])
        self.token = TokenClient(chain, a["SettlementToken"])
        self.settlement = SettlementClient(chain, a["Settlement"])
        self.points = PointsClient(chain, a["AlliancePoints"])
        self.anchor = AnchorClient(chain, a["ConsentAnchor"])

    def transactor(self, account: LocalAccount) -> Transactor:
        return Transactor(self.chain, account)

    def brand_infos(self) -> Iterable[BrandInfo]:
        return [self.registry.info(b) for b in self.registry.brands()]
