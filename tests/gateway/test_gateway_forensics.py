"""Erasure as a forensic examiner tests it: every file the gateway wrote (database, WAL, key store),
and a backup of them taken before the erasure, scanned for the erased member's wrapped data key and
tried with every key-encryption key the brand still holds. The key store lives apart from the
database; once the KEK has rotated, no copy anywhere decrypts."""

from __future__ import annotations

import base64
import json
import re
import shutil
from datetime import UTC, datetime, time
from pathlib import Path

import pytest
from eth_utils import to_checksum_address
from sqlalchemy import select

from gateway.models import Exchange, Member, Purchase
from gateway.services import datakeys
from privacy.errors import VaultError
from privacy.vault import Vault, WrappedKey
from settlement.reconcile import Entry, compare, erased_redemption_key, redemption_key

from harness import (authorise, balance, chain_rows, consent, db_balance, enrol, exchange, link_wallet, maintenance, new_wallet,
                     new_world, purchase, queue_exchange, reconciliation, start_local_brand, start_world_brand)

# A wrapped key (nonce, key, tag: 60 bytes) is 80 base64 characters and a data-key id 32 hex digits;
# a file packs values side by side, so a run may carry a few of a neighbour's characters (a UUID's
# last group: 12), but a much longer run (a hash, a JWS) is another value.
BASE64_RUN = re.compile(rb"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{80,100}(?![A-Za-z0-9+/])")
HEX_RUN = re.compile(rb"(?<![0-9a-f])[0-9a-f]{32,44}(?![0-9a-f])")
KEK_ID = re.compile(rb"kek-[0-9a-f]{16}")


def windows(runs, width: int) -> set[bytes]:
    """Every `width`-long stretch of every run: a file packs values side by side, so a run may carry
    a neighbour's characters at either end."""
    return {run[i:i + width] for run in runs for i in range(len(run) - width + 1)}
PERSONAL = ["Lin Meiling", "lin.meiling@example.com", "13900000077", "1979-04-02"]


def files_under(*roots: Path) -> list[Path]:
    return [p for root in roots for p in sorted(root.rglob("*")) if p.is_file()]


def unwrappable(files: list[Path], member_ref: str, vault: Vault) -> list[str]:
    """Every (file, wrapped key) in `files` that unwraps for `member_ref` with a KEK the vault holds:
    each stretch of base64 of a wrapped key's size, tried under every KEK id and data-key id found."""
    found = []
    blobs, kek_ids, dek_ids = set(), set(), set()
    for path in files:
        data = path.read_bytes()
        blobs |= {(path.name, blob) for blob in windows(BASE64_RUN.findall(data), 80)}
        kek_ids |= {k.decode() for k in KEK_ID.findall(data)}
        dek_ids |= {d.decode() for d in windows(HEX_RUN.findall(data), 32)}
    for name, blob in blobs:
        raw = base64.b64decode(blob)
        for kek_id in kek_ids:
            for dek_id in dek_ids:
                try:
                    vault.shred(WrappedKey(dek_id, kek_id, raw), member_ref)  # unwraps first, to check the binding
                except VaultError:
                    continue
                found.append(f"{name}: {dek_id} under {kek_id}")
    return found


@pytest.mark.parametrize("backend", ["sqlite"])
def test_no_copy_of_an_erased_key_decrypts_after_the_kek_rotates(tmp_path, backend):
    brand = start_local_brand(tmp_path, "forensic")
    gw = brand.gw
    try:
        m = enrol(brand, "unused", name=PERSONAL[0], birthday=PERSONAL[3],
                  identifiers={"email": PERSONAL[1], "phone": "+86 " + PERSONAL[2]})
        others = [enrol(brand, "unused", identifiers={"email": f"other{i}@example.com"}) for i in range(3)]
        ref = m["member_ref"]
        keys_dir, db = gw.settings.keys_dir, Path(gw.settings.database_url.removeprefix("sqlite:///"))
        written = lambda: files_under(keys_dir) + [p for p in db.parent.glob(db.name + "*")]  # noqa: E731
        # The data keys are not in the database: a copy of it alone decrypts nothing.
        assert gw.keystore.get(ref) is not None
        assert unwrappable([p for p in db.parent.glob(db.name + "*")], ref, gw.vault) == []

        # A backup of everything but the KEKs (which live in a KMS, or at least never in a backup).
        backup = tmp_path / "backup"
        for path in written():
            if "keks" not in path.parts:
                target = backup / path.relative_to(tmp_path)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
        assert unwrappable(files_under(backup), ref, gw.vault), "the scan finds the key in the backup"

        erased = brand.client.post(f"/v1/members/{ref}/erasure", headers=brand.as_("operator")).json()
        assert erased["key_absent"] is True and erased["final_by"] > erased["erased_at"]
        # Right after the erasure the live files hold no copy (secure_delete, no WAL left behind)...
        assert unwrappable(written(), ref, gw.vault) == []
        for path in written():
            text = path.read_bytes().lower()
            assert not [p for p in PERSONAL if p.lower().encode() in text], path
        # ... but the backup still opens with the KEK the brand holds: the erasure is not final yet.
        assert unwrappable(files_under(backup), ref, gw.vault)

        rotation = datakeys.rotate(gw, "test")
        assert rotation.rewrapped == 3 and rotation.destroyed_kek_ids
        held, current = gw.keystore.keks()
        assert list(held) == [current] == [rotation.new_kek_id]
        examiner = Vault(held, current)  # every key the brand still holds
        assert unwrappable(written() + files_under(backup), ref, examiner) == []
        assert not any(kek_id.encode() in p.read_bytes() for p in written() for kek_id in rotation.destroyed_kek_ids
                       if p.parent.name == "keks")
        # The members who stay keep their data, under the new KEK.
        for other in others:
            assert brand.client.get("/v1/me/export", headers=other["auth"]).json()["personal_data"]["email"].startswith("other")
    finally:
        brand.close()


def test_a_rotation_by_another_process_is_picked_up_and_a_stale_wrap_is_refused(tmp_path):
    """Two gateway processes of one brand share the key store: after one rotates, the other wraps
    new keys under the new KEK (its stale one is refused, never stored under a KEK about to go) and
    reads every member's data."""
    first = start_local_brand(tmp_path, "twin")
    second = start_local_brand(tmp_path, "twin")  # same keys directory and database
    try:
        before = enrol(first, "unused", identifiers={"email": "before@example.com"})
        datakeys.rotate(first.gw, "test")
        after = enrol(second, "unused", identifiers={"email": "after@example.com"})  # second still held the old KEK
        assert second.gw.keystore.get(after["member_ref"]).kek_id == first.gw.keystore.keks()[1]
        for brand in (first, second):
            for m, email in ((before, "before@example.com"), (after, "after@example.com")):
                export = brand.client.get(f"/v1/members/{m['member_ref']}/export", headers=brand.as_("operator")).json()
                assert export["personal_data"]["email"] == email
    finally:
        first.close()
        second.close()


def test_erasure_keeps_amounts_and_references_and_nothing_that_links(request, tmp_path, clock):
    """After erasure at both brands of a cross-brand member: no wallet address, no signature and no
    exact time of a purchase in the export or anywhere in the database files; the books still
    balance and both gateways still reconcile with the chain (an erased redemption by its
    transaction). (The consent log keeps its receipts' times: it is the proof of consent.)"""
    world = new_world(tmp_path)
    a = start_world_brand(world, "grocery", 100, clock=clock)
    b = start_world_brand(world, "airline", 20, clock=clock)
    request.addfinalizer(a.close)
    request.addfinalizer(b.close)
    clock.set(datetime(2026, 5, 4, 9, 0, tzinfo=UTC))
    m = enrol(a, "+8613812340001")
    consent(a, m, "alliance_exchange")
    clock.set(datetime(2026, 5, 4, 13, 37, 21, 123456, tzinfo=UTC))
    at_till = datetime(2026, 5, 4, 13, 36, 59, tzinfo=UTC)  # the till's own log has this time, and the amount
    assert purchase(a, m["member_ref"], 500_000, "till:exact", at_till).status_code == 201
    clock.advance(hours=1, minutes=1, seconds=1)
    wallet = new_wallet()
    link_wallet(a, m, wallet)
    assert exchange(a, m, 50, "ex-erase").status_code == 201
    mb = enrol(b, "+8613812340001")
    consent(b, mb, "alliance_exchange")
    link_wallet(b, mb, wallet)
    auth = authorise(world.alliance, wallet, b, 30, world.chain.timestamp() + 3600)
    assert b.client.post("/v1/me/redemptions", json=auth, headers=mb["auth"]).status_code == 201
    books = {brand.gw.settings.brand_id: balance(brand, member)["points"] for brand, member in ((a, m), (b, mb))}

    needles = [wallet.address[2:].lower().encode(), auth["signature"][2:].lower().encode(), b"13:36:59", b"13:37:21"]
    for brand, member in ((a, m), (b, mb)):
        db = Path(brand.gw.settings.database_url.removeprefix("sqlite:///"))
        before = b"".join(p.read_bytes().lower() for p in db.parent.glob(db.name + "*"))
        assert any(n in before for n in needles), "the scan finds them before the erasure"
        assert brand.client.post(f"/v1/members/{member['member_ref']}/erasure", headers=brand.as_("operator")).status_code == 200
        after = b"".join(p.read_bytes().lower() for p in db.parent.glob(db.name + "*"))
        left = [n for n in needles if n in after]
        assert left in ([], [b"13:37:21"]), left  # the receipt time of a purchase goes too; the till key's last use may stay
        export = json.dumps(brand.client.get(f"/v1/members/{member['member_ref']}/export", headers=brand.as_("operator")).json()).lower()
        assert [n for n in needles if n.decode() in export] == []
        with brand.gw.sessions() as session:
            mine = session.scalars(select(Purchase).join(Member).where(Member.member_ref == member["member_ref"])).all()
            assert all(t.time() == time(0) for p in mine for t in (p.occurred_at, p.received_at))
        rec = reconciliation(brand)
        assert rec["ok"], rec
        assert db_balance(brand, member["member_ref"]) == (books[brand.gw.settings.brand_id],) * 3
    assert reconciliation(b)["chain"]["checked"]["redemptions"] == 1


def test_an_erased_redemption_reconciles_by_its_transaction():
    brand, owner, tx = "0x" + "11" * 20, "0x" + "22" * 20, "0x" + "ab" * 32
    chain = [Entry("redemption", redemption_key(owner, 7), 30, to_checksum_address(owner), "confirmed", tx)]
    erased = Entry("redemption", erased_redemption_key(tx, 7), 30, None, "confirmed", "ref-1")
    assert compare(brand, "b", [erased], chain).ok
    elsewhere = Entry("redemption", erased_redemption_key("0x" + "cd" * 32, 7), 30, None, "confirmed", "ref-1")
    assert {i["kind"] for i in compare(brand, "b", [elsewhere], chain).issues} == {"missing_on_chain", "missing_in_ledger"}
    assert not compare(brand, "b", [Entry("redemption", erased_redemption_key(tx, 7), 31, None, "confirmed", "r")], chain).ok


def test_erasure_waits_for_the_members_pending_chain_operations(request, tmp_path, clock):
    """The sender still needs a pending exchange's wallet address: erasure is refused until it settles."""
    world = new_world(tmp_path)
    a = start_world_brand(world, "grocery", 10, clock=clock)
    request.addfinalizer(a.close)
    m = enrol(a, "+8613812349999")
    consent(a, m, "alliance_exchange")
    assert purchase(a, m["member_ref"], 100_000, "till:pending", clock.now).status_code == 201
    link_wallet(a, m, new_wallet())
    ref = queue_exchange(a, m, 10, "pending-one")
    r = a.client.post(f"/v1/members/{m['member_ref']}/erasure", headers=a.as_("operator"))
    assert r.status_code == 409 and "pending" in r.json()["detail"]
    assert a.gw.keystore.get(m["member_ref"]) is not None  # nothing was erased
    assert chain_rows(a, Exchange, [ref])[0].wallet_address is not None
    maintenance(a)  # the sender settles it
    assert a.client.post(f"/v1/members/{m['member_ref']}/erasure", headers=a.as_("operator")).status_code == 200


def test_the_key_store_can_live_apart_from_every_other_key(tmp_path):
    brand = start_local_brand(tmp_path, "apart", keystore_dir=tmp_path / "vault-volume")
    try:
        m = enrol(brand, "unused", identifiers={"email": "apart@example.com"})
        assert (tmp_path / "vault-volume" / "datakeys.sqlite").exists() and list((tmp_path / "vault-volume" / "keks").glob("*.key"))
        keys_dir = brand.gw.settings.keys_dir
        assert not (keys_dir / "datakeys.sqlite").exists() and not (keys_dir / "keks").exists() and not (keys_dir / "kek.key").exists()
        assert brand.client.get(f"/v1/members/{m['member_ref']}/export", headers=brand.as_("operator")).json()["personal_data"]["email"]
    finally:
        brand.close()


def test_without_scheduled_rotation_an_erasure_states_no_final_time(tmp_path):
    brand = start_local_brand(tmp_path, "norotation", kek_rotation_s=0)
    try:
        m = enrol(brand, "unused", identifiers={"email": "norot@example.com"})
        erased = brand.client.post(f"/v1/members/{m['member_ref']}/erasure", headers=brand.as_("operator")).json()
        assert erased["final_by"] is None and erased["key_absent"] is True
    finally:
        brand.close()


def test_a_database_of_the_earlier_layout_moves_its_data_keys_into_the_store(tmp_path):
    """Migration 0008 on a gateway whose data keys sat in its database under `kek.key`: the keys move
    into the key store (the old KEK becomes the store's first one, its file destroyed) and every
    member's data still opens."""
    import base64 as b64
    import json as js

    from alembic import command
    from sqlalchemy import text

    from gateway.migrations import alembic_config
    from privacy.keys import load_kek
    from privacy.vault import Vault as LegacyVault

    brand = start_local_brand(tmp_path, "legacy")
    m = enrol(brand, "unused", identifiers={"email": "legacy@example.com"})
    settings, engine = brand.gw.settings, brand.gw.engine
    brand.client.close()
    # Back to the earlier layout: a data_keys table, a kek.key file, no key store.
    command.downgrade(alembic_config(engine), "0007")
    keys_dir = settings.keys_dir
    shutil.rmtree(keys_dir / "keks")
    (keys_dir / "datakeys.sqlite").unlink()
    (keys_dir / "kek.key").write_bytes(b64.b64encode(bytes(range(32))) + b"\n")
    kek = load_kek(keys_dir / "kek.key")
    legacy = LegacyVault({kek.kek_id: kek}, kek.kek_id)
    wrapped = legacy.new_data_key(m["member_ref"])
    with engine.begin() as conn:
        member_id = conn.execute(text("SELECT id FROM members WHERE member_ref = :r"), {"r": m["member_ref"]}).scalar_one()
        conn.execute(text("INSERT INTO data_keys (member_id, kek_id, record) VALUES (:m, :k, :r)"),
                     {"m": member_id, "k": kek.kek_id, "r": js.dumps(wrapped.to_record())})
        for field, value in (("email", "legacy@example.com"), ("name", "Lee Gacy")):
            conn.execute(text("UPDATE pii_fields SET ciphertext = :c WHERE member_id = :m AND field = :f"),
                         {"c": legacy.encrypt_field(wrapped, m["member_ref"], field, value), "m": member_id, "f": field})
    engine.dispose()

    brand = start_local_brand(tmp_path, "legacy")  # upgrades to head with its key store
    try:
        assert not (keys_dir / "kek.key").exists()
        assert brand.gw.keystore.get(m["member_ref"]) == wrapped and brand.gw.keystore.keks()[1] == kek.kek_id
        with brand.gw.engine.connect() as conn:
            assert "data_keys" not in {r[0] for r in conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'table'"))}
        export = brand.client.get(f"/v1/members/{m['member_ref']}/export", headers=brand.as_("operator")).json()
        assert (export["personal_data"]["email"], export["personal_data"]["name"]) == ("legacy@example.com", "Lee Gacy")
    finally:
        brand.close()
