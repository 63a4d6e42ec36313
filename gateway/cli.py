"""`alliance gateway ...`: run and operate one brand's gateway (settings from GATEWAY_* variables)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import typer
from rich.console import Console

from .settings import GatewaySettings

app = typer.Typer(pretty_exceptions_show_locals=False, help="Run and operate a brand gateway (configured by GATEWAY_* environment variables).", no_args_is_help=True)
console = Console()


def _gateway():
    from .runtime import build_gateway

    return build_gateway(GatewaySettings())


@app.command()
def sender() -> None:
    """Run the brand's chain sender as a process of its own: it sends every exchange and redemption
    any gateway worker stores (one account, one nonce sequence), until stopped (SIGTERM, Ctrl-C).
    Without it, the workers share the sending through a lease in the database."""
    import signal
    import threading

    from .services import alliance

    gw = _gateway()
    if gw.alliance is None:
        raise typer.BadParameter("this gateway has no chain configured (GATEWAY_MANIFEST)")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    console.print(f"sending for {gw.brand_address}")
    alliance.sender(gw).run(stop)


@app.command()
def settings() -> None:
    """The gateway's effective settings as JSON (GATEWAY_* variables over the defaults, and the file
    GATEWAY_ENV_FILE names, if any), with secrets masked: passwords, and the database URL's password."""
    from sqlalchemy.engine import make_url

    shown = json.loads(GatewaySettings().model_dump_json())  # SecretStr values dump as '**********'
    shown["database_url"] = make_url(shown["database_url"]).render_as_string(hide_password=True)
    typer.echo(json.dumps(shown, indent=2))


@app.command()
def keys(as_json: bool = typer.Option(False, "--json", help="one JSON object (for scripts)")) -> None:
    """Create the brand's keys if missing (receipt signing key, KEK, pepper, chain account) and show their public parts."""
    from .runtime import build_gateway

    gw = build_gateway(GatewaySettings(), create_schema=False)
    if as_json:
        typer.echo(json.dumps({"keys_dir": str(gw.settings.keys_dir), "chain_account": gw.brand_address,
                               "receipt_key_id": gw.signing_key.key_id}))
        return
    console.print(f"keys directory   {gw.settings.keys_dir}")
    console.print(f"chain account    {gw.brand_address}  (the governor admits this address; fund it with gas)")
    console.print(f"receipt key id   {gw.signing_key.key_id}")


@app.command()
def migrate() -> None:
    """Bring the database schema to the latest migration."""
    gw = _gateway()  # build_gateway upgrades the schema
    console.print(f"schema up to date at {gw.engine.url.render_as_string(hide_password=True)}")


@app.command()
def serve(host: str = "127.0.0.1", port: int = typer.Option(8000, min=1, max=65535),
          workers: int = typer.Option(1, min=1, help="uvicorn worker processes, one per core (on SQLite they share the file on "
                                                        "this host; PostgreSQL also lets several hosts serve one brand)")) -> None:
    """Serve the gateway's HTTP API with uvicorn."""
    import uvicorn

    uvicorn.run("gateway.app:create_app", factory=True, host=host, port=port, workers=workers, log_level="info")


apikey_app = typer.Typer(pretty_exceptions_show_locals=False, no_args_is_help=True,
                         help="API keys of operators, points of sale and auditors: issue, list, revoke.")
app.add_typer(apikey_app, name="apikey")


@apikey_app.command("issue")
def apikey_issue(role: str = typer.Argument(..., help="operator | pos | auditor"), label: str = typer.Option(..., help="who holds it"),
                 expires_in_days: int = typer.Option(None, min=1, max=3660, help="expire after this many days (default: never)")) -> None:
    """Issue an API key; the secret is shown once and stored only hashed."""
    from datetime import timedelta

    from .auth import API_KEY_ROLES, create_api_key
    from .db import transaction
    from .services import audit

    if role not in API_KEY_ROLES:
        raise typer.BadParameter(f"role must be one of {', '.join(API_KEY_ROLES)}")
    gw = _gateway()
    now = gw.now()
    expires_at = now + timedelta(days=expires_in_days) if expires_in_days else None
    with transaction(gw.sessions) as session:
        row, secret = create_api_key(session, role, label, now, expires_at)
        audit.record(session, "cli", "apikey.created", now, key_id=row.id, role=role, label=label,
                     expires_at=expires_at.strftime("%Y-%m-%dT%H:%M:%SZ") if expires_at else None)
    typer.echo(secret)


@apikey_app.command("list")
def apikey_list() -> None:
    """Every API key (never a secret): id, role, label, created, expires, revoked, last used."""
    from .auth import api_keys
    from .db import reading
    from .routes.admin import key_info

    gw = _gateway()
    with reading(gw.sessions) as session:
        rows = [key_info(row) for row in api_keys(session)]
    typer.echo(json.dumps(rows, default=lambda v: v.strftime("%Y-%m-%dT%H:%M:%SZ")))


@apikey_app.command("revoke")
def apikey_revoke(key_id: int = typer.Argument(..., min=1, help="the key's id (see `apikey list`)")) -> None:
    """Revoke an API key: a running gateway refuses it within GATEWAY_API_KEY_CACHE_S (5 s by default)."""
    from .auth import revoke_api_key
    from .db import transaction
    from .errors import NotFound
    from .services import audit

    gw = _gateway()
    try:
        with transaction(gw.sessions) as session:
            row, revoked = revoke_api_key(session, key_id, gw.now())
            if revoked:
                audit.record(session, "cli", "apikey.revoked", gw.now(), key_id=row.id, role=row.role, label=row.label)
    except NotFound:
        raise typer.BadParameter(f"no API key with id {key_id}") from None
    console.print(f"API key {key_id} ({row.role}, {row.label}) {'revoked' if revoked else 'was already revoked'}")


@app.command()
def anchor(kind: str = typer.Option("consent-log", help="consent-log | audit-log")) -> None:
    """Post the log's current Merkle root on chain (also done on a schedule while serving)."""
    from .services import anchoring, logs

    if kind not in logs.LOG_MODELS:
        raise typer.BadParameter(f"kind must be one of {', '.join(logs.LOG_MODELS)}")
    gw = _gateway()
    if gw.alliance is None:
        raise typer.BadParameter("no alliance manifest configured (GATEWAY_MANIFEST)")
    row = anchoring.anchor(gw, kind, "cli")
    if row is None:
        console.print("nothing logged since the last anchor")
    else:
        console.print(json.dumps({"period": row.period, "size": row.size, "root": row.root, "tx_hash": row.tx_hash}))


@app.command()
def overlap(peer: str = typer.Option(..., "--with", help="the other brand's gateway URL"),
            kind: str = typer.Option("phone", help="phone or email: what the members are matched on")) -> None:
    """How many members this brand shares with another, by private set intersection: neither learns
    who; only members who consent to overlap_analytics at both; the count noisy, suppressed below k."""
    from .errors import GatewayError
    from .services import overlap as psi_overlap

    gw = _gateway()
    try:
        typer.echo(json.dumps(psi_overlap.measure(gw, "cli", peer, kind)))
    except GatewayError as exc:
        raise typer.BadParameter(str(exc)) from None


@app.command("record-release")
def record_release(release: Path = typer.Argument(..., help="the release record (<model_version>.release.json), its model file beside it")) -> None:
    """Record an alliance model release in this brand's audit log, anchor it with the brand's own key,
    and install it for campaign targeting (GATEWAY_RELEASES_DIR). Recording it again changes nothing."""
    from federation import releases

    try:
        record = releases.load_release(release)
        intact = releases.verify_release(release)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise typer.BadParameter(f"{release} is not a readable release: {exc}") from None
    if not intact:
        raise typer.BadParameter(f"{release}: the model file does not match the record's SHA-256")
    gw = _gateway()
    if gw.alliance is None:
        raise typer.BadParameter("no alliance manifest configured (GATEWAY_MANIFEST): a release is anchored on chain")
    try:
        result = releases.record_release(record, gw, actor="cli")
    except (KeyError, ValueError) as exc:
        raise typer.BadParameter(f"{release}: {exc}") from None
    target = gw.settings.releases_dir
    if target is not None and target.resolve() != release.parent.resolve():
        target.mkdir(parents=True, exist_ok=True)
        model = releases.model_path(release, record)
        shutil.copyfile(model, target / model.name)
        shutil.copyfile(release, target / release.name)  # the record last: it is what makes the release visible
        result["installed"] = str(target / release.name)
    typer.echo(json.dumps(result))  # plain: rich would wrap the line


@app.command()
def maintenance() -> None:
    """Expire due points, review tiers, and retry pending chain operations."""
    from .routes.admin import run_maintenance

    console.print(json.dumps(run_maintenance(_gateway(), "cli")))


@app.command()
def deposit(amount: int = typer.Argument(..., min=1, help="settlement-token units to add as collateral")) -> None:
    """Deposit collateral at the settlement contract from the brand's chain account."""
    from contracts.chain import ContractRevert

    gw = _gateway()
    if gw.alliance is None:
        raise typer.BadParameter("no alliance manifest configured (GATEWAY_MANIFEST)")
    tx = gw.transactor()
    try:
        gw.alliance.token.approve(tx, gw.alliance.settlement.address, amount)
        gw.alliance.settlement.deposit(tx, amount)
    except ContractRevert as exc:
        console.print(f"[red]refused by the contracts: {exc}[/red]")
        raise typer.Exit(1) from None
    position = gw.alliance.settlement.open_position(gw.brand_address)
    console.print(f"deposited {amount}; free collateral now {position.free_collateral}")


rotate_app = typer.Typer(pretty_exceptions_show_locals=False, no_args_is_help=True,
                         help="Rotate the key-encryption key or the pepper now (the KEK also rotates on its own schedule).")
app.add_typer(rotate_app, name="rotate")


@rotate_app.command("kek")
def rotate_kek() -> None:
    """Re-wrap every member data key under a new KEK now and destroy the old one (every erasure so far becomes final)."""
    from .services import datakeys

    rotation = datakeys.rotate(_gateway(), "cli")
    typer.echo(json.dumps({"kek_id": rotation.new_kek_id, "destroyed": list(rotation.destroyed_kek_ids), "rewrapped": rotation.rewrapped}))


@rotate_app.command("pepper")
def rotate_pepper() -> None:
    """Make a new pepper current and re-key every identifier to it; then `retire-pepper` the old one."""
    from .services import peppers

    gw = _gateway()
    version = peppers.rotate(gw, "cli")
    done = peppers.rekey(gw)
    typer.echo(json.dumps({"current": version, "rekeyed": done.rekeyed, "not_rekeyed": done.left}))


@app.command("retire-pepper")
def retire_pepper(version: int = typer.Argument(..., min=1, help="the old pepper's version")) -> None:
    """Destroy an old pepper once no identifier or enrolment in progress uses it."""
    from .errors import GatewayError
    from .services import peppers

    try:
        peppers.retire(_gateway(), version, "cli")
    except GatewayError as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(json.dumps({"retired": version}))


reward_app = typer.Typer(pretty_exceptions_show_locals=False, no_args_is_help=True,
                         help="The rewards catalogue and its orders: define, list, orders, fulfil (each change versioned and audited).")
app.add_typer(reward_app, name="reward")


def _operate(action):
    """Run `action(session, gw)` in one transaction; a refusal (bad value, conflict) becomes a CLI
    message and exit status 2, as the API would answer 4xx."""
    from pydantic import ValidationError

    from .db import transaction
    from .errors import GatewayError

    gw = _gateway()
    try:
        with transaction(gw.sessions) as session:
            return action(session, gw)
    except ValidationError as exc:
        raise typer.BadParameter("; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())) from None
    except GatewayError as exc:
        raise typer.BadParameter(exc.detail) from None


def _echo(obj) -> None:
    typer.echo(json.dumps(obj, default=lambda v: v.strftime("%Y-%m-%dT%H:%M:%SZ")))


@reward_app.command("define")
def reward_define(code: str = typer.Argument(..., help="lowercase letters, digits, dashes (e.g. coffee-coupon)"),
                  kind: str = typer.Option(..., help="coupon | good | digital | experience"),
                  name: str = typer.Option(...), points_price: int = typer.Option(..., help="what it costs in points"),
                  description: str = typer.Option(""), stock: int = typer.Option(None, help="how many can be ordered (default: no limit)"),
                  available_from: str = typer.Option(None, help="ISO 8601 time (default: now)"),
                  available_until: str = typer.Option(None, help="ISO 8601 time (default: no end)"),
                  min_tier: str = typer.Option(None, help="this tier and above may order it"),
                  per_member_limit: int = typer.Option(None), coupon_value_minor: int = typer.Option(None, help="a coupon: what it takes off"),
                  coupon_min_spend_minor: int = typer.Option(None), coupon_valid_days: int = typer.Option(None, help="a coupon: days it lasts (7)"),
                  active: bool = typer.Option(True, "--active/--inactive")) -> None:
    """Define a reward, or replace its definition as a new version (in the admin audit log)."""
    from .routes.rewards import reward_info
    from .schemas import RewardCode, RewardDefinition
    from .services import rewards

    def define(session, gw):
        from pydantic import TypeAdapter

        TypeAdapter(RewardCode).validate_python(code)
        body = RewardDefinition.model_validate({
            "kind": kind, "name": name, "description": description, "points_price": points_price, "stock": stock,
            "available_from": available_from or gw.now().isoformat(), "available_until": available_until, "min_tier": min_tier,
            "per_member_limit": per_member_limit, "coupon_value_minor": coupon_value_minor,
            "coupon_min_spend_minor": coupon_min_spend_minor, "coupon_valid_days": coupon_valid_days, "active": active})
        return reward_info(rewards.define(session, gw, "cli", code, rewards.RewardSpec(**body.model_dump()), gw.now())).model_dump()

    _echo(_operate(define))


@reward_app.command("list")
def reward_list() -> None:
    """The whole catalogue (rewards not on offer included), as JSON."""
    from .routes.rewards import reward_info
    from .services import rewards

    _echo(_operate(lambda session, gw: [reward_info(r).model_dump() for r in rewards.catalogue(session, gw.now(), include_inactive=True)]))


@reward_app.command("orders")
def reward_orders(status: str = typer.Option(None, help="awaiting_payment | ordered | shipped | delivered | issued | granted | cancelled"),
                  limit: int = typer.Option(100, min=1, max=10_000)) -> None:
    """Orders to fulfil, newest first (coupon codes are the members' and are left out), as JSON."""
    from sqlalchemy import select

    from .models import Reward, RewardOrder
    from .routes.rewards import order_info

    def orders(session, gw):
        query = select(RewardOrder, Reward).join(Reward, Reward.id == RewardOrder.reward_id).order_by(RewardOrder.id.desc()).limit(limit)
        if status is not None:
            query = query.where(RewardOrder.status == status)
        return [order_info(gw, row, reward, None) for row, reward in session.execute(query)]

    _echo(_operate(orders))


@reward_app.command("fulfil")
def reward_fulfil(order_ref: str = typer.Argument(...), status: str = typer.Argument(..., help="shipped | delivered | cancelled")) -> None:
    """Move an order on, or cancel it (its points go back to the member, its item back to stock)."""
    from .services import rewards

    if status not in ("shipped", "delivered", "cancelled"):
        raise typer.BadParameter("status is shipped, delivered or cancelled")
    out = _operate(lambda session, gw: rewards.change_status(session, gw, "cli", order_ref, status, gw.now()).order.status)
    console.print(f"order {order_ref} is {out}")


cause_app = typer.Typer(pretty_exceptions_show_locals=False, no_args_is_help=True,
                        help="Causes members may donate points to: define, list (each change versioned and audited).")
app.add_typer(cause_app, name="cause")


@cause_app.command("define")
def cause_define(code: str = typer.Argument(..., help="lowercase letters, digits, dashes"), name: str = typer.Option(...),
                 description: str = typer.Option(""), active: bool = typer.Option(True, "--active/--inactive")) -> None:
    """List a cause for donations, or change it as a new version."""
    from .routes.gifts import cause_info
    from .schemas import CauseDefinition, RewardCode
    from .services import gifts

    def define(session, gw):
        from pydantic import TypeAdapter

        TypeAdapter(RewardCode).validate_python(code)
        body = CauseDefinition.model_validate({"name": name, "description": description, "active": active})
        return cause_info(gifts.define_cause(session, "cli", code, body.name, body.description, body.active, gw.now()), 0).model_dump()

    _echo(_operate(define))


@cause_app.command("list")
def cause_list() -> None:
    """Every cause with the points donated to it, as JSON."""
    from .routes.gifts import cause_info
    from .services import gifts

    _echo(_operate(lambda session, gw: [cause_info(c, points).model_dump() for c, points in gifts.causes(session, include_inactive=True)]))
