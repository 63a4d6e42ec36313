"""The `alliance` command: one entry point that joins each package's own sub-commands."""

from __future__ import annotations

import typer

from contracts.cli import app as contracts_app
from gateway.cli import app as gateway_app
from gateway.member_cli import app as member_app
from federation.cli import simulate_app
from settlement.cli import audit_app, console_app, settle_app

app = typer.Typer(pretty_exceptions_show_locals=False, help="Operate a privacy-preserving cross-brand loyalty alliance.", no_args_is_help=True)
app.add_typer(contracts_app, name="contracts")
app.add_typer(gateway_app, name="gateway")
app.add_typer(member_app, name="member")
app.add_typer(settle_app, name="settle")
app.add_typer(audit_app, name="audit")
app.add_typer(console_app, name="console")
app.add_typer(simulate_app, name="simulate")


@app.command()
def demo(workdir: str = typer.Option("var/demo", help="where the brands' databases and keys go (recreated)")) -> None:
    """Run a whole local alliance on embedded defaults and print what happened."""
    from pathlib import Path

    from scripts.demo import run

    run(Path(workdir))

if __name__ == "__main__":
    app()
