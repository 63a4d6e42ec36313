"""A member's side of the alliance: the client a member's app (or the `alliance member` command)
uses to talk to brand gateways, and the device's store. The wallet key is made and kept on the
member's device (an encrypted keystore); the brands only ever see its address and its signatures."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount

from contracts.client import Redemption


class GatewayRefused(Exception):
    """A gateway answered with an error: an RFC 9457 problem, whose `code` says what kind and `detail` why."""

    def __init__(self, status: int, body: dict[str, Any]):
        self.status, self.body = status, body
        self.code = body.get("code", "")
        super().__init__(f"{status} {self.code}: {body.get('detail', body)}")


class MemberClient:
    """A member's session with one brand's gateway over its HTTP API."""

    def __init__(self, http: httpx.Client, token: str | None = None):
        self.http, self.token = http, token
        self.member_ref: str | None = None  # known once enrolled or logged in here

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
        """Start enrolling: the gateway sends a one-time code to each identifier. Returns the
        enrolment (`enrolment_id`, `expires_at`, `sent_to`) to `verify` with the codes."""
        body = {"identifiers": identifiers, "name": name, "passphrase": passphrase, "channel": channel}
        return self._call("POST", "/v1/enrolments", json=body | ({"birthday": birthday} if birthday else {}))

    def verify(self, enrolment_id: str, codes: dict[str, str]) -> dict:
        """Prove the identifiers with their codes: the account exists from now on, and this client is logged in."""
        body = self._call("POST", f"/v1/enrolments/{enrolment_id}/verification", json={"codes": codes})
        self.token, self.member_ref = body["token"], body["member_ref"]
        return body

    def login(self, kind: str, value: str, passphrase: str) -> dict:
        body = self._call("POST", "/v1/sessions", json={"kind": kind, "value": value, "passphrase": passphrase})
        self.token, self.member_ref = body["token"], body["member_ref"]
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

    def authorise(self, wallet: LocalAccount, ap_amount: int, valid_for_s: int = 3600,
                  signed: "SignedNonces | None" = None) -> Redemption:
        """Sign a redemption of `ap_amount` AP at this client's brand (the member's wallet does this,
        offline once it knows the brand's address, chain and a free nonce). With ``signed``, the
        wallet's record of what it has signed, no nonce it ever signed is signed again (an expired
        authorisation may still have been submitted), and the new one is recorded before it is used."""
        info = self._call("GET", "/v1/redemption-nonce", params={"owner": wallet.address})
        if signed is not None:
            key = SignedNonces.key(info["chain_id"], info["points_contract"], info["brand"], wallet.address)
            while info["nonce"] in signed.of(key):  # the lowest unused on chain; skip the ones signed here
                ahead = sorted(n for n in signed.of(key) if n >= info["nonce"])[:256]
                info = self._call("GET", "/v1/redemption-nonce", params={"owner": wallet.address, "reserved": ahead})
            signed.add(key, info["nonce"])
        auth = Redemption(wallet.address, info["brand"], ap_amount, info["nonce"], int(time.time()) + valid_for_s)
        return auth.signed_by(wallet, info["chain_id"], info["points_contract"])

    def redeem(self, auth: Redemption) -> dict:
        """Submit a signed authorisation; the wallet must be linked to this account at this brand."""
        return self._call("POST", "/v1/me/redemptions", json=auth.to_dict())

    def linked_wallet(self) -> str | None:
        return self._call("GET", "/v1/me")["wallet_address"]

    def balance(self) -> dict:
        return self._call("GET", "/v1/me/balance")

    def export(self) -> dict:
        return self._call("GET", "/v1/me/export")

    def erase(self) -> dict:
        return self._call("POST", "/v1/me/erasure")


class SignedNonces:
    """Every redemption nonce a wallet has signed, per chain, points contract, brand and owner, kept
    in a file on the member's device and written (and synced) before a signature leaves it."""

    def __init__(self, path: Path):
        self.path = path

    @staticmethod
    def key(chain_id: int, points_contract: str, brand: str, owner: str) -> str:
        return f"{chain_id}:{points_contract.lower()}:{brand.lower()}:{owner.lower()}"

    def _load(self) -> dict[str, list[int]]:
        return json.loads(self.path.read_text()) if self.path.exists() else {}

    def of(self, key: str) -> set[int]:
        return set(self._load().get(key, ()))

    def add(self, key: str, nonce: int) -> None:
        data = self._load()
        data[key] = sorted(set(data.get(key, ())) | {nonce})
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)


class MemberHome:
    """The member's device: an encrypted wallet keystore and one session per brand."""

    def __init__(self, root: Path):
        self.root = root
        self.keystore = root / "wallet.json"
        self.sessions_file = root / "sessions.json"
        self.signed = SignedNonces(root / "signed-nonces.json")

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
        self._save(self.sessions() | {brand_url: {"member_ref": member_ref, "token": token}})

    def save_pending(self, brand_url: str, enrolment_id: str) -> None:
        """An enrolment started at a brand, waiting for its codes."""
        self._save(self.sessions() | {brand_url: {"enrolment_id": enrolment_id}})

    def pending(self, brand_url: str) -> str:
        enrolment_id = self.sessions().get(brand_url, {}).get("enrolment_id")
        if enrolment_id is None:
            raise KeyError(f"no enrolment waiting at {brand_url}: run `alliance member enrol --brand {brand_url}` first")
        return enrolment_id

    def _save(self, sessions: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.sessions_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(sessions, fh, indent=2)

    def client(self, brand_url: str) -> MemberClient:
        session = self.sessions().get(brand_url)
        if session is None or "token" not in session:
            raise KeyError(f"not enrolled at {brand_url}: run `alliance member enrol --brand {brand_url}` or `login`")
        return MemberClient(httpx.Client(base_url=brand_url, timeout=60), session["token"])
