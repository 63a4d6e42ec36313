"""Typed clients for the alliance contracts, used by the gateways, the settlement service and the
operator CLI. Reads are plain methods; every write takes the Transactor of the account that signs it
and returns the transaction receipt (or raises ContractRevert naming the Solidity error)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import IntEnum
from typing import Any, Iterable, Sequence

from eth_abi import decode as abi_decode
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils import event_abi_to_log_topic, to_checksum_address
from web3.contract import Contract

from .artifacts import load_artifact
from .chain import REVERTS, Chain, ChainError, Transactor, decode_revert
from .defaults import CONTRACTS_VERSION
from .manifest import Manifest

BYTES32_ZERO = b"\x00" * 32
NONCES_PER_WORD = 256  # AlliancePoints.usedNonces answers for 256 nonces at a time


class BrandStatus(IntEnum):
    NONE = 0
    ACTIVE = 1
    SUSPENDED = 2


@dataclass(frozen=True)
class BrandInfo:
    address: str
    id: int  # permanent: kept when governance rotates the brand's account
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
    issued: int  # cumulative AP created: mints and refunds
    redeemed: int  # cumulative
    touched_epoch: int  # the last epoch the brand issued or redeemed in
    settled_issued: int
    settled_redeemed: int
    payout: str  # where withdrawals go (the zero address: the brand's own account)


@dataclass(frozen=True)
class OpenPosition:
    issued: int
    redeemed: int
    free_collateral: int


@dataclass(frozen=True)
class RedemptionRecord:
    """What the chain holds for one (owner, brand, nonce): the AP its redemption burned, how much of it
    was refunded, when (0: not redeemed), and whether the owner cancelled it unused."""

    amount: int
    refunded: int
    redeemed_at: int
    cancelled: bool

    @property
    def used(self) -> bool:
        return self.redeemed_at != 0 or self.cancelled


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
        return {"name": "AlliancePoints", "version": CONTRACTS_VERSION, "chainId": chain_id, "verifyingContract": to_checksum_address(points_address)}

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
        """A view call; a revert is a ContractRevert naming the Solidity error, as for transactions. No
        contract at the address (a chain that lost its state, a manifest of another chain) is a
        ChainError saying so, not a decoding error."""
        from web3.exceptions import BadFunctionCallOutput

        try:
            return call.call()
        except REVERTS as exc:
            raise decode_revert(exc) from None
        except BadFunctionCallOutput:
            raise ChainError(f"no {call.address} contract answers on this chain: was the chain reset "
                             f"(an anvil without --state), or is the manifest for another chain?") from None

    def events(self, receipt: Any, event: str) -> list[dict[str, Any]]:
        """Decoded `event` logs of this contract in a receipt."""
        return [args for _, args in self.logs(receipt, (event,))]

    def logs(self, receipt: Any, events: Iterable[str]) -> list[tuple[str, dict[str, Any]]]:
        """This contract's logs of the named `events` in a receipt, in order, each as (event, arguments).
        Decoded with eth_abi straight from the ABI: web3's process_receipt tries each log against the
        event and formats it on the way, which for a batch's hundreds of logs cost the gateway's sender
        a tenth of its time."""
        decoders = {topic: decoder for topic, decoder in self._event_decoders().items() if decoder[0] in set(events)}
        found = []
        for entry in receipt["logs"]:
            if entry["address"] != self.address or not entry["topics"]:
                continue
            decoder = decoders.get(bytes(entry["topics"][0]))
            if decoder is not None:
                name, indexed, plain = decoder
                values = [abi_decode([kind], bytes(topic))[0] for (_, kind), topic in zip(indexed, entry["topics"][1:])]
                values += abi_decode([kind for _, kind in plain], bytes(entry["data"]))
                found.append((name, {arg: to_checksum_address(v) if kind == "address" else v
                                     for (arg, kind), v in zip(indexed + plain, values)}))
        return found

    def _event_decoders(self) -> dict[bytes, tuple[str, list[tuple[str, str]], list[tuple[str, str]]]]:
        if not hasattr(self, "_decoders"):
            self._decoders = {}
            for entry in self.contract.abi:
                if entry["type"] == "event" and not entry.get("anonymous"):
                    inputs = entry["inputs"]
                    self._decoders[event_abi_to_log_topic(entry)] = (
                        entry["name"], [(i["name"], i["type"]) for i in inputs if i["indexed"]],
                        [(i["name"], i["type"]) for i in inputs if not i["indexed"]])
        return self._decoders


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

    def rotate(self, tx: Transactor, brand: str, new_account: str):
        return tx.send(self.contract.functions.rotate(to_checksum_address(brand), to_checksum_address(new_account)))

    def id_of(self, account: str) -> int:
        """The brand id an account acts or once acted for (0: never)."""
        return self._read(self.contract.functions.idOf(to_checksum_address(account)))

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
        brand_id, name, status, admitted_at, rate, version = self._read(self.contract.functions.brandInfo(to_checksum_address(brand)))
        return BrandInfo(to_checksum_address(brand), brand_id, name, BrandStatus(status), admitted_at, rate, version)

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

    def set_payout(self, tx: Transactor, brand: str, payout: str):
        return tx.send(self.contract.functions.setPayout(to_checksum_address(brand), to_checksum_address(payout)))

    def release_collateral(self, tx: Transactor, brand: str, amount: int):
        """Governance: pay a suspended brand's free collateral to its payout address."""
        return tx.send(self.contract.functions.releaseCollateral(to_checksum_address(brand), amount))

    def pause(self, tx: Transactor):
        return tx.send(self.contract.functions.pause())

    def unpause(self, tx: Transactor):
        return tx.send(self.contract.functions.unpause())

    def paused(self) -> bool:
        return self._read(self.contract.functions.paused())

    def deposit(self, tx: Transactor, amount: int):
        return tx.send(self.contract.functions.deposit(amount))

    def withdraw(self, tx: Transactor, amount: int):
        return tx.send(self.contract.functions.withdraw(amount))

    def close_epoch(self, tx: Transactor):
        return tx.send(self.contract.functions.closeEpoch())

    def current_epoch(self) -> int:
        return self._read(self.contract.functions.currentEpoch())

    def epoch_opened_at(self) -> int:
        return self._read(self.contract.functions.epochOpenedAt())

    def touched_brands(self) -> list[int]:
        """Ids of the brands that issued or redeemed in the open epoch."""
        return list(self._read(self.contract.functions.touchedBrands()))

    def pool_balance(self) -> int:
        return self._read(self.contract.functions.poolBalance())

    def total_collateral(self) -> int:
        return self._read(self.contract.functions.totalCollateral())

    def value_per_point(self) -> int:
        return self._read(self.contract.functions.valuePerPoint())

    def account(self, brand: str) -> SettlementAccount:
        a = self._read(self.contract.functions.accountOf(to_checksum_address(brand)))
        return SettlementAccount(*a[:7], to_checksum_address(a[7]))

    def open_position(self, brand: str) -> OpenPosition:
        return OpenPosition(*self._read(self.contract.functions.openPosition(to_checksum_address(brand))))


class PointsClient(_Bound):
    name = "AlliancePoints"

    def mint_call(self, to: str, brand_points: int, rate_version: int, ref: bytes | str = BYTES32_ZERO):
        """The mint of the AP that ``brand_points`` buy at rate version ``rate_version`` (the contract
        computes the AP from the registry and reverts unless that version is in force)."""
        return self.contract.functions.mint(to_checksum_address(to), brand_points, rate_version, _bytes32(ref))

    def mint(self, tx: Transactor, to: str, brand_points: int, rate_version: int, ref: bytes | str = BYTES32_ZERO):
        return tx.send(self.mint_call(to, brand_points, rate_version, ref))

    def mint_batch_call(self, grants: Sequence[tuple[str, int, bytes | str]], rate_version: int):
        """One mint to many members at one rate version: ``grants`` of (member, brand points, ref)."""
        to = [to_checksum_address(g[0]) for g in grants]
        return self.contract.functions.mintBatch(to, [g[1] for g in grants], [_bytes32(g[2]) for g in grants], rate_version)

    def mint_batch(self, tx: Transactor, grants: Sequence[tuple[str, int, bytes | str]], rate_version: int):
        return tx.send(self.mint_batch_call(grants, rate_version))

    def redeem(self, tx: Transactor, redemption: Redemption):
        return tx.send(self.contract.functions.redeem(redemption.as_struct(), redemption.signature))

    def redeem_batch_call(self, redemptions: Sequence[Redemption]):
        """Many members' authorisations in one transaction; one that would fail is skipped with a
        RedemptionRejected event."""
        return self.contract.functions.redeemBatch([r.as_struct() for r in redemptions], [r.signature for r in redemptions])

    def redeem_batch(self, tx: Transactor, redemptions: Sequence[Redemption]):
        return tx.send(self.redeem_batch_call(redemptions))

    # Gas that bounds `redeem` or `redeemBatch` of n ECDSA-signed authorisations in any state: the
    # brand's first in its epoch, each opening a fresh record (test_contract_points_redeem proves it).
    # A smart wallet's ERC-1271 check runs its own code, which no bound covers: those are estimated.
    REDEEM_GAS_BASE, REDEEM_GAS_PER_AUTHORISATION = 150_000, 80_000

    def redeem_gas_limit(self, n: int) -> int:
        return self.REDEEM_GAS_BASE + self.REDEEM_GAS_PER_AUTHORISATION * n

    def refund(self, tx: Transactor, owner: str, nonce: int, amount: int):
        """Give back ``amount`` AP of the owner's redemption ``nonce`` at the calling brand."""
        return tx.send(self.contract.functions.refund(to_checksum_address(owner), nonce, amount))

    def redemption(self, owner: str, brand: str, nonce: int) -> RedemptionRecord:
        return RedemptionRecord(*self._read(self.contract.functions.redemptionOf(
            to_checksum_address(owner), to_checksum_address(brand), nonce)))

    def refund_window(self) -> int:
        return self._read(self.contract.functions.refundWindow())

    def cancel_authorization(self, tx: Transactor, brand: str, nonce: int):
        return tx.send(self.contract.functions.cancelAuthorization(to_checksum_address(brand), nonce))

    def pause(self, tx: Transactor):
        return tx.send(self.contract.functions.pause())

    def unpause(self, tx: Transactor):
        return tx.send(self.contract.functions.unpause())

    def free_nonce(self, owner: str, brand: str, reserved: Iterable[int] = ()) -> int:
        """The lowest nonce not used on chain and not in ``reserved``: every nonce the wallet has ever
        signed for this brand, used or not, so that no signed authorisation is ever signed again
        with a different amount."""
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
