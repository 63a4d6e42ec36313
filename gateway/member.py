"""A member's side of the alliance: the client a member's app (or the `alliance member` command)
uses to talk to brand gateways, and the device's store. The wallet is made and kept on the member's
device (an encrypted keystore); the brands only ever see its addresses and its signatures.

The wallet is hierarchical deterministic (BIP-32/BIP-44 over a BIP-39 seed): every exchange mints
to a fresh address by default, so the public chain alone does not tie a member's exchanges
together. What stays linkable: the brand that exchanges sees the address it mints to, and the brand
where a member redeems sees (and links to the account there) each address redeemed from."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account
from eth_account.hdaccount.mnemonic import Mnemonic
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_account.types import Language

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
        try:
            response = self.http.request(method, path, headers=headers, **kwargs)
        except (httpx.RemoteProtocolError, httpx.ReadError):
            # A kept-alive connection the gateway closed just as the request went out, so no answer came:
            # a read is safe to send again (RFC 9110, 9.2.2), once, on a fresh connection; a write is not.
            if method != "GET":
                raise
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

    def exchange(self, ap_amount: int, idempotency_key: str | None = None, to: LocalAccount | None = None) -> dict:
        """Exchange brand points into AP minted to the linked wallet; with `to`, link that address
        first (a fresh address per exchange keeps the member's exchanges apart on chain)."""
        if to is not None and self.linked_wallet() != to.address:
            self.link_wallet(to)
        return self._call("POST", "/v1/me/exchanges", json={"ap_amount": ap_amount},
                          headers={"Idempotency-Key": idempotency_key or str(uuid.uuid4())})

    def redeem_from(self, accounts: list[LocalAccount], ap_amount: int, signed: "SignedNonces | None" = None) -> list[dict]:
        """Redeem `ap_amount` AP here from the wallet's addresses, largest holding first: each address
        redeemed from is linked here first (this brand then knows those addresses are one member's)."""
        holdings = []
        for account in accounts:
            balance = self._call("GET", "/v1/redemption-nonce", params={"owner": account.address})["balance"]
            if balance > 0:
                holdings.append((balance, account))
        if sum(b for b, _ in holdings) < ap_amount:
            raise ValueError(f"the wallet holds {sum(b for b, _ in holdings)} AP, fewer than {ap_amount}")
        done, left = [], ap_amount
        for balance, account in sorted(holdings, key=lambda h: -h[0]):
            if left == 0:
                break
            amount = min(balance, left)
            if self.linked_wallet() != account.address:
                self.link_wallet(account)  # the brand credits only the member who controls the wallet
            done.append(self.redeem(self.authorise(account, amount, signed=signed)))
            left -= amount
        return done

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

    def rewards(self) -> list[dict]:
        """The brand's rewards on offer, each saying whether this member may order it now."""
        return self._call("GET", "/v1/rewards")

    def order(self, reward: str, pay_with_ap: Redemption | None = None, idempotency_key: str | None = None) -> dict:
        """Order a reward with this brand's points, or with AP by a signed authorisation for this brand
        (granted once the redemption is final on chain)."""
        body = {"reward": reward} | ({"pay_with_ap": pay_with_ap.to_dict()} if pay_with_ap else {})
        return self._call("POST", "/v1/me/reward-orders", json=body, headers={"Idempotency-Key": idempotency_key or uuid.uuid4().hex})

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


HD_PATH = "m/44'/60'/0'/0/{}"  # BIP-44, Ethereum's coin type: address i of the wallet
SEED_KIND = "bip39-entropy"  # what an HD wallet's keystore encrypts (a wallet made before holds one key)


class MemberHome:
    """The member's device: an encrypted wallet keystore, the addresses used, and one session per brand."""

    def __init__(self, root: Path):
        self.root = root
        self.keystore = root / "wallet.json"
        self.addresses_file = root / "addresses.json"
        self.sessions_file = root / "sessions.json"
        self.signed = SignedNonces(root / "signed-nonces.json")

    def create_wallet(self, passphrase: str) -> str:
        """A new HD wallet: 32 bytes of BIP-39 entropy in a standard (Web3 Secret Storage) keystore,
        marked as a seed. Returns its first address."""
        if self.keystore.exists():
            raise FileExistsError(f"a wallet already exists at {self.keystore}")
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        keystore = Account.encrypt(os.urandom(32), passphrase) | {"x-alliance-kind": SEED_KIND}
        keystore.pop("address", None)  # the entropy is no key: the address the container would name means nothing
        fd = os.open(self.keystore, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(keystore, fh)
        return self.wallet(passphrase).address

    def import_wallet(self, keystore_file: Path, passphrase: str) -> str:
        """Take a wallet keystore made elsewhere (the web wallet's export): checked to open with the
        passphrase and to hold a seed, then kept as this device's wallet. Returns its first address."""
        if self.keystore.exists():
            raise FileExistsError(f"a wallet already exists at {self.keystore}")
        try:
            keystore = json.loads(keystore_file.read_text())
            secret = bytes(Account.decrypt(keystore, passphrase))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PermissionError(f"{keystore_file} does not open with this passphrase ({type(exc).__name__})") from None
        if keystore.get("x-alliance-kind") != SEED_KIND or len(secret) != 32:
            raise ValueError(f"{keystore_file} holds no wallet seed")
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.keystore, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(keystore, fh)
        return self.wallet(passphrase).address

    def recovery_phrase(self, passphrase: str) -> str:
        """The 24 words that restore every address of the wallet."""
        keystore, secret = self._open(passphrase)
        if keystore.get("x-alliance-kind") != SEED_KIND:
            raise ValueError("this wallet holds a single key, not a seed: it has no recovery phrase")
        return Mnemonic(Language.ENGLISH).to_mnemonic(secret)

    def _open(self, passphrase: str) -> tuple[dict, bytes]:
        if not self.keystore.exists():
            raise FileNotFoundError(f"no wallet at {self.keystore}: run `alliance member wallet` first")
        keystore = json.loads(self.keystore.read_text())
        try:
            return keystore, bytes(Account.decrypt(keystore, passphrase))
        except ValueError:
            raise PermissionError("wrong wallet passphrase") from None

    def wallet(self, passphrase: str, index: int = 0) -> LocalAccount:
        """Address `index` of the wallet (a single-key wallet has only the one)."""
        keystore, secret = self._open(passphrase)
        if keystore.get("x-alliance-kind") != SEED_KIND:
            return Account.from_key(secret)
        Account.enable_unaudited_hdwallet_features()
        return Account.from_mnemonic(Mnemonic(Language.ENGLISH).to_mnemonic(secret), account_path=HD_PATH.format(index))

    def addresses(self) -> list[dict[str, Any]]:
        """The wallet's addresses used so far: index, address, what for."""
        return json.loads(self.addresses_file.read_text()) if self.addresses_file.exists() else []

    def fresh_address(self, passphrase: str, used_for: str) -> LocalAccount:
        """The wallet's next unused address, recorded as used for `used_for` (a single-key wallet
        has no other address: it answers its one)."""
        used = self.addresses()
        index = 1 + max((a["index"] for a in used), default=0)  # address 0 is the one `link` uses
        account = self.wallet(passphrase, index)
        if json.loads(self.keystore.read_text()).get("x-alliance-kind") == SEED_KIND:
            self._write(self.addresses_file, used + [{"index": index, "address": account.address, "used_for": used_for}])
        return account

    def accounts(self, passphrase: str) -> list[LocalAccount]:
        """Every address used so far, and address 0."""
        indices = sorted({0} | {a["index"] for a in self.addresses()})
        return list({acct.address: acct for acct in (self.wallet(passphrase, i) for i in indices)}.values())

    def _write(self, path: Path, data: Any) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2)

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
        self._write(self.sessions_file, sessions)

    def client(self, brand_url: str) -> MemberClient:
        session = self.sessions().get(brand_url)
        if session is None or "token" not in session:
            raise KeyError(f"not enrolled at {brand_url}: run `alliance member enrol --brand {brand_url}` or `login`")
        return MemberClient(httpx.Client(base_url=brand_url, timeout=60), session["token"])
