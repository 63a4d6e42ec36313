"""Shared helpers of the contract tests: one deployed alliance per backend, revert assertions, and a
faster gas estimator for the embedded chain.

Kept out of conftest.py so the stateful test and the fixtures build the same world the same way.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import is_address, to_checksum_address

from contracts.chain import REVERTS, Chain, ContractRevert, Transactor, decode_revert
from contracts.client import Alliance, Redemption
from contracts.deploy import BrandTerms, deploy_alliance, onboard_brand

#: Settlement-token units per AP in the test alliance (the deploy default).
VPP = 10_000
RATE_NOTICE = 2 * 24 * 3600
MIN_EPOCH = 3600  # no close earlier (World.close waits it out)
EPOCH = 24 * 3600  # anyone may close after this
REFUND_WINDOW = 30 * 24 * 3600
ADMIN_DELAY = 3 * 24 * 3600
FAR = 10**12  # a deadline no test reaches
MAX_UINT = 2**256 - 1

#: Three brands with different binding constraints:
#: A: the credit limit binds (limit 10_000 AP, collateral for 100_000 AP);
#: B: the collateral binds (limit 1_000_000 AP, collateral for 5_000 AP);
#: C: roomy on both.
TERMS = (
    BrandTerms("Aurora Coffee", rate=100, credit_limit=10_000, collateral=100_000 * VPP),
    BrandTerms("Borealis Air", rate=250, credit_limit=1_000_000, collateral=5_000 * VPP),
    BrandTerms("Cirrus Books", rate=40, credit_limit=1_000_000, collateral=1_000_000 * VPP),
)
#: Settlement tokens each brand keeps in hand (approved to Settlement) for later deposits.
SPARE_TOKENS = 10**9 * VPP


@dataclass
class World:
    """One alliance deployed on one backend, shared by every test of that backend."""

    backend: str
    chain: Chain
    alliance: Alliance
    governor: LocalAccount
    brands: list[LocalAccount]
    members: list[LocalAccount]
    outsider: LocalAccount  # funded, never admitted
    candidate: LocalAccount  # funded, not admitted: for admit tests
    gov: Transactor = field(init=False)
    tx: dict[str, Transactor] = field(init=False)

    def __post_init__(self) -> None:
        self.gov = self.alliance.transactor(self.governor)
        self.tx = {a.address: self.alliance.transactor(a) for a in [*self.brands, self.outsider, self.candidate]}

    # short names
    @property
    def points(self):
        return self.alliance.points

    @property
    def settlement(self):
        return self.alliance.settlement

    @property
    def registry(self):
        return self.alliance.registry

    @property
    def anchor(self):
        return self.alliance.anchor

    @property
    def token(self):
        return self.alliance.token

    @property
    def a(self) -> LocalAccount:
        return self.brands[0]

    @property
    def b(self) -> LocalAccount:
        return self.brands[1]

    @property
    def c(self) -> LocalAccount:
        return self.brands[2]

    def t(self, account: LocalAccount) -> Transactor:
        """The Transactor of an account (created on first use for members)."""
        if account.address not in self.tx:
            self.tx[account.address] = self.alliance.transactor(account)
        return self.tx[account.address]

    def now(self) -> int:
        return self.chain.timestamp()

    def authorise(self, member: LocalAccount, brand: LocalAccount, amount: int, *, nonce: int | None = None,
                  deadline: int = FAR) -> Redemption:
        return self.points.authorise(member, brand.address, amount, deadline, nonce)

    def mint(self, brand: LocalAccount, member: LocalAccount | str, amount: int, ref: bytes | str = b"") -> Any:
        """Mint ``amount`` AP: the brand points they cost at the brand's rate in force."""
        to = member if isinstance(member, str) else member.address
        rate, version = self.registry.rate(brand.address)
        return self.points.mint(self.t(brand), to, amount * rate, version, ref)

    def mint_batch(self, brand: LocalAccount, grants: list[tuple[str, int, bytes | str]]) -> Any:
        """Mint ``grants`` of (member address, AP, ref) in one transaction at the brand's rate in force."""
        rate, version = self.registry.rate(brand.address)
        return self.points.mint_batch(self.t(brand), [(to, ap * rate, ref) for to, ap, ref in grants], version)

    def refund(self, brand: LocalAccount, r: Redemption, amount: int) -> Any:
        return self.points.refund(self.t(brand), r.owner, r.nonce, amount)

    def redeem(self, member: LocalAccount, brand: LocalAccount, amount: int, **kw) -> tuple[Redemption, Any]:
        r = self.authorise(member, brand, amount, **kw)
        return r, self.points.redeem(self.t(brand), r)

    def close(self) -> Any:
        """Close the open epoch as the settler, first waiting out the minimum epoch length."""
        open_for = self.now() - self.settlement.epoch_opened_at()
        if open_for < MIN_EPOCH:
            self.chain.advance_time(MIN_EPOCH - open_for)
        return self.settlement.close_epoch(self.gov)

    def grant_gas(self, account: LocalAccount) -> None:
        self.chain.fund(account.address, 10**18)


def build_world(backend: str, chain: Chain) -> World:
    """Deploy an alliance with three brands; members are fresh keys holding no ether."""
    if chain.embedded:
        speed_up_gas_estimation(chain)
    governor = chain.new_account()
    alliance = deploy_alliance(chain, governor, value_per_point=VPP, rate_notice=RATE_NOTICE, admin_delay=ADMIN_DELAY,
                               epoch_lengths=(MIN_EPOCH, EPOCH), refund_window=REFUND_WINDOW)
    brands = [chain.new_account() for _ in TERMS]
    for brand, terms in zip(brands, TERMS):
        onboard_brand(alliance, governor, brand, terms)
    gov = alliance.transactor(governor)
    for brand in brands:
        alliance.token.mint(gov, brand.address, SPARE_TOKENS)
        alliance.token.approve(alliance.transactor(brand), alliance.settlement.address, MAX_UINT)
    members = [Account.create() for _ in range(4)]
    return World(backend, chain, alliance, governor, brands, members,
                 outsider=chain.new_account(), candidate=chain.new_account())


# ---------------------------------------------------------------------- reverts


def _norm(value: Any) -> Any:
    if isinstance(value, str) and is_address(value):
        return to_checksum_address(value)
    return value


@contextlib.contextmanager
def reverts(error: str, **expected: Any) -> Iterator[pytest.ExceptionInfo]:
    """Expect a ContractRevert naming the Solidity custom error `error`, with the given arguments."""
    with pytest.raises(ContractRevert) as info:
        yield info
    got = info.value
    assert got.error == error, f"expected {error}, got {got}"
    for name, value in expected.items():
        assert name in got.args_, f"{error} has no argument {name!r}: {got.args_}"
        assert _norm(got.args_[name]) == _norm(value), f"{error}.{name}: {got.args_[name]!r} != {value!r}"


def call_revert(fn: Callable[[], Any]) -> ContractRevert:
    """Run a read (eth_call) that must revert; return the decoded revert."""
    try:
        result = fn()
    except ContractRevert as exc:  # the clients' reads decode it themselves
        return exc
    except REVERTS as exc:
        return decode_revert(exc)
    raise AssertionError(f"call did not revert, returned {result!r}")


def b32(value: bytes | str) -> bytes:
    """A bytes32 as the clients encode references and log kinds: right-padded with zeros."""
    raw = value.encode() if isinstance(value, str) else value
    assert len(raw) <= 32
    return raw.ljust(32, b"\x00")


def role(name: str) -> bytes:
    from eth_utils import keccak

    return keccak(text=name)


# ---------------------------------------------------------------------- background compile

_compile: dict[str, Any] = {}


def start_background_compile() -> None:
    """Compile the contracts in a daemon thread (solc-js runs in a Node.js subprocess, so it uses
    the other core while the chain tests run); `compiled_artifacts` collects the result."""
    import threading

    from contracts import build

    if "thread" in _compile:
        return

    def run() -> None:
        try:
            _compile["result"] = build.compile_all()
        except BaseException as exc:  # noqa: BLE001 - re-raised by compiled_artifacts
            _compile["error"] = exc

    _compile["thread"] = threading.Thread(target=run, name="contracts-compile", daemon=True)
    _compile["thread"].start()


def compiled_artifacts() -> dict[str, dict[str, Any]]:
    """The artifacts the sources compile to now: from the background compile if one was started."""
    from contracts import build

    thread = _compile.get("thread")
    if thread is None:
        return build.compile_all()
    thread.join()
    if "error" in _compile:
        raise _compile["error"]
    return _compile["result"]


# ---------------------------------------------------------------------- embedded speed-up


def speed_up_gas_estimation(chain: Chain) -> None:
    """py-evm estimates gas by binary search: a dozen executions per transaction, three quarters of
    the embedded chain's time in these tests. Estimate from one execution at the block gas limit
    instead: the gross gas it used plus the 63/64 reserve of nested calls (Transactor adds its own
    20 % margin on top). A revert is still raised from that execution, so ``Transactor.send``
    behaves as before; a guess too low would show as a failed transaction, never as a pass.
    Installed on this backend's chain only."""
    from eth.vm.spoof import SpoofTransaction

    def estimate(state, transaction):
        snapshot = state.snapshot()
        try:
            computation = state.apply_transaction(SpoofTransaction(transaction, gas=state.gas_limit, gas_price=0))
        finally:
            state.revert(snapshot)
        if computation.is_error:
            raise computation.error
        gross = transaction.intrinsic_gas + computation.get_gas_used()
        return min(state.gas_limit, gross * 64 // 63 + 2_300)

    tester_chain = chain._tester.backend.chain
    tester_chain.gas_estimator = estimate  # py-evm sets it per instance at construction ...
    type(tester_chain).gas_estimator = staticmethod(estimate)  # ... and from the class on re-creation
