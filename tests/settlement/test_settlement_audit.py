"""`audit verify` against real gateways: clean when nothing was touched, and it catches a rewritten,
deleted or reordered consent entry (with or without the hash chain recomputed after it), a forged
receipt, an anchor that does not extend the previous one, and a processing without consent (an exchange
moved after a withdrawal, a training read recorded after one)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3

import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from settlement.audit import verify


@contextlib.contextmanager
def tampered(path):
    """A connection to a gateway's live database; every change is undone afterwards."""
    live, backup = sqlite3.connect(path), sqlite3.connect(":memory:")
    live.backup(backup)
    try:
        yield live
    finally:
        backup.backup(live)
        live.close()


def rehash(conn, table: str = "consent_log") -> None:
    """What an insider with write access does to hide an edit: renumber and recompute every hash."""
    prev = "00" * 32
    rows = conn.execute(f"SELECT rowid, payload FROM {table} ORDER BY seq").fetchall()
    conn.execute(f"UPDATE {table} SET seq = -seq - 1")
    for seq, (rowid, payload) in enumerate(rows):
        body = rfc8785.dumps({"seq": seq, "payload": json.loads(payload)})
        h = hashlib.sha256(bytes.fromhex(prev) + body).hexdigest()
        conn.execute(f"UPDATE {table} SET seq = ?, prev_hash = ?, entry_hash = ? WHERE rowid = ?", (seq, prev, h, rowid))
        prev = h
    conn.commit()


def audit_of(w, brand):
    report = verify(w.local.alliance, [w.access(brand)], sample=None, store=w.store)
    return report, {c.name: c for c in report.brands[0].checks}


def test_untouched_alliance_passes(gateway_world):
    report = verify(gateway_world.local.alliance, gateway_world.accesses(), sample=3)  # anchors by eth_getLogs
    assert report.ok, [(b.brand_id, c.name, c.summary) for b in report.brands for c in b.checks if not c.ok]
    checks = report.brands[0].checks
    assert {c.name for c in checks if c.status == "pass"} >= {"consent_log.hash_chain", "consent_log.anchored_roots",
                                                             "consent_log.anchor_consistency", "consent_log.signatures",
                                                             "consent_log.sampled_receipts", "processings.consent", "audit_log.hash_chain"}
    html = report.to_html()
    assert "PASS" in html and "consent_log.anchored_roots" in html
    # Every kind of processing was listed through the gateway's audit API and checked.
    grocery = {c.name: c for c in report.brands[0].checks}["processings.consent"]
    assert grocery.evidence["by_kind"] == {"exchange": 4, "redemption": 1, "training": 5, "campaign": 2}
    training = [p for p in grocery.evidence["processings"] if p["processing"] == "training"]
    assert {p["ref"] for p in training} == {"run:1:round:1:train", "run:1:round:2:train"}
    assert all(p["consent_valid"] and p["claimed_consent_seq"] == p["consent_seq"] for p in grocery.evidence["processings"])


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(action=st.sampled_from(["rewrite", "delete", "reorder"]), rehashed=st.booleans(), pick=st.integers(0, 10_000))
def test_tampered_consent_log_is_caught(gateway_world, action, rehashed, pick):
    w = gateway_world
    with tampered(w.db_path("grocery")) as db:
        anchored = db.execute("SELECT max(size) FROM log_anchors WHERE kind = 'consent-log'").fetchone()[0]
        seq = pick % (anchored - 1)
        if action == "rewrite":
            payload = json.loads(db.execute("SELECT payload FROM consent_log WHERE seq = ?", (seq,)).fetchone()[0])
            r = payload["receipt"]
            r["state"] = "withdrawn" if r["state"] == "granted" else "granted"
            db.execute("UPDATE consent_log SET payload = ? WHERE seq = ?", (rfc8785.dumps(payload).decode(), seq))
        elif action == "delete":
            db.execute("DELETE FROM consents WHERE log_seq = ?", (seq,))
            db.execute("DELETE FROM consent_log WHERE seq = ?", (seq,))
        else:
            a, b = (db.execute("SELECT payload FROM consent_log WHERE seq = ?", (s,)).fetchone()[0] for s in (seq, seq + 1))
            db.execute("UPDATE consent_log SET payload = ? WHERE seq = ?", (b, seq))
            db.execute("UPDATE consent_log SET payload = ? WHERE seq = ?", (a, seq + 1))
        db.commit()
        if rehashed:
            rehash(db)
        report, checks = audit_of(w, "grocery")
    assert not report.ok
    assert checks["consent_log.anchored_roots"].status == "fail"  # the roots on chain give it away either way
    if not rehashed:
        assert checks["consent_log.hash_chain"].status == "fail"


def test_forged_receipt_is_caught(gateway_world):
    """An entry appended with a valid hash link but a receipt the brand never signed."""
    w = gateway_world
    with tampered(w.db_path("cafe")) as db:
        last = db.execute("SELECT seq, payload, entry_hash, created_at FROM consent_log ORDER BY seq DESC LIMIT 1").fetchone()
        payload = json.loads(last[1])
        purpose = payload["receipt"]["services"][0]["purposes"][0]  # a Kantara receipt beside its JWS
        purpose["purpose"] = "marketing" if purpose["purpose"] != "marketing" else "federated_training"
        seq = last[0] + 1
        body = rfc8785.dumps({"seq": seq, "payload": payload})
        h = hashlib.sha256(bytes.fromhex(last[2]) + body).hexdigest()
        db.execute("INSERT INTO consent_log (seq, payload, prev_hash, entry_hash, created_at) VALUES (?, ?, ?, ?, ?)",
                   (seq, rfc8785.dumps(payload).decode(), last[2], h, last[3]))
        db.commit()
        report, checks = audit_of(w, "cafe")
    assert checks["consent_log.hash_chain"].status == "pass"  # the forgery is well linked...
    assert checks["consent_log.signatures"].status == "fail"  # ...but not signed by the brand
    assert checks["consent_log.signatures"].evidence["bad"][0]["seq"] == seq


def test_anchor_that_does_not_extend_the_previous_one_is_caught(gateway_world):
    w = gateway_world
    chain = w.local.chain
    snapshot = chain.snapshot()
    try:
        with tampered(w.db_path("airline")) as db:
            payload = json.loads(db.execute("SELECT payload FROM consent_log WHERE seq = 0").fetchone()[0])
            payload["receipt"]["collectionMethod"] = "pos" if payload["receipt"]["collectionMethod"] != "pos" else "web"
            db.execute("UPDATE consent_log SET payload = ? WHERE seq = 0", (rfc8785.dumps(payload).decode(),))
            db.commit()
            rehash(db)
            # A new entry, then the brand anchors its rewritten history as the next period.
            w.brands["airline"].enrol({"phone": "+8613999999999"}, "Eve", "eve-passphrase-2026", "1991-01-01")
            assert w.anchor("airline").status_code == 200
            report, checks = audit_of(w, "airline")
    finally:
        chain.revert(snapshot)
    assert checks["consent_log.anchor_consistency"].status == "fail"
    bad = [p for p in checks["consent_log.anchor_consistency"].evidence["pairs"] if not p["ok"]]
    assert len(bad) == 1 and bad[0]["to_period"] == 3


def test_processing_without_consent_is_caught(gateway_world):
    """An exchange attributed to a member who never consented to alliance_exchange at that brand."""
    w = gateway_world
    with tampered(w.db_path("grocery")) as db:
        never = db.execute("SELECT id FROM members WHERE id NOT IN (SELECT member_id FROM consents WHERE purpose = 'alliance_exchange')").fetchone()[0]
        db.execute("UPDATE exchanges SET member_id = ? WHERE id = (SELECT min(id) FROM exchanges)", (never,))
        db.commit()
        report, checks = audit_of(w, "grocery")
    assert checks["processings.consent"].status == "fail"
    assert len(checks["processings.consent"].evidence["violations"]) == 1


def test_withdrawal_applies_to_later_processings(gateway_world):
    """Bob withdrew alliance_exchange at the grocery after his exchange; moving the exchange after the
    withdrawal makes it a violation."""
    w = gateway_world
    with tampered(w.db_path("grocery")) as db:
        bob = db.execute("SELECT member_id, updated_at FROM consents WHERE purpose = 'alliance_exchange' AND granted = 0").fetchone()
        db.execute("UPDATE exchanges SET created_at = datetime(?, '+1 hour') WHERE member_id = ?", (bob[1], bob[0]))
        db.commit()
        report, checks = audit_of(w, "grocery")
    assert checks["processings.consent"].status == "fail"


def test_training_read_after_withdrawal_is_caught(gateway_world):
    """Carol withdrew federated_training at the grocery between the two rounds; a read that covers her
    after her withdrawal, with the grant she had before, is a violation named in the evidence."""
    w = gateway_world
    with tampered(w.db_path("grocery")) as db:
        carol, withdrawn_at = db.execute("SELECT member_id, updated_at FROM consents WHERE purpose = 'federated_training' "
                                         "AND granted = 0").fetchone()
        grant_seq = db.execute("SELECT consent_seq FROM member_set_entries WHERE member_id = ?", (carol,)).fetchone()[0]
        carol_ref = db.execute("SELECT member_ref FROM members WHERE id = ?", (carol,)).fetchone()[0]
        set_id = db.execute("INSERT INTO member_sets (digest, size) VALUES (?, 1)", ("ab" * 32,)).lastrowid
        db.execute("INSERT INTO member_set_entries (member_set_id, member_id, consent_seq) VALUES (?, ?, ?)", (set_id, carol, grant_seq))
        db.execute("INSERT INTO processings (kind, ref, purpose, decided_at, member_set_id) "
                   "VALUES ('training', 'run:9:round:1:train', 'federated_training', datetime(?, '+1 minute'), ?)", (withdrawn_at, set_id))
        db.commit()
        report, checks = audit_of(w, "grocery")
    check = checks["processings.consent"]
    assert check.status == "fail" and not report.ok
    assert [(v["processing"], v["ref"], v["member_ref"], v["claimed_consent_seq"]) for v in check.evidence["violations"]] == [
        ("training", "run:9:round:1:train", carol_ref, grant_seq)]
    assert "no federated_training consent" in check.evidence["violations"][0]["why"]
