"""The `alliance` command: one entry point that joins each package's own sub-commands."""

from __future__ import annotations

from pathlib import Path

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


ALLIANCE_FILE = typer.Option(None, "--file", "-f", envvar="ALLIANCE_FILE", exists=True, dir_okay=False,
                             help="the alliance file (TOML; see `alliance up --help`); without it: three brands on built-in defaults")
WORKDIR = typer.Option(None, "--workdir", help="where the alliance lives (default: the file's workdir, else var/alliance)")


def _spec(file, workdir):
    from scripts.up import SpecError, load_spec

    try:
        return load_spec(file, workdir)
    except SpecError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def up(file: Path = ALLIANCE_FILE, workdir: Path = WORKDIR,
       timeout: float = typer.Option(180, min=10, help="seconds to wait for every process to be healthy")) -> None:
    """Start a whole alliance as separate processes on loopback and keep them running.

    \b
    The alliance file (TOML):
      workdir = "var/alliance"        # everything lives here (relative to the file)
      [chain]
      url = "anvil"                   # a local anvil kept in workdir/chain, or http(s)://... of a running chain
      port = 8545
      [[brands]]
      id = "grocery"                  # lowercase letters, digits, dashes
      name = "Grocery"
      rate = 100                      # brand points per alliance point
      credit_limit = 1000000          # alliance points of open net issuance
      collateral = 1000000000000      # settlement-token units deposited at admission
      port = 8101
      database_url = "postgresql+psycopg://..."   # optional; default SQLite in workdir/brands/<id>
      workers = 2                     # uvicorn workers, one per core
      settings = { EARN__WELCOME_POINTS = "50" }   # other GATEWAY_* settings, without the prefix
      [federation]
      port = 9092                     # the Flower SuperLink; a SuperNode per brand reads its database
      [federation.training]
      times = ["03:00"]               # daily (UTC); [] = only on `alliance train`
      tasks = ["churn", "redeem"]
      run_config = { num-rounds = 5, dp-epsilon = 8.0 }   # federation run-config keys

    A second `up` resumes the alliance with all its state. Keys (governor.key, brands/<id>/keys,
    brands/<id>/api-keys.json) are readable by their owner only."""
    import time as clock

    from scripts.up import up as start

    spec = _spec(file, workdir)
    began = clock.monotonic()
    try:
        state = start(spec, timeout)
    except RuntimeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"alliance up in {clock.monotonic() - began:.1f} s: {spec.workdir}")
    typer.echo(f"  chain       {spec.chain_url}   governor key: {spec.workdir / 'governor.key'}")
    for brand_id, brand in state["brands"].items():
        typer.echo(f"  {brand_id:11} {brand['url']}   account {brand['address']}   API keys: {brand['keys']}")
    typer.echo(f"  settlement  {spec.workdir / 'settlement.json'} (alliance settle -c ...)")


@app.command()
def down(file: Path = ALLIANCE_FILE, workdir: Path = WORKDIR) -> None:
    """Stop every process `alliance up` started (and nothing else); all state stays for the next `up`."""
    from scripts.up import down as stop

    stopped = stop(_spec(file, workdir).workdir)
    typer.echo("stopped: " + ", ".join(stopped) if stopped else "nothing was running")


@app.command()
def status(file: Path = ALLIANCE_FILE, workdir: Path = WORKDIR,
           as_json: bool = typer.Option(False, "--json", help="one JSON object instead of a table")) -> None:
    """Each process of the alliance: running, healthy, restarts; each brand's URL and chain account.
    Exits 1 unless every process is running and healthy."""
    import json

    from rich.console import Console
    from rich.table import Table

    from scripts.up import status as look

    report = look(_spec(file, workdir).workdir)
    ok = bool(report["supervisor"]) and report["ready"] and all(p["healthy"] for p in report["processes"])
    if as_json:
        typer.echo(json.dumps(report | {"ok": ok}, indent=2))
    else:
        table = Table("process", "pid", "running", "healthy", "restarts", "log")
        for p in report["processes"]:
            table.add_row(p["name"], str(p["pid"]), "yes" if p["running"] else "NO", "yes" if p["healthy"] else "NO", str(p["restarts"]), p["log"])
        console = Console()
        console.print(f"supervisor: {report['supervisor'] or 'not running'}   workdir: {report['workdir']}")
        console.print(table)
        for brand_id, brand in report["brands"].items():
            console.print(f"{brand_id}: {brand['url']}  chain account {brand['address']}")
    raise typer.Exit(0 if ok else 1)


@app.command()
def logs(name: str = typer.Argument("supervisor", help="supervisor, anvil or gateway-<brand id>"), file: Path = ALLIANCE_FILE,
         workdir: Path = WORKDIR, lines: int = typer.Option(50, "--lines", "-n", min=1)) -> None:
    """The end of one process's log."""
    from scripts.up import tail

    log = _spec(file, workdir).workdir / "logs" / f"{name}.log"
    if not log.exists():
        typer.echo(f"error: no log {log.name} (processes: supervisor, anvil, gateway-<brand id>)", err=True)
        raise typer.Exit(2)
    typer.echo(tail(log, lines))


@app.command()
def train(task: str = typer.Argument(..., help="churn or redeem"), file: Path = ALLIANCE_FILE, workdir: Path = WORKDIR,
          as_of: str = typer.Option("", help="features as of this time (ISO 8601; default: now − 2 label windows)"),
          eval_as_of: str = typer.Option("", help="held-out rows as of this time (default: now − 1 label window)"),
          rounds: int = typer.Option(0, min=0, help="federated rounds (default: the alliance file's, else 5)")) -> None:
    """Train a federated model now on the running alliance; every brand that took part records the
    release (audit log, anchored on chain with its own key, installed for its campaigns). Prints the outcome."""
    import json

    from scripts.training import TrainingError
    from scripts.training import train as run

    spec = _spec(file, workdir)
    if task not in ("churn", "redeem"):
        raise typer.BadParameter("churn or redeem", param_hint="TASK")
    overrides = {k: v for k, v in (("as-of", as_of), ("eval-as-of", eval_as_of), ("num-rounds", rounds)) if v}
    spec.federation.training.run_config |= overrides
    try:
        outcome = run(spec, task)
    except (TrainingError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(outcome, indent=2))


@app.command()
def demo(workdir: str = typer.Option("var/demo", help="where the brands' databases and keys go (recreated)")) -> None:
    """Run a whole local alliance on embedded defaults and print what happened."""
    from scripts.demo import run

    run(Path(workdir))


if __name__ == "__main__":
    app()
