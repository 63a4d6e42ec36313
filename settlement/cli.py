"""`alliance settle ...`, `alliance audit ...` and `alliance console ...`.

Each command reads one JSON configuration file (``--config``, default ``settlement.json``)::

    {
      "chain_url": "http://127.0.0.1:8545",
      "manifest": "var/deployment.json",
      "store": "sqlite:///var/settlement/index.sqlite",
      "auditor": {"user": "auditor", "password_hash": "pbkdf2_sha256$..."},      (console only)
      "gateways": [
        {"brand_id": "grocery", "address": "0x...", "url": "http://127.0.0.1:8001",
         "auditor_key_env": "GROCERY_AUDITOR_KEY",           (or "auditor_key": "ak_auditor_...")
         "public_key_pem_file": "keys/grocery.pub.pem",      (optional: pins the receipt key)
         "database_url": "sqlite:///var/grocery.sqlite"}     (optional, read-only: reconciliation and report totals;
                                                              the audit reads only the gateway API and the chain)
      ]
    }

The settler's key (the account holding SETTLER_ROLE) comes from ``ALLIANCE_SETTLER_KEY`` or
``--settler-key-file``; it is only needed by ``settle close``.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

settle_app = typer.Typer(help="Index chain events, close settlement epochs, write settlement reports, reconcile ledgers.", no_args_is_help=True)
audit_app = typer.Typer(help="Verify every brand's logs, anchors, receipts and processings without trusting the brand.", no_args_is_help=True)
console_app = typer.Typer(help="The read-only auditor console.", no_args_is_help=True)
app = typer.Typer(help="Settlement and audit.", no_args_is_help=True)
app.add_typer(settle_app, name="settle")
app.add_typer(audit_app, name="audit")
app.add_typer(console_app, name="console")

CONFIG = typer.Option(Path("settlement.json"), "--config", "-c", help="settlement service configuration (JSON)")


@dataclass
class Context:
    config: dict[str, Any]
    alliance: Any
    store: Any


def _load(config_path: Path) -> Context:
    from contracts.chain import connect
    from contracts.client import Alliance
    from contracts.manifest import Manifest

    from .store import Store

    if not config_path.exists():
        raise typer.BadParameter(f"{config_path} not found (see `alliance settle --help` for its shape)")
    config = json.loads(config_path.read_text())
    chain = connect(config.get("chain_url", "embedded"))
    alliance = Alliance(chain, Manifest.load(config["manifest"]))
    return Context(config, alliance, Store(config.get("store", "sqlite:///var/settlement/index.sqlite")))


def _gateways(config: dict[str, Any]):
    import httpx

    from .audit import GatewayAccess

    out = []
    for g in config.get("gateways", []):
        key = g.get("auditor_key") or os.environ.get(g.get("auditor_key_env", ""), "")
        pem = Path(g["public_key_pem_file"]).read_text() if g.get("public_key_pem_file") else None
        out.append(GatewayAccess(g["brand_id"], g["address"], httpx.Client(base_url=g["url"], timeout=30), key, pem, g.get("database_url")))
    return out


def _print(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


@settle_app.command("index")
def index_cmd(config: Path = CONFIG, follow: bool = typer.Option(False, help="keep following new blocks"),
              interval: float = typer.Option(2.0, help="seconds between polls with --follow")) -> None:
    """Read new chain events into the store (resumable, idempotent)."""
    from .indexer import Indexer

    ctx = _load(config)
    indexer = Indexer(ctx.alliance, ctx.store, confirmations=int(ctx.config.get("confirmations", 0)))
    if follow:
        indexer.follow(interval)
    _print(indexer.run().to_dict())


@settle_app.command("close")
def close_cmd(config: Path = CONFIG, settler_key_file: Path = typer.Option(None, help="file holding the settler's private key"),
              max_age: int = typer.Option(24 * 3600, help="close once the epoch has been open this many seconds"),
              max_volume: int = typer.Option(None, help="close once this many AP were issued plus redeemed"),
              force: bool = typer.Option(False, help="close now whatever the policy says"),
              out: Path = typer.Option(None, help="write the close report (JSON) here")) -> None:
    """Prove positions before, close the epoch if due, prove the close after."""
    from eth_account import Account

    from .epochs import CloseRefused, EpochPolicy, close_epoch

    ctx = _load(config)
    key = settler_key_file.read_text().strip() if settler_key_file else os.environ.get("ALLIANCE_SETTLER_KEY")
    if not key:
        raise typer.BadParameter("the settler's key is needed: ALLIANCE_SETTLER_KEY or --settler-key-file")
    try:
        report = close_epoch(ctx.alliance, Account.from_key(key), ctx.store, policy=EpochPolicy(max_age, max_volume), force=force)
    except CloseRefused as exc:
        _print(exc.report.to_dict())
        raise typer.Exit(2) from None
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report.to_dict(), indent=2, default=str))
    _print({"epoch": report.epoch, "closed": report.closed, "ok": report.ok, "reason": report.reason, "tx": report.tx_hash,
            "failed_checks": [c.name for c in report.before + report.after if not c.ok], "report": str(out) if out else None})
    if not report.ok:
        raise typer.Exit(1)


@settle_app.command("report")
def report_cmd(config: Path = CONFIG, out: Path = typer.Option(Path("var/settlement/report"), help="output directory"),
               epochs: str = typer.Option(None, help="comma-separated epochs (default: every closed epoch)"),
               charts: bool = typer.Option(True, help="write PNG and SVG charts")) -> None:
    """Settlement report per epoch and for the period: JSON, CSV, PNG and SVG."""
    from .indexer import Indexer
    from .reports import brand_point_totals, build_report, write_report

    ctx = _load(config)
    Indexer(ctx.alliance, ctx.store).run()
    names = {g["address"]: g["brand_id"] for g in ctx.config.get("gateways", [])}
    brand_points = {g["address"]: brand_point_totals(g["database_url"]) for g in ctx.config.get("gateways", []) if g.get("database_url")}
    chosen = [int(e) for e in epochs.split(",")] if epochs else None
    report = build_report(ctx.store, ctx.alliance.manifest.value_per_point, epochs=chosen, names=names, brand_points=brand_points)
    _print(write_report(report, out, charts=charts))


@settle_app.command("reconcile")
def reconcile_cmd(config: Path = CONFIG, out: Path = typer.Option(None, help="write the reconciliation (JSON) here")) -> None:
    """Every gateway's exchanges and redemptions against chain events."""
    from .indexer import Indexer
    from .reconcile import GatewayDatabase, reconcile

    ctx = _load(config)
    Indexer(ctx.alliance, ctx.store).run()
    ledgers = [GatewayDatabase(g["database_url"], g["address"], g["brand_id"]) for g in ctx.config.get("gateways", []) if g.get("database_url")]
    result = reconcile(ctx.store, ledgers).to_dict()
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, default=str))
    _print({k: v for k, v in result.items() if k != "brands"} | {"brands": [{"name": b["name"], "ok": b["ok"], "issues": b["issues_by_kind"]}
                                                                           for b in result["brands"]]})
    if not result["ok"]:
        raise typer.Exit(1)


@audit_app.command("verify")
def verify_cmd(config: Path = CONFIG, out: Path = typer.Option(Path("var/settlement/audit"), help="output directory (audit.json, audit.html)"),
               sample: int = typer.Option(20, help="receipts to sample per brand (0: all)"),
               seed: int = typer.Option(0, help="sampling seed (record it to repeat the audit)")) -> None:
    """Check consent logs, anchors, receipts, processings and admin logs of every brand."""
    from .audit import verify

    ctx = _load(config)
    report = verify(ctx.alliance, _gateways(ctx.config), sample=sample or None, seed=seed)
    paths = report.write(out)
    _print({"ok": report.ok, **paths, "failed": [f"{b.brand_id}: {c.name}" for b in report.brands for c in b.checks if not c.ok]})
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("hash-password")
def hash_password_cmd(password: str = typer.Option(..., prompt=True, hide_input=True, confirmation_prompt=True)) -> None:
    """The password hash to put in the configuration's "auditor" section."""
    from .console import hash_password

    typer.echo(hash_password(password))


@console_app.command("serve")
def serve_cmd(config: Path = CONFIG, host: str = "127.0.0.1", port: int = 8090) -> None:
    """Serve the auditor console (read-only, auditor login)."""
    import uvicorn

    from .console import ConsoleConfig, create_console

    ctx = _load(config)
    auditor = ctx.config.get("auditor") or {}
    if not auditor.get("user") or not auditor.get("password_hash"):
        raise typer.BadParameter('the configuration needs "auditor": {"user", "password_hash"} (see `audit hash-password`)')
    secret = os.environ.get("ALLIANCE_CONSOLE_SECRET")
    cfg = ConsoleConfig(ctx.alliance, ctx.store, _gateways(ctx.config), auditor["user"], auditor["password_hash"],
                        k=int(ctx.config.get("k", 5)))
    if secret:
        cfg.session_secret = secret.encode()
    uvicorn.run(create_console(cfg), host=host, port=port)


if __name__ == "__main__":
    app()
