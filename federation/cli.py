"""``alliance simulate``: fill brand gateways' databases with a seeded population.

Join it to the project CLI with ``app.add_typer(simulate_app, name="simulate")`` in
``scripts/cli.py`` (``from federation.cli import simulate_app``).  Standalone:
``python -m federation.cli --size small --seed 7 --workdir var/population``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import typer

from federation import population

simulate_app = typer.Typer(pretty_exceptions_show_locals=False, help="Simulate an alliance population into brand gateway databases.", invoke_without_command=True)


@simulate_app.callback()
def simulate(
    workdir: Path = typer.Option(Path("var/population"), help="where each brand's gateway database and keys go"),
    size: str = typer.Option("default", help=f"population size: {', '.join(population.SIZES)} (default >= 100,000 members)"),
    seed: int = typer.Option(7, help="seed of the behavioural model (same seed, same alliance)"),
    brands: str = typer.Option("", help="comma-separated subset of " + ",".join(k.brand_id for k in population.BRAND_KINDS)),
    fresh: bool = typer.Option(True, help="delete the workdir first"),
    check: bool = typer.Option(True, help="verify the ledger invariants afterwards"),
) -> None:
    """Generate the population and write it through the gateways' data layer; prints the map."""
    if fresh and workdir.exists():
        shutil.rmtree(workdir)
    chosen = [b.strip() for b in brands.split(",") if b.strip()] or None
    manifest = population.populate(workdir, seed=seed, size=size, brands=chosen, log=lambda s: typer.echo(s, err=True))
    if check:
        from gateway.db import make_engine

        for b in manifest["brands"]:
            bad = {k: v for k, v in population.check_invariants(make_engine(b["db_url"])).items() if v}
            if bad:
                typer.echo(f"{b['brand_id']}: ledger invariants violated: {bad}", err=True)
                raise typer.Exit(1)
    typer.echo(json.dumps(manifest, indent=2))
    typer.echo(f"map: {workdir / 'population.json'}  (run config: gateway-map=\"{workdir / 'population.json'}\")", err=True)


if __name__ == "__main__":
    simulate_app()
