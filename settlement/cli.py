"""`alliance settle ...`, `alliance audit ...` and `alliance console ...`.

Each command reads one JSON configuration file (``--config``, default ``settlement.json``); its shape
is ``CONFIG_HELP`` below, which ``alliance settle --help`` shows. A wrong configuration or an
unreachable chain, store or gateway ends a command with one line on stderr and exit status 2 (not a
traceback); the audit failing a check exits 1.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, NoReturn

import typer

CONFIG_HELP = """Every command reads one JSON configuration (--config, default settlement.json):

\b
{
  "chain_url": "http://127.0.0.1:8545",
  "manifest": "var/deployment.json",
  "store": "sqlite:///var/settlement/index.sqlite",
  "gateways": [
    {"brand_id": "grocery",
     "address": "0x...",
     "url": "http://127.0.0.1:8001",
     "auditor_key_env": "GROCERY_AUDITOR_KEY",
     "public_key_pem_file": "keys/grocery.pub.pem",
     "database_url": "sqlite:///var/grocery.sqlite"}
  ],
  "auditor": {"user": "auditor", "password_hash": "pbkdf2_sha256$..."}
}

store: SQLite or PostgreSQL (postgresql+psycopg://...). \
Per gateway: brand_id and address (a brand in the registry) always; url and auditor_key_env (or auditor_key) \
for the audit and the console; public_key_pem_file (optional) pins the brand's receipt key; \
database_url (optional, read-only) for reconcile and the report's brand-points totals. \
auditor: the console only (see `alliance audit hash-password`).

settle close signs with the settler's key, from ALLIANCE_SETTLER_KEY or --settler-key-file."""

settle_app = typer.Typer(pretty_exceptions_show_locals=False, help="Index chain events, close settlement epochs, write settlement reports, reconcile ledgers.\n\n" + CONFIG_HELP,
                         no_args_is_help=True)
audit_app = typer.Typer(pretty_exceptions_show_locals=False, help="Verify every brand's logs, anchors, receipts and processings without trusting the brand.\n\n" + CONFIG_HELP,
                        no_args_is_help=True)
console_app = typer.Typer(pretty_exceptions_show_locals=False, help="The read-only auditor console.\n\n" + CONFIG_HELP, no_args_is_help=True)
app = typer.Typer(pretty_exceptions_show_locals=False, help="Settlement and audit.", no_args_is_help=True)
app.add_typer(settle_app, name="settle")
app.add_typer(audit_app, name="audit")
app.add_typer(console_app, name="console")

CONFIG = typer.Option(Path("settlement.json"), "--config", "-c", help="settlement service configuration (JSON)")


@dataclass
class Context:
    config: dict[str, Any]
    alliance: Any
    store: Any


def _fail(message: str) -> NoReturn:
    """Stop with a message (plain text on stderr, never wrapped) and exit status 2: what is wrong with
    the configuration or the environment, not a traceback."""
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(2)


@contextmanager
def _reporting_failures(what: str) -> Iterator[None]:
    """The environment failing under a command (chain, gateway or database unreachable) ends it with a
    message; anything else is a bug and keeps its traceback."""
    import httpx
    import requests
    from sqlalchemy.exc import OperationalError
    from web3.exceptions import Web3Exception

    from contracts.chain import ChainError

    from .audit import AuditFetchError
    from .indexer import IndexerError

    try:
        yield
    except (ChainError, IndexerError, AuditFetchError) as exc:
        _fail(f"{what}: {exc}")
    except Web3Exception as exc:  # e.g. no contract at an address of the manifest: another chain with the same id
        _fail(f"{what}: {type(exc).__name__}: {exc}")
    except (httpx.HTTPError, requests.RequestException, OperationalError) as exc:
        _fail(f"{what}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")


def _read_config(config_path: Path) -> dict[str, Any]:
    if not config_path.is_file():
        _fail(f"{config_path} not found (see `alliance settle --help` for its shape)")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        _fail(f"{config_path} is not valid JSON: {exc}")
    if not isinstance(config, dict):
        _fail(f"{config_path} must hold a JSON object (see `alliance settle --help` for its shape)")
    if not config.get("manifest"):
        _fail(f'{config_path} names no "manifest" (the deployment manifest of the alliance contracts)')
    gateways = config.get("gateways", [])
    if not isinstance(gateways, list) or not all(isinstance(g, dict) for g in gateways):
        _fail(f'{config_path}: "gateways" must be a list of objects')
    for i, g in enumerate(gateways):
        missing = [k for k in ("brand_id", "address") if not g.get(k)]
        if missing:
            _fail(f'{config_path}: gateway {i + 1} has no {" or ".join(missing)}')
    return config


def _load(config_path: Path) -> Context:
    from eth_utils import is_address, to_checksum_address
    from sqlalchemy.exc import ArgumentError

    from contracts.chain import connect
    from contracts.client import Alliance
    from contracts.manifest import Manifest

    from .store import Store

    config = _read_config(config_path)
    manifest_path = Path(config["manifest"])
    if not manifest_path.is_file():
        _fail(f"the deployment manifest {manifest_path} (named in {config_path}) not found")
    try:
        manifest = Manifest.load(manifest_path)
    except (ValueError, TypeError) as exc:
        _fail(f"{manifest_path} is not a deployment manifest: {exc}")
    with _reporting_failures("cannot reach the alliance chain"):
        chain = connect(config.get("chain_url", "embedded"))
        if chain.chain_id != manifest.chain_id:
            _fail(f"the chain at {config.get('chain_url', 'embedded')} has id {chain.chain_id}; the manifest {manifest_path} "
                  f"was deployed on chain {manifest.chain_id}")
        alliance = Alliance(chain, manifest)
        if not chain.w3.eth.get_code(manifest.addresses["AllianceRegistry"]):
            _fail(f"no alliance contracts on the chain at {config.get('chain_url', 'embedded')}: nothing deployed at the "
                  f"registry address of {manifest_path} (a restarted development node?)")
        brands = set(alliance.registry.brands())
    for g in config.get("gateways", []):
        if not is_address(g["address"]):
            _fail(f'gateway "{g["brand_id"]}": {g["address"]} is not an address')
        g["address"] = to_checksum_address(g["address"])
        if g["address"] not in brands:
            _fail(f'gateway "{g["brand_id"]}": {g["address"]} is not a brand of this alliance '
                  f"(not in the registry at {manifest.addresses['AllianceRegistry']})")
    store_url = config.get("store", "sqlite:///var/settlement/index.sqlite")
    try:
        with _reporting_failures(f"cannot open the settlement store {store_url}"):
            store = Store(store_url)
    except ArgumentError as exc:
        _fail(f"the settlement store URL {store_url!r} is not a database URL: {exc}")
    return Context(config, alliance, store)


def _gateways(config: dict[str, Any]):
    import httpx

    from .audit import GatewayAccess

    out = []
    for g in config.get("gateways", []):
        if not g.get("url"):
            _fail(f'gateway "{g["brand_id"]}" has no "url" (its HTTP API, which the audit reads)')
        key = g.get("auditor_key") or os.environ.get(g.get("auditor_key_env", ""), "")
        if not key:
            _fail(f'gateway "{g["brand_id"]}" has no auditor API key: set "auditor_key", or "auditor_key_env" to a variable that holds it')
        pem = None
        if g.get("public_key_pem_file"):
            pem_path = Path(g["public_key_pem_file"])
            if not pem_path.is_file():
                _fail(f'gateway "{g["brand_id"]}": public key file {pem_path} not found')
            pem = pem_path.read_text()
        out.append(GatewayAccess(g["brand_id"], g["address"], httpx.Client(base_url=g["url"], timeout=30), key, pem, g.get("database_url")))
    return out


def _liabilities(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each brand's points liability as its gateway states it (GET /v1/audit/liability with the
    auditor key), by address; a gateway without a URL and key is left out, one that cannot answer
    is reported as such (the AP figures stand on the chain alone)."""
    import httpx

    from .audit import AuditFetchError

    out = {}
    for g in config.get("gateways", []):
        if not g.get("url") or not (g.get("auditor_key") or os.environ.get(g.get("auditor_key_env", ""), "")):
            continue
        [access] = _gateways({"gateways": [g]})
        try:
            out[g["address"]] = access.get("/v1/audit/liability")
        except (AuditFetchError, httpx.HTTPError) as exc:
            out[g["address"]] = {"unavailable": str(exc)[:200] or type(exc).__name__}
        finally:
            access.http.close()
    return out


def _print(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


@settle_app.command("index")
def index_cmd(config: Path = CONFIG, follow: bool = typer.Option(False, help="keep following new blocks"),
              interval: float = typer.Option(2.0, help="seconds between polls with --follow")) -> None:
    """Read new chain events into the store (resumable, idempotent)."""
    from .indexer import Indexer

    ctx = _load(config)
    with _reporting_failures("indexing stopped"):
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

    if settler_key_file is not None and not settler_key_file.is_file():
        _fail(f"the settler's key file {settler_key_file} not found")
    key = settler_key_file.read_text().strip() if settler_key_file else os.environ.get("ALLIANCE_SETTLER_KEY")
    if not key:
        _fail("the settler's key is needed: ALLIANCE_SETTLER_KEY or --settler-key-file")
    try:
        settler = Account.from_key(key)
    except (ValueError, TypeError):
        _fail("the settler's key is not a private key (64 hex digits)")
    ctx = _load(config)
    try:
        with _reporting_failures(f"epoch not closed (settler {settler.address})"):
            report = close_epoch(ctx.alliance, settler, ctx.store, policy=EpochPolicy(max_age, max_volume), force=force)
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
    from .reports import build_report, write_report

    try:
        chosen = [int(e) for e in epochs.split(",")] if epochs else None
    except ValueError:
        _fail(f"--epochs takes epoch numbers separated by commas, not {epochs!r}")
    ctx = _load(config)
    with _reporting_failures("report not written"):
        Indexer(ctx.alliance, ctx.store).run()
        names = {g["address"]: g["brand_id"] for g in ctx.config.get("gateways", [])}
        report = build_report(ctx.store, ctx.alliance.manifest.value_per_point, epochs=chosen, names=names,
                              brand_points=_liabilities(ctx.config))
    if chosen and not report["epochs"]:
        _fail(f"none of the epochs {epochs} is closed (epochs 1 to {report['open_epoch']['epoch'] - 1} are)")
    _print(write_report(report, out, charts=charts))


@settle_app.command("reconcile")
def reconcile_cmd(config: Path = CONFIG, out: Path = typer.Option(None, help="write the reconciliation (JSON) here")) -> None:
    """Every gateway's exchanges and redemptions against chain events."""
    from .indexer import Indexer
    from .reconcile import GatewayDatabase, reconcile

    ctx = _load(config)
    with _reporting_failures("reconciliation stopped"):
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
    gateways = _gateways(ctx.config)
    with _reporting_failures("audit stopped"):
        report = verify(ctx.alliance, gateways, sample=sample or None, seed=seed)
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
        _fail(f'{config} needs "auditor": {{"user", "password_hash"}} (see `alliance audit hash-password`)')
    secret = os.environ.get("ALLIANCE_CONSOLE_SECRET")
    cfg = ConsoleConfig(ctx.alliance, ctx.store, _gateways(ctx.config), auditor["user"], auditor["password_hash"],
                        k=int(ctx.config.get("k", 5)))
    if secret:
        cfg.session_secret = secret.encode()
    uvicorn.run(create_console(cfg), host=host, port=port)


if __name__ == "__main__":
    app()
