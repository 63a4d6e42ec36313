"""`alliance member ...`: what a member's app does. The wallet key is made and kept on the member's
device (an encrypted keystore); the brands only ever see its address and its signatures."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import typer
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from rich.console import Console

from contracts.client import Redemption


class GatewayRefused(Exception):
    """A gateway answered with an error; `detail` is its reason."""

    def __init__(self, status: int, body: dict[str, Any]):
        self.status, self.body = status, body
        super().__init__(f"{status} {body.get('error', '')}: {body.get('detail', body)}")


class MemberClient:
    """A member's session with one brand's gateway over its HTTP API."""

    def __init__(self, http: httpx.Client, token: str | None = None):
        self.http, self.token = http, token

    def _call(self, method: str, path: str, **kwargs) -> dict[str, Any]:
        headers = kwargs.pop("headers", {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        response = self.http.request(method, path, headers=headers, **kwargs)
        body = response.json() if response.content else {}
        if response.status_code >= 400:
            raise GatewayRefused(response.status_code, body if isinstance(body, dict) else {"detail": body})
        return body

    def brand(self) -> dict[str, Any]:
        return self._call("GET", "/v1/brand")

    def enrol(self, identifiers: dict[str, str], name: str, passphrase: str, birthday: str | None = None, channel: str = "app") -> dict:
        body = self._call("POST", "/v1/members", json={"identifiers": identifiers, "name": name, "passphrase": passphrase,
                                                        "birthday": birthday, "channel": channel})
        self.token = body["token"]
        return body

    def login(self, kind: str, value: str, passphrase: str) -> dict:
        body = self._call("POST", "/v1/sessions", json={"kind": kind, "value": value, "passphrase": passphrase})
        self.token = body["token"]
        return body

    def consent(self, purpose: str, granted: bool = True) -> dict:
        return self._call("PUT", f"/v1/me/consents/{purpose}", json={"granted": granted, "channel": "cli"})

    def link_wallet(self, wallet: LocalAccount) -> str:
        challenge = self._call("POST", "/v1/me/wallet/challenges", json={"address": wallet.address})
        signature = wallet.sign_message(encode_defunct(text=challenge["message"])).signature
        return self._call("POST", "/v1/me/wallet", json={"challenge_id": challenge["challenge_id"],
                                                          "signature": "0x" + bytes(signature).hex()})["wallet_address"]

    def exchange(self, ap_amount: int, idempotency_key: str | None = None) -> dict:
        return self._call("POST", "/v1/me/exchanges", json={"ap_amount": ap_amount},
                          headers={"Idempotency-Key": idempotency_key or str(uuid.uuid4())})

    def authorise(self, wallet: LocalAccount, ap_amount: int, valid_for_s: int = 3600, reserved: list[int] = ()) -> Redemption:
        """Sign a redemption of `ap_amount` AP at this client's brand (the member's wallet does this,
        offline once it knows the brand's address, chain and a free nonce)."""
        info = self._call("GET", "/v1/redemption-nonce", params={"owner": wallet.address, "reserved": list(reserved)})
        auth = Redemption(wallet.address, info["brand"], ap_amount, info["nonce"], int(time.time()) + valid_for_s)
        return auth.signed_by(wallet, info["chain_id"], info["points_contract"])

    def redeem(self, auth: Redemption) -> dict:
        return self._call("POST", "/v1/me/redemptions", json=auth.to_dict())

    def balance(self) -> dict:
        return self._call("GET", "/v1/me/balance")

    def export(self) -> dict:
        return self._call("GET", "/v1/me/export")

    def erase(self) -> dict:
        return self._call("POST", "/v1/me/erasure")


class MemberHome:
    """The member's device: an encrypted wallet keystore and one session per brand."""

    def __init__(self, root: Path):
        self.root = root
        self.keystore = root / "wallet.json"
        self.sessions_file = root / "sessions.json"

    def create_wallet(self, passphrase: str) -> str:
        if self.keystore.exists():
            raise FileExistsError(f"a wallet already exists at {self.keystore}")
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        account = Account.create()
        fd = os.open(self.keystore, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(Account.encrypt(account.key, passphrase), fh)
        return account.address

    def wallet(self, passphrase: str) -> LocalAccount:
        if not self.keystore.exists():
            raise FileNotFoundError(f"no wallet at {self.keystore}: run `alliance member wallet` first")
        try:
            return Account.from_key(Account.decrypt(json.loads(self.keystore.read_text()), passphrase))
        except ValueError:
            raise PermissionError("wrong wallet passphrase") from None

    def sessions(self) -> dict[str, dict]:
        return json.loads(self.sessions_file.read_text()) if self.sessions_file.exists() else {}

    def save_session(self, brand_url: str, member_ref: str, token: str) -> None:
        sessions = self.sessions() | {brand_url: {"member_ref": member_ref, "token": token}}
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.sessions_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(sessions, fh, indent=2)

    def client(self, brand_url: str) -> MemberClient:
        session = self.sessions().get(brand_url)
        if session is None:
            raise KeyError(f"not enrolled at {brand_url}: run `alliance member enrol --brand {brand_url}` or `login`")
        return MemberClient(httpx.Client(base_url=brand_url, timeout=60), session["token"])


# ---------------------------------------------------------------- the command line

app = typer.Typer(help="A member's wallet and accounts across the alliance's brands.", no_args_is_help=True)
console = Console()
HOME = typer.Option(Path.home() / ".alliance-member", "--home", envvar="ALLIANCE_MEMBER_HOME", help="where the wallet and sessions live")
BRAND = typer.Option(..., "--brand", help="the brand gateway's URL, e.g. http://127.0.0.1:8001")
WALLET_PASS = typer.Option(..., prompt=True, hide_input=True, envvar="ALLIANCE_WALLET_PASSPHRASE", help="wallet keystore passphrase")


def _run(fn):
    """Print a gateway's refusal or a local problem as one clear line, never a traceback."""
    try:
        result = fn()
    except GatewayRefused as exc:
        console.print(f"[red]refused[/red] {exc}")
        raise typer.Exit(1) from None
    except httpx.HTTPError as exc:
        console.print(f"[red]cannot reach the gateway[/red]: {exc}")
        raise typer.Exit(1) from None
    except (KeyError, FileNotFoundError, FileExistsError, PermissionError) as exc:
        console.print(f"[red]{exc.args[0] if exc.args else exc}[/red]")
        raise typer.Exit(1) from None
    if result is not None:
        console.print_json(json.dumps(result, default=str))


@app.command()
def wallet(home: Path = HOME, passphrase: str = typer.Option(..., prompt=True, hide_input=True, confirmation_prompt=True,
                                                              envvar="ALLIANCE_WALLET_PASSPHRASE")) -> None:
    """Create the wallet key on this device (an encrypted keystore)."""
    _run(lambda: {"address": MemberHome(home).create_wallet(passphrase), "keystore": str(MemberHome(home).keystore)})


@app.command()
def enrol(brand: str = BRAND, name: str = typer.Option(...), phone: str = typer.Option(None), email: str = typer.Option(None),
          birthday: str = typer.Option(None, help="YYYY-MM-DD"), home: Path = HOME,
          passphrase: str = typer.Option(..., prompt=True, hide_input=True, envvar="ALLIANCE_MEMBER_PASSPHRASE")) -> None:
    """Join a brand's programme (only the consent the programme needs is given)."""
    identifiers = {k: v for k, v in {"phone": phone, "email": email}.items() if v}

    def go():
        body = MemberClient(httpx.Client(base_url=brand, timeout=60)).enrol(identifiers, name, passphrase, birthday, "cli")
        MemberHome(home).save_session(brand, body["member_ref"], body["token"])
        return {k: v for k, v in body.items() if k != "token"}

    _run(go)


@app.command()
def login(brand: str = BRAND, phone: str = typer.Option(None), email: str = typer.Option(None), home: Path = HOME,
          passphrase: str = typer.Option(..., prompt=True, hide_input=True, envvar="ALLIANCE_MEMBER_PASSPHRASE")) -> None:
    kind, value = ("phone", phone) if phone else ("email", email)

    def go():
        body = MemberClient(httpx.Client(base_url=brand, timeout=60)).login(kind, value, passphrase)
        MemberHome(home).save_session(brand, body["member_ref"], body["token"])
        return {"member_ref": body["member_ref"]}

    _run(go)


@app.command()
def consent(purpose: str, brand: str = BRAND, withdraw: bool = typer.Option(False, "--withdraw"), home: Path = HOME) -> None:
    """Grant (or --withdraw) one purpose; the signed receipt is kept in the home directory."""

    def go():
        body = MemberHome(home).client(brand).consent(purpose, not withdraw)
        path = home / "receipts" / f"{body['receipt']['receipt']['receipt_id']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(body["receipt"], indent=2))
        return body | {"saved": str(path)}

    _run(go)


@app.command()
def link(brand: str = BRAND, home: Path = HOME, passphrase: str = WALLET_PASS) -> None:
    """Link the wallet to the brand account by signing its challenge (needs alliance_exchange consent)."""
    _run(lambda: {"wallet_address": MemberHome(home).client(brand).link_wallet(MemberHome(home).wallet(passphrase))})


@app.command()
def exchange(ap_amount: int = typer.Argument(..., min=1), brand: str = BRAND, home: Path = HOME) -> None:
    """Exchange brand points into alliance points minted to the linked wallet."""
    _run(lambda: MemberHome(home).client(brand).exchange(ap_amount))


@app.command()
def redeem(ap_amount: int = typer.Argument(..., min=1), at: str = typer.Option(..., "--at", help="URL of the brand to redeem at"),
           home: Path = HOME, passphrase: str = WALLET_PASS) -> None:
    """Sign a redemption of AP for the brand at --at and submit it there; it pays the gas."""

    def go():
        client = MemberHome(home).client(at)
        return client.redeem(client.authorise(MemberHome(home).wallet(passphrase), ap_amount))

    _run(go)


@app.command()
def balance(brand: str = BRAND, home: Path = HOME) -> None:
    _run(lambda: MemberHome(home).client(brand).balance())


@app.command()
def export(brand: str = BRAND, home: Path = HOME) -> None:
    """A copy of everything the brand holds about you."""
    _run(lambda: MemberHome(home).client(brand).export())


@app.command()
def erase(brand: str = BRAND, home: Path = HOME, yes: bool = typer.Option(False, "--yes", help="confirm")) -> None:
    """Erase your personal data at the brand (crypto-shredding)."""
    if not yes:
        console.print("this cannot be undone: add --yes")
        raise typer.Exit(1)
    _run(lambda: MemberHome(home).client(brand).erase())
