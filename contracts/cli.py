"""`alliance contracts ...`: build, check and deploy the alliance contracts."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from eth_account import Account
from rich.console import Console

from . import build as build_mod
from .artifacts import CONTRACT_NAMES, load_artifact
from .chain import EMBEDDED, ChainError, connect
from .deploy import DEFAULT_RATE_NOTICE, DEFAULT_VALUE_PER_POINT, deploy_alliance

app = typer.Typer(help="Build, check and deploy the alliance contracts (Python only, no Hardhat).", no_args_is_help=True)
console = Console()


@app.command()
def build() -> None:
    """Compile contracts/src with the pinned solc-js and write contracts/artifacts."""
    try:
        for path in build_mod.build():
            console.print(f"wrote {path}")
    except build_mod.ToolchainMissing as exc:
        raise typer.BadParameter(str(exc)) from None


@app.command()
def check() -> None:
    """Recompile and fail if any committed artifact differs from what the sources compile to."""
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
    manifest: Path = typer.Option(Path("var/deployment.json"), help="where to write the deployment manifest"),
    value_per_point: int = typer.Option(DEFAULT_VALUE_PER_POINT, min=1, help="settlement-token units per alliance point"),
    rate_notice: int = typer.Option(DEFAULT_RATE_NOTICE, min=86_400, help="seconds between publishing a rate and its effect"),
    settlement_token: str = typer.Option(None, help="existing settlement token address (default: deploy the test token)"),
) -> None:
    """Deploy registry, settlement token, settlement, points and anchor, and write the manifest.

    The governor key comes from ALLIANCE_GOVERNOR_KEY; without it a new key is made and funded from
    the development faucet (embedded chain and anvil only)."""
    try:
        chain = connect(chain_url)
        key = os.environ.get("ALLIANCE_GOVERNOR_KEY")
        governor = Account.from_key(key) if key else chain.new_account()
        alliance = deploy_alliance(chain, governor, value_per_point=value_per_point, rate_notice=rate_notice,
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
