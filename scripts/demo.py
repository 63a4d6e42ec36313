"""The main job: a whole local alliance on embedded defaults, end to end.

Deploys the contracts on the in-process chain, onboards three brands, lets members exchange brand
points into alliance points at one brand and redeem them at another, closes the settlement epoch and
prints balances and net positions.
"""

from __future__ import annotations

import typer
from eth_account import Account
from rich.console import Console
from rich.table import Table

from contracts.chain import EMBEDDED, connect
from contracts.deploy import BrandTerms, deploy_alliance, onboard_brand

BRANDS = (
    BrandTerms("Harbour Grocery", rate=100, credit_limit=1_000_000, collateral=50_000_000_000),
    BrandTerms("Skyway Airlines", rate=20, credit_limit=1_000_000, collateral=50_000_000_000),
    BrandTerms("Bean Cafe", rate=50, credit_limit=1_000_000, collateral=50_000_000_000),
)


def run(chain_url: str = typer.Option(EMBEDDED, "--chain", help="'embedded' or an http(s) JSON-RPC URL")) -> None:
    console = Console()
    chain = connect(chain_url)
    governor = chain.new_account()
    alliance = deploy_alliance(chain, governor)
    console.print(f"[bold]Alliance deployed[/bold] on chain {chain.chain_id} ({chain.url})")

    brands = [chain.new_account() for _ in BRANDS]
    for account, terms in zip(brands, BRANDS):
        onboard_brand(alliance, governor, account, terms)
    grocery, airline, cafe = brands
    names = {b.address: t.name for b, t in zip(brands, BRANDS)}

    members = {name: Account.create() for name in ("alice", "bob")}
    # Exchange: each brand debits its own ledger (the gateway's job) and mints AP to the member.
    alliance.points.mint(alliance.transactor(grocery), members["alice"].address, 1_200, "grocery-ex-1")
    alliance.points.mint(alliance.transactor(airline), members["bob"].address, 800, "airline-ex-1")
    # Redeem at another brand: the member signs, the brand submits and pays the gas.
    deadline = chain.timestamp() + 3600
    for member, brand, amount in (("alice", airline, 700), ("bob", cafe, 500), ("alice", cafe, 200)):
        auth = alliance.points.authorise(members[member], brand.address, amount, deadline)
        alliance.points.redeem(alliance.transactor(brand), auth)
        console.print(f"{member} redeemed {amount} AP at {names[brand.address]}")

    receipt = alliance.settlement.close_epoch(alliance.transactor(governor))
    settled = alliance.settlement.events(receipt, "BrandSettled")

    balances = Table(title="Member AP balances")
    balances.add_column("member")
    balances.add_column("AP", justify="right")
    for name, account in members.items():
        balances.add_row(name, str(alliance.points.balance_of(account.address)))
    console.print(balances)

    value = alliance.settlement.value_per_point()
    positions = Table(title="Epoch 1 net positions (settlement-token units, 6 decimals)")
    for column in ("brand", "issued AP", "redeemed AP", "net", "collateral after"):
        positions.add_column(column, justify="right" if column != "brand" else "left")
    for row in settled:
        positions.add_row(names[row["brand"]], str(row["issued"]), str(row["redeemed"]), f"{row['netValue']:+,}", f"{row['collateral']:,}")
    console.print(positions)
    supply, pool = alliance.points.total_supply(), alliance.settlement.pool_balance()
    console.print(f"AP supply {supply} x value {value} = {supply * value:,}; pool {pool:,} "
                  f"[{'green' if pool == supply * value else 'red'}]{'balanced' if pool == supply * value else 'NOT balanced'}[/]")
