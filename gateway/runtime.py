"""Everything a gateway holds at run time: settings, database, key material and the chain."""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Callable

from eth_account import Account
from eth_account.signers.local import LocalAccount
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from contracts.chain import Chain, Transactor
from contracts.client import Alliance
from privacy.keys import (
    KEK_FILE,
    PEPPER_FILE,
    SIGNING_KEY_FILE,
    SigningKey,
    generate_key_files,
    load_kek,
    load_pepper,
    load_signing_key,
    write_private,
)
from privacy.pseudonyms import Pseudonymiser
from privacy.keystore import KeyStore, LocalKeyStore, destroy_file
from privacy.vault import Vault

from .db import Base, make_engine, make_sessionmaker
from .notify import Notifier, make_notifier
from .settings import GatewaySettings

CHAIN_KEY_FILE = "chain.key"
COUPON_KEY_FILE = "coupon.key"  # coupon codes are HMACs under it (services/rewards.py)
WEBHOOK_KEY_FILE = "webhook.key"  # webhook subscriptions' secrets are HMACs under it (services/webhooks.py)
_PEPPER_VERSION = re.compile(r"^pepper\.v(\d+)\.key$")


def ensure_key_files(keys_dir: Path) -> None:
    """Create the brand's keys on first start (signing key, KEK, pepper, chain account, coupon and webhook keys)."""
    if not (keys_dir / SIGNING_KEY_FILE).exists():
        generate_key_files(keys_dir)
    for name in (COUPON_KEY_FILE, WEBHOOK_KEY_FILE):
        if not (keys_dir / name).exists():
            write_private(keys_dir / name, secrets.token_hex(32).encode())  # text, like every key file
    chain_key = keys_dir / CHAIN_KEY_FILE
    if not chain_key.exists():
        fd = os.open(chain_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("0x" + secrets.token_hex(32) + "\n")


def open_keystore(keys_dir: Path, keystore_dir: Path | None = None) -> LocalKeyStore:
    """The brand's data-key store (in `keystore_dir`, by default the keys directory). A KEK of an
    earlier layout (kek.key) becomes the store's first KEK and its file is destroyed, so a rotation
    leaves no copy of it behind."""
    legacy = keys_dir / KEK_FILE
    store = LocalKeyStore(keystore_dir or keys_dir, load_kek(legacy) if legacy.exists() else None)
    if legacy.exists() and load_kek(legacy).kek_id in store.keks()[0]:
        destroy_file(legacy)
    return store


def load_peppers(keys_dir: Path) -> dict[int, bytes]:
    """pepper.key is version 1; a rotation adds pepper.v2.key, pepper.v3.key, ... (newest is current);
    a retired one is gone (services/peppers.py)."""
    peppers = {1: load_pepper(keys_dir / PEPPER_FILE)} if (keys_dir / PEPPER_FILE).exists() else {}
    for path in keys_dir.glob("pepper.v*.key"):
        match = _PEPPER_VERSION.match(path.name)
        if match:
            peppers[int(match.group(1))] = load_pepper(path)
    return peppers


@dataclass
class Gateway:
    settings: GatewaySettings
    engine: Engine
    sessions: sessionmaker[Session]
    pseudonymiser: Pseudonymiser
    vault: Vault
    keystore: KeyStore  # the members' data keys, apart from this database (privacy/keystore.py)
    signing_key: SigningKey
    chain_account: LocalAccount
    alliance: Alliance | None  # None when the gateway runs without a chain (brand-local points only)
    notifier: Notifier  # one-time codes to members (gateway/notify.py)
    coupon_key: bytes = field(repr=False)  # services/rewards.py: coupon codes
    webhook_key: bytes = field(repr=False)  # services/webhooks.py: subscriptions' secrets
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # Test hook: called with the refs of the rows about to be broadcast (their transactions are
    # stored), to prove that a crash there loses and doubles nothing.
    before_broadcast: Callable[[list[str]], None] | None = None
    chain_sender: Any = None  # services/outbox.Sender, made on first use
    rate_reads: Any = None  # services/alliance: a groupcommit.FreshRead of this brand's rate, made on first use

    @property
    def brand_address(self) -> str:
        return self.chain_account.address

    def now(self) -> datetime:
        return self.clock()

    def transactor(self) -> Transactor:
        if self.alliance is None:
            raise RuntimeError("this gateway has no chain configured")
        return self.alliance.transactor(self.chain_account)


def build_gateway(settings: GatewaySettings, chain: Chain | None = None, create_schema: bool = True) -> Gateway:
    """Assemble a gateway. ``chain`` lets several gateways share one embedded chain in one process;
    without it the gateway connects to ``settings.chain_url`` when a manifest is configured."""
    from contracts.chain import connect
    from contracts.manifest import Manifest

    keys_dir = settings.keys_dir
    ensure_key_files(keys_dir)
    peppers = load_peppers(keys_dir)
    keystore = open_keystore(keys_dir, settings.keystore_dir)
    if settings.database_url.startswith("sqlite:///"):
        Path(settings.database_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.database_url)
    if create_schema:
        from .migrations import upgrade_to_head

        upgrade_to_head(engine, keystore)
    alliance = None
    if settings.manifest is not None:
        chain = chain or connect(settings.chain_url)
        alliance = Alliance(chain, Manifest.load(settings.manifest))
    return Gateway(
        settings=settings,
        engine=engine,
        sessions=make_sessionmaker(engine),
        pseudonymiser=Pseudonymiser(peppers, max(peppers), default_region=settings.default_region),
        vault=Vault(*keystore.keks(), reload=keystore.keks),
        keystore=keystore,
        signing_key=load_signing_key(keys_dir / SIGNING_KEY_FILE),
        chain_account=Account.from_key((keys_dir / CHAIN_KEY_FILE).read_text().strip()),
        alliance=alliance,
        notifier=make_notifier(settings),
        coupon_key=bytes.fromhex((keys_dir / COUPON_KEY_FILE).read_text().strip()),
        webhook_key=bytes.fromhex((keys_dir / WEBHOOK_KEY_FILE).read_text().strip()),
    )


__all__ = ["Base", "Gateway", "build_gateway", "ensure_key_files"]
