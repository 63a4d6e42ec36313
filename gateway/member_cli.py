"""`alliance member ...`: what a member's app does, from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

def _home(root: Path):
    from .member import MemberHome

    return MemberHome(root)


def _client(brand_url: str):
    import httpx

    from .member import MemberClient

    return MemberClient(httpx.Client(base_url=brand_url, timeout=60))


app = typer.Typer(pretty_exceptions_show_locals=False, help="A member's wallet and accounts across the alliance's brands.", no_args_is_help=True)
console = Console()
HOME = typer.Option(Path.home() / ".alliance-member", "--home", envvar="ALLIANCE_MEMBER_HOME", help="where the wallet and sessions live")
BRAND = typer.Option(..., "--brand", help="the brand gateway's URL, e.g. http://127.0.0.1:8001")
WALLET_PASS = typer.Option(..., prompt=True, hide_input=True, envvar="ALLIANCE_WALLET_PASSPHRASE", help="wallet keystore passphrase")


def _run(fn):
    """Print a gateway's refusal or a local problem as one clear line, never a traceback."""
    import httpx

    from .member import GatewayRefused

    try:
        result = fn()
    except GatewayRefused as exc:
        console.print(f"[red]refused[/red] {exc}")
        raise typer.Exit(1) from None
    except httpx.HTTPError as exc:
        console.print(f"[red]cannot reach the gateway[/red]: {exc}")
        raise typer.Exit(1) from None
    except (KeyError, FileNotFoundError, FileExistsError, PermissionError, ValueError) as exc:
        console.print(f"[red]{exc.args[0] if exc.args else exc}[/red]")
        raise typer.Exit(1) from None
    if result is not None:
        console.print_json(json.dumps(result, default=str))


@app.command()
def wallet(home: Path = HOME, passphrase: str = typer.Option(..., prompt=True, hide_input=True, confirmation_prompt=True,
                                                              envvar="ALLIANCE_WALLET_PASSPHRASE")) -> None:
    """Create the wallet on this device: an HD seed (BIP-39/BIP-44) in an encrypted keystore; prints its first address."""
    _run(lambda: {"address": _home(home).create_wallet(passphrase), "keystore": str(_home(home).keystore)})


@app.command("import-wallet")
def import_wallet(keystore: Path = typer.Argument(..., exists=True, dir_okay=False, help="a wallet keystore (the web wallet's export)"),
                  home: Path = HOME, passphrase: str = WALLET_PASS) -> None:
    """Use a wallet made in the web wallet on this device (its keystore file, exported there). The
    other way round, the web wallet imports this device's keystore (HOME/wallet.json)."""
    _run(lambda: {"address": _home(home).import_wallet(keystore, passphrase), "keystore": str(_home(home).keystore)})


@app.command()
def enrol(brand: str = BRAND, name: str = typer.Option(...), phone: str = typer.Option(None), email: str = typer.Option(None),
          birthday: str = typer.Option(None, help="YYYY-MM-DD"), home: Path = HOME,
          passphrase: str = typer.Option(..., prompt=True, hide_input=True, envvar="ALLIANCE_MEMBER_PASSPHRASE")) -> None:
    """Join a brand's programme: a one-time code goes to your phone and e-mail; finish with `verify`.
    (Only the consent the programme needs is given.)"""
    identifiers = {k: v for k, v in {"phone": phone, "email": email}.items() if v}

    def go():
        started = _client(brand).enrol(identifiers, name, passphrase, birthday, "cli")
        _home(home).save_pending(brand, started["enrolment_id"])
        return started | {"next": f"alliance member verify --brand {brand} " + " ".join(f"--code {k}=CODE" for k in started["sent_to"])}

    _run(go)


@app.command()
def verify(brand: str = BRAND, code: list[str] = typer.Option(..., help="KIND=CODE for each code received, e.g. phone=123456"),
           home: Path = HOME) -> None:
    """Finish enrolling with the codes sent to your identifiers: the account is created and you are logged in."""
    codes = dict(c.partition("=")[::2] for c in code)

    def go():
        enrolment_id = _home(home).pending(brand)
        client = _client(brand)
        body = client.verify(enrolment_id, codes)
        _home(home).save_session(brand, body["member_ref"], body["token"])
        return {k: v for k, v in body.items() if k != "token"}

    _run(go)


@app.command()
def login(brand: str = BRAND, phone: str = typer.Option(None), email: str = typer.Option(None), home: Path = HOME,
          passphrase: str = typer.Option(..., prompt=True, hide_input=True, envvar="ALLIANCE_MEMBER_PASSPHRASE")) -> None:
    kind, value = ("phone", phone) if phone else ("email", email)

    def go():
        body = _client(brand).login(kind, value, passphrase)
        _home(home).save_session(brand, body["member_ref"], body["token"])
        return {"member_ref": body["member_ref"]}

    _run(go)


@app.command()
def consent(purpose: str, brand: str = BRAND, withdraw: bool = typer.Option(False, "--withdraw"), home: Path = HOME) -> None:
    """Grant (or --withdraw) one purpose; the signed receipt is kept in the home directory."""

    from privacy.receipts import load_receipt

    def go():
        body = _home(home).client(brand).consent(purpose, not withdraw)
        path = home / "receipts" / f"{load_receipt(body['receipt']).receipt.receipt_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(body["receipt"], indent=2))
        return body | {"saved": str(path)}

    _run(go)


@app.command()
def recovery(home: Path = HOME, passphrase: str = WALLET_PASS) -> None:
    """Print the wallet's 24-word recovery phrase (it restores every address; keep it offline)."""
    _run(lambda: {"recovery_phrase": _home(home).recovery_phrase(passphrase)})


@app.command()
def link(brand: str = BRAND, home: Path = HOME, passphrase: str = WALLET_PASS) -> None:
    """Link the wallet to the brand account by signing its challenge (needs alliance_exchange consent)."""
    _run(lambda: {"wallet_address": _home(home).client(brand).link_wallet(_home(home).wallet(passphrase))})


@app.command()
def exchange(ap_amount: int = typer.Argument(..., min=1), brand: str = BRAND, home: Path = HOME, passphrase: str = WALLET_PASS,
             same_address: bool = typer.Option(False, "--same-address", help="mint to the linked address instead of a fresh one")) -> None:
    """Exchange brand points into alliance points, minted to a fresh address of the wallet (linked first)."""

    def go():
        member_home = _home(home)
        to = None if same_address else member_home.fresh_address(passphrase, f"exchange at {brand}")
        return member_home.client(brand).exchange(ap_amount, to=to)

    _run(go)


@app.command()
def redeem(ap_amount: int = typer.Argument(..., min=1), at: str = typer.Option(..., "--at", help="URL of the brand to redeem at"),
           home: Path = HOME, passphrase: str = WALLET_PASS) -> None:
    """Sign a redemption of AP for the brand at --at and submit it there; it pays the gas."""

    def go():
        member_home = _home(home)
        done = member_home.client(at).redeem_from(member_home.accounts(passphrase), ap_amount, signed=member_home.signed)
        return done[0] if len(done) == 1 else {"redemptions": done}

    _run(go)


@app.command()
def balance(brand: str = BRAND, home: Path = HOME) -> None:
    _run(lambda: _home(home).client(brand).balance())


@app.command()
def export(brand: str = BRAND, home: Path = HOME) -> None:
    """A copy of everything the brand holds about you."""
    _run(lambda: _home(home).client(brand).export())


@app.command()
def erase(brand: str = BRAND, home: Path = HOME, yes: bool = typer.Option(False, "--yes", help="confirm")) -> None:
    """Erase your personal data at the brand (crypto-shredding)."""
    if not yes:
        console.print("this cannot be undone: add --yes")
        raise typer.Exit(1)
    _run(lambda: _home(home).client(brand).erase())
