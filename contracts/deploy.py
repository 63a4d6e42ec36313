"""Deploy a whole alliance in one call, and onboard brands onto it."""

from __future__ import annotations

from dataclasses import dataclass

from eth_account.signers.local import LocalAccount
from web3.utils.address import get_create_address

from .artifacts import CONTRACT_NAMES, artifact_hash, load_artifact
from .chain import Chain, Transactor
from .client import Alliance
from .manifest import Manifest

from .defaults import ADMIN_DELAY_S, EPOCH_S, MIN_EPOCH_S, RATE_NOTICE_S, REFUND_WINDOW_S, VALUE_PER_POINT


def _deploy(tx: Transactor, name: str, *args) -> str:
    artifact = load_artifact(name)
    factory = tx.chain.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    return tx.send(factory.constructor(*args))["contractAddress"]


def deploy_alliance(
    chain: Chain,
    governor: LocalAccount,
    *,
    value_per_point: int = VALUE_PER_POINT,
    rate_notice: int = RATE_NOTICE_S,
    admin_delay: int = ADMIN_DELAY_S,
    epoch_lengths: tuple[int, int] = (MIN_EPOCH_S, EPOCH_S),
    refund_window: int = REFUND_WINDOW_S,
    settlement_token: str | None = None,
) -> Alliance:
    """Deploy registry, settlement token (unless an existing one is given), settlement, points and
    anchor, and bind them. ``governor`` holds every role; in production transfer the admin role to
    the founding brands' multisig or timelock afterwards (a two-step transfer that waits
    ``admin_delay`` seconds). ``epoch_lengths`` is (minimum, normal): no close before the minimum,
    anyone may close after the normal length."""
    tx = Transactor(chain, governor)
    start_block = chain.w3.eth.block_number
    registry = _deploy(tx, "AllianceRegistry", governor.address, admin_delay, rate_notice)
    token = settlement_token or _deploy(tx, "SettlementToken", governor.address)
    # Settlement and AlliancePoints refer to each other immutably: deploy settlement with the
    # address the points contract will get from the governor's next nonce (its constructor checks).
    next_nonce = chain.w3.eth.get_transaction_count(governor.address, "pending")
    predicted_points = get_create_address(governor.address, next_nonce + 1)
    settlement = _deploy(tx, "Settlement", governor.address, admin_delay, registry, token, predicted_points, value_per_point,
                         list(epoch_lengths))
    points = _deploy(tx, "AlliancePoints", governor.address, admin_delay, registry, settlement, refund_window)
    anchor = _deploy(tx, "ConsentAnchor", registry)
    manifest = Manifest(
        chain_id=chain.chain_id,
        addresses={"AllianceRegistry": registry, "SettlementToken": token, "Settlement": settlement,
                   "AlliancePoints": points, "ConsentAnchor": anchor},
        deployed_block=start_block + 1,
        governor=governor.address,
        value_per_point=value_per_point,
        artifact_hashes={name: artifact_hash(name) for name in CONTRACT_NAMES},
        epoch_lengths=(epoch_lengths[0], epoch_lengths[1]),
        refund_window=refund_window,
    )
    return Alliance(chain, manifest)


@dataclass(frozen=True)
class BrandTerms:
    name: str
    rate: int  # brand points per AP
    credit_limit: int  # most AP issued net per open epoch
    collateral: int  # settlement-token units deposited at onboarding


def onboard_brand(alliance: Alliance, governor: LocalAccount, brand: LocalAccount, terms: BrandTerms) -> None:
    """Admit a brand, set its credit limit and deposit its collateral. On the shipped test token the
    governor (its issuer) first mints the collateral to the brand."""
    gov = alliance.transactor(governor)
    me = alliance.transactor(brand)
    alliance.registry.admit(gov, brand.address, terms.name, terms.rate)
    alliance.settlement.set_credit_limit(gov, brand.address, terms.credit_limit)
    if terms.collateral:
        if alliance.token.balance_of(brand.address) < terms.collateral:
            alliance.token.mint(gov, brand.address, terms.collateral)
        alliance.token.approve(me, alliance.settlement.address, terms.collateral)
        alliance.settlement.deposit(me, terms.collateral)
