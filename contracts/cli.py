"""`alliance contracts ...`: build, check and deploy the alliance contracts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer
from rich.console import Console

from .defaults import ADMIN_DELAY_S, EMBEDDED, EPOCH_S, MIN_EPOCH_S, RATE_NOTICE_S, REFUND_WINDOW_S, VALUE_PER_POINT

# Heavy imports (web3, eth-account, the compiler driver) happen inside the commands, so that
# `alliance --help` and every other command start fast.

app = typer.Typer(pretty_exceptions_show_locals=False, help="Build, check and deploy the alliance contracts (Python only, no Hardhat).", no_args_is_help=True)
console = Console()


@app.command()
def build() -> None:
    """Compile contracts/src with the pinned solc-js and write contracts/artifacts."""
    from . import build as build_mod

    try:
        for path in build_mod.build():
            console.print(f"wrote {path}")
    except build_mod.ToolchainMissing as exc:
        raise typer.BadParameter(str(exc)) from None


@app.command()
def check() -> None:
    """Recompile and fail if any committed artifact differs from what the sources compile to."""
    from . import build as build_mod
    from .artifacts import CONTRACT_NAMES, load_artifact

    try:
        result = build_mod.check()
    except build_mod.ToolchainMissing as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    for name in result.stale:
        console.print(f"[red]stale[/red] {name}: artifact differs from its source")
    for name in result.missing:
        console.print(f"[red]missing[/red] {name}: no committed artifact")
    for name in result.extra:
        console.print(f"[red]extra[/red] {name}: artifact without a source")
    if not result.ok:
        console.print("run `alliance contracts build` and commit contracts/artifacts")
        raise typer.Exit(1)
    console.print(f"artifacts match their sources ({', '.join(CONTRACT_NAMES)}; {load_artifact(CONTRACT_NAMES[0])['compiler']['version']})")


@app.command()
def deploy(
    chain_url: str = typer.Option(EMBEDDED, "--chain", envvar="ALLIANCE_CHAIN_URL", help="'embedded' or an http(s) JSON-RPC URL"),
    manifest: Path = typer.Option(Path("var/deployment.json"), envvar="ALLIANCE_MANIFEST", help="where to write the deployment manifest"),
    value_per_point: int = typer.Option(VALUE_PER_POINT, min=1, help="settlement-token units per alliance point"),
    rate_notice: int = typer.Option(RATE_NOTICE_S, min=86_400, help="seconds between publishing a rate and its effect"),
    admin_delay: int = typer.Option(ADMIN_DELAY_S, min=0, help="seconds a transfer of the admin role waits"),
    min_epoch: int = typer.Option(MIN_EPOCH_S, min=0, help="seconds an epoch stays open at least"),
    epoch: int = typer.Option(EPOCH_S, min=1, help="seconds after which anyone may close an epoch"),
    refund_window: int = typer.Option(REFUND_WINDOW_S, min=0, help="seconds after a redemption during which it may be refunded"),
    settlement_token: str = typer.Option(None, help="existing settlement token address (default: deploy the test token)"),
) -> None:
    """Deploy registry, settlement token, settlement, points and anchor, and write the manifest.

    The governor key comes from ALLIANCE_GOVERNOR_KEY; without it a new key is made, funded from the
    development faucet (embedded chain and anvil only) and saved beside the manifest as governor.key
    (readable by its owner only): it is the only way to manage the alliance afterwards."""
    from eth_account import Account

    from .chain import ChainError, connect
    from .deploy import deploy_alliance

    try:
        chain = connect(chain_url)
        key, saved = os.environ.get("ALLIANCE_GOVERNOR_KEY"), manifest.parent / "governor.key"
        if not key and saved.exists():
            raise typer.BadParameter(f"{saved} exists: set ALLIANCE_GOVERNOR_KEY to it, or move it away to make a new governor")
        governor = Account.from_key(key) if key else chain.new_account()
        if not key:
            saved.parent.mkdir(parents=True, exist_ok=True)
            with os.fdopen(os.open(saved, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
                f.write(governor.key.hex() + "\n")
            console.print(f"governor {governor.address}: new key saved in {saved} (owner-only; ALLIANCE_GOVERNOR_KEY for later commands)")
        if min_epoch > epoch:
            raise typer.BadParameter("--min-epoch must not exceed --epoch")
        alliance = deploy_alliance(chain, governor, value_per_point=value_per_point, rate_notice=rate_notice,
                                   admin_delay=admin_delay, epoch_lengths=(min_epoch, epoch), refund_window=refund_window,
                                   settlement_token=settlement_token)
    except ChainError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    path = alliance.manifest.save(manifest)
    for name, address in alliance.manifest.addresses.items():
        console.print(f"{name:18} {address}")
    console.print(f"manifest: {path}")
    if chain.embedded:
        console.print("[yellow]embedded chain: it lives only in this process; use --chain http://... to keep it[/yellow]")


def _governed(chain_url: str, manifest: Path):
    """The alliance and the governor's transactor (ALLIANCE_GOVERNOR_KEY)."""
    from eth_account import Account

    from .chain import ChainError, connect
    from .client import Alliance
    from .manifest import Manifest

    key = os.environ.get("ALLIANCE_GOVERNOR_KEY")
    if not key:
        raise typer.BadParameter("set ALLIANCE_GOVERNOR_KEY to the governor's private key")
    try:
        alliance = Alliance(connect(chain_url), Manifest.load(manifest))
    except (ChainError, FileNotFoundError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from None
    return alliance, alliance.transactor(Account.from_key(key))


def _governance_call(chain_url: str, manifest: Path, act):
    """``act(alliance, governor's transactor)``; a revert is a one-line refusal naming the error."""
    from .chain import ContractRevert

    alliance, gov = _governed(chain_url, manifest)
    try:
        return act(alliance, gov)
    except ContractRevert as exc:
        console.print(f"[red]refused by the contracts: {exc}[/red]")
        raise typer.Exit(1) from None


@app.command()
def admit(
    brand: str = typer.Argument(..., help="the brand gateway's chain account (`alliance gateway keys` shows it)"),
    name: str = typer.Option(...),
    rate: int = typer.Option(..., min=1, max=2**64 - 1, help="brand points per alliance point"),
    credit_limit: int = typer.Option(..., min=0, max=2**96 - 1, help="most AP the brand may issue net per open epoch"),
    fund_gas: bool = typer.Option(False, help="send the brand ether for gas from the faucet (development chains)"),
    mint_collateral: int = typer.Option(0, min=0, help="mint this much test settlement token to the brand (test token only)"),
    chain_url: str = typer.Option(EMBEDDED, "--chain", envvar="ALLIANCE_CHAIN_URL"),
    manifest: Path = typer.Option(Path("var/deployment.json"), envvar="ALLIANCE_MANIFEST"),
) -> None:
    """Governance: admit a brand and set its credit limit (it then deposits its own collateral)."""

    def act(alliance, gov) -> None:
        alliance.registry.admit(gov, brand, name, rate)
        alliance.settlement.set_credit_limit(gov, brand, credit_limit)
        if mint_collateral:
            alliance.token.mint(gov, brand, mint_collateral)
        if fund_gas:
            alliance.chain.fund(brand)

    _governance_call(chain_url, manifest, act)
    console.print(f"admitted {name} ({brand}) at {rate} points per AP, credit limit {credit_limit} AP")


@app.command()
def rotate(
    brand: str = typer.Argument(..., help="the brand's current chain account"),
    new_account: str = typer.Argument(..., help="the account it acts through from now on"),
    chain_url: str = typer.Option(EMBEDDED, "--chain", envvar="ALLIANCE_CHAIN_URL"),
    manifest: Path = typer.Option(Path("var/deployment.json"), envvar="ALLIANCE_MANIFEST"),
) -> None:
    """Governance: move a brand to a new account (its gateway key was compromised or replaced). It keeps
    its collateral, settlement record, member nonces and anchors; the old account can do nothing more."""
    _governance_call(chain_url, manifest, lambda alliance, gov: alliance.registry.rotate(gov, brand, new_account))
    console.print(f"{brand} now acts through {new_account}")


@app.command("set-payout")
def set_payout(
    brand: str = typer.Argument(..., help="the brand's current chain account"),
    payout: str = typer.Argument(..., help="where the brand's withdrawn collateral goes (its treasury)"),
    chain_url: str = typer.Option(EMBEDDED, "--chain", envvar="ALLIANCE_CHAIN_URL"),
    manifest: Path = typer.Option(Path("var/deployment.json"), envvar="ALLIANCE_MANIFEST"),
) -> None:
    """Governance: set the address a brand's collateral withdrawals are paid to."""
    _governance_call(chain_url, manifest, lambda alliance, gov: alliance.settlement.set_payout(gov, brand, payout))
    console.print(f"withdrawals of {brand} go to {payout}")


@app.command("close-epoch")
def close_epoch(
    chain_url: str = typer.Option(EMBEDDED, "--chain", envvar="ALLIANCE_CHAIN_URL"),
    manifest: Path = typer.Option(Path("var/deployment.json"), envvar="ALLIANCE_MANIFEST"),
) -> None:
    """The settler: settle the open epoch (one net movement per brand). Refused before the minimum epoch
    length; after the epoch length any account may close."""
    alliance, receipt = _governance_call(chain_url, manifest, lambda alliance, gov: (alliance, alliance.settlement.close_epoch(gov)))
    settled = alliance.settlement.events(receipt, "BrandSettled")
    console.print_json(json.dumps({"epoch": settled[0]["epoch"] if settled else None, "block": receipt["blockNumber"],
                                   "pool": alliance.settlement.pool_balance(), "brands": settled}))
