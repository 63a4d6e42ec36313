"""``alliance audit verify``: check every brand without trusting it.

What is trusted: the chain (the ConsentAnchor contract's Anchored events and the points contract's
events), the cryptography, and the brand's receipt public key *when it is pinned in the auditor's
configuration* (otherwise it is read from the gateway's ``/v1/brand`` and the report says so). What is
not trusted: anything else a gateway says. Its logs are fetched entry by entry through the auditor API
and every hash, root, proof and signature is recomputed here; its own ``/verification`` answer is never
used.

Checks per brand (each pass / fail / skip, with its evidence):

1. ``consent_log.hash_chain``     every entry's link and hash (privacy.hashchain.verify_chain);
2. ``consent_log.anchored_roots`` every root the brand anchored on chain equals the Merkle root this
   auditor computes over the first ``size`` entries it was given (a rewritten, deleted, inserted or
   reordered entry below an anchor changes that root; a log shorter than an anchor is truncation);
3. ``consent_log.anchor_consistency`` each anchor extends the one before: the gateway's RFC 9162
   consistency proof verifies between the two roots *read from the chain*;
4. ``consent_log.signatures``     every receipt in the log verifies under the brand's key;
5. ``consent_log.sampled_receipts`` sampled receipts fetched with their inclusion proofs: the entry is
   the one in the log, its signature verifies, and its proof verifies against the root on chain of the
   anchor period the gateway names (and that anchor's size);
6. ``processings.consent``        every processing the gateway lists (``/v1/audit/processings``: exchanges
   and redemptions under ``alliance_exchange``, federated training reads under ``federated_training``,
   campaign target lists under ``marketing``) relied on a consent of the purpose its kind needs that was
   granted at the moment the gateway decided it: consent state rebuilt over time from the verified log
   (a withdrawal applies to every later processing); where the gateway names the consent-log entry it
   relied on, it must be the one in force then.  What the gateway cannot be made to prove here is
   that its list is complete and its decision times honest;
7. ``audit_log.hash_chain`` and ``audit_log.anchored_roots`` the admin action log likewise.
"""

from __future__ import annotations

import json
import random
from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from contracts.client import Alliance, AnchorClient
from gateway.services.processings import PURPOSE_OF  # the purpose each kind of processing needs: one table
from privacy.hashchain import ChainEntry, entry_body, verify_chain
from privacy.keys import PublicKey
from privacy.merkle import MerkleTree, verify_consistency, verify_inclusion
from privacy.errors import ReceiptError
from privacy.receipts import load_receipt, verify_receipt

TEMPLATES = Path(__file__).resolve().parent / "templates"
PASS, FAIL, SKIP = "pass", "fail", "skip"


@dataclass
class AuditCheck:
    name: str
    status: str
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status != FAIL

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "summary": self.summary, "evidence": self.evidence}


@dataclass
class BrandAudit:
    brand_id: str
    address: str
    checks: list[AuditCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def check(self, name: str) -> AuditCheck:
        return next(c for c in self.checks if c.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {"brand_id": self.brand_id, "address": self.address, "ok": self.ok, "checks": [c.to_dict() for c in self.checks]}


@dataclass
class AuditReport:
    generated_at: str
    chain_id: int
    contracts: dict[str, str]
    brands: list[BrandAudit]

    @property
    def ok(self) -> bool:
        return all(b.ok for b in self.brands)

    def to_dict(self) -> dict[str, Any]:
        return {"generated_at": self.generated_at, "ok": self.ok, "chain_id": self.chain_id, "contracts": self.contracts,
                "brands": [b.to_dict() for b in self.brands]}

    def to_html(self) -> str:
        """A file that stands alone (the alliance's one stylesheet inline), to keep with the evidence."""
        from gateway import web

        return web.environment(TEMPLATES).get_template("audit_report.html").render(
            report=self.to_dict(), stylesheet=(web.STATIC / "alliance.css").read_text())

    def write(self, outdir: str | Path) -> dict[str, str]:
        outdir = Path(outdir)
        outdir.mkdir(parents=True, exist_ok=True)
        (outdir / "audit.json").write_text(json.dumps(self.to_dict(), indent=2, default=str) + "\n")
        (outdir / "audit.html").write_text(self.to_html())
        return {"json": str(outdir / "audit.json"), "html": str(outdir / "audit.html")}


@dataclass
class GatewayAccess:
    """How the auditor reaches one brand: its gateway's HTTP API (an httpx/TestClient-like client with
    ``get``) with an auditor API key, the brand's chain address and, optionally, its receipt public key
    (pinned: then nothing about the key is taken from the gateway) and, for reconciliation only, a
    read-only database URL (the audit itself reads nothing but the gateway's API and the chain)."""

    brand_id: str
    address: str
    http: Any
    auditor_key: str
    public_key_pem: str | None = None
    database_url: str | None = None

    def get(self, path: str, **params) -> Any:
        r = self.http.get(path, params=params or None, headers={"Authorization": f"Bearer {self.auditor_key}"})
        if r.status_code != 200:
            raise AuditFetchError(f"GET {path}: {r.status_code} {r.text[:200]}")
        return r.json()


class AuditFetchError(RuntimeError):
    pass


def fetch_log(access: GatewayAccess, kind: str, page: int = 5000, row_times: dict[int, float] | None = None) -> list[ChainEntry]:
    """Every entry of a log; ``row_times`` (optional) receives seq -> the gateway's row time of each."""
    entries: list[ChainEntry] = []
    start = 0
    while True:
        body = access.get(f"/v1/audit/logs/{kind}", start=start, limit=page)
        rows = body["entries"]
        for r in rows:
            entries.append(ChainEntry(r["seq"], r["payload"], r["prev_hash"], r["entry_hash"]))
            if row_times is not None and r.get("created_at"):
                try:
                    row_times[r["seq"]] = _ts(r["created_at"])
                except (TypeError, ValueError):
                    pass  # an unreadable time only loses the refinement within the receipt's second
        if len(rows) < page:
            return entries
        start = rows[-1]["seq"] + 1


def chain_anchors(alliance: Alliance, brand: str, kind: str, store=None) -> list[dict[str, Any]]:
    """Anchored events of the brand and log kind, from the chain (never from the gateway): read with
    eth_getLogs, or from the settlement store's copy of the chain's events when one is given (the
    indexer brings it up to date first)."""
    kind32 = kind.encode().ljust(32, b"\x00")
    if store is not None:
        from .indexer import Indexer, args_of, events

        Indexer(alliance, store).run()
        with store.session() as session:
            rows = [(e, args_of(e)) for e in events(session, "Anchored", brand=brand)]
        out = [{"period": a["period"], "size": a["size"], "root": a["root"].removeprefix("0x"), "block": e.block_number, "tx": e.tx_hash}
               for e, a in rows if a["kind"].removeprefix("0x") == kind32.hex()]
        return sorted(out, key=lambda a: a["period"])
    logs = alliance.anchor.contract.events.Anchored().get_logs(
        from_block=alliance.manifest.deployed_block, argument_filters={"brand": brand, "kind": kind32})
    out = [{"period": e["args"]["period"], "size": e["args"]["size"], "root": bytes(e["args"]["root"]).hex(),
            "block": e["blockNumber"], "tx": "0x" + bytes(e["transactionHash"]).hex()} for e in logs]
    return sorted(out, key=lambda a: a["period"])


def _leaves(entries: list[ChainEntry]) -> list[bytes]:
    out = []
    for e in entries:
        try:
            out.append(entry_body(e.seq, e.payload))
        except Exception:  # an unhashable payload: a leaf that can match nothing
            out.append(b"\xff" + str(e.seq).encode())
    return out


def check_chain(kind: str, entries: list[ChainEntry], anchors: list[dict[str, Any]]) -> AuditCheck:
    latest = anchors[-1] if anchors else None
    result = verify_chain(entries, expected_count=latest["size"] if latest else None)
    evidence = {"entries": len(entries), "checked": result.checked, "head": list(result.head) if result.head else None,
                "first_bad_seq": result.first_bad_seq, "reason": result.reason,
                "anchored_size": latest["size"] if latest else None}
    if result.ok:
        return AuditCheck(f"{kind}.hash_chain", PASS, f"{result.checked} entries link and hash correctly", evidence)
    return AuditCheck(f"{kind}.hash_chain", FAIL, f"chain breaks at seq {result.first_bad_seq}: {result.reason}", evidence)


def check_roots(kind: str, tree: MerkleTree, anchors: list[dict[str, Any]]) -> AuditCheck:
    rows, bad = [], 0
    for a in anchors:
        if a["size"] > tree.size:
            rows.append({**a, "computed": None, "ok": False, "why": f"log has {tree.size} entries, anchor covers {a['size']}"})
            bad += 1
            continue
        computed = tree.root(a["size"]).hex()
        ok = computed == a["root"]
        bad += not ok
        rows.append({**a, "computed": computed, "ok": ok})
    if not anchors:
        return AuditCheck(f"{kind}.anchored_roots", SKIP if tree.size == 0 else FAIL,
                          "nothing anchored on chain" + ("" if tree.size == 0 else f" though the log has {tree.size} entries"), {"anchors": []})
    if bad:
        return AuditCheck(f"{kind}.anchored_roots", FAIL, f"{bad} of {len(anchors)} roots on chain differ from the log's", {"anchors": rows})
    return AuditCheck(f"{kind}.anchored_roots", PASS, f"all {len(anchors)} roots on chain equal the log's Merkle roots", {"anchors": rows})


def check_consistency(kind: str, access: GatewayAccess, anchors: list[dict[str, Any]], log: str = "consent-log") -> AuditCheck:
    if len(anchors) < 2:
        return AuditCheck(f"{kind}.anchor_consistency", SKIP if anchors else SKIP, f"{len(anchors)} anchor(s): nothing to chain", {})
    claimed = {a["period"]: a for a in access.get(f"/v1/audit/logs/{log}/anchors")}
    rows, bad = [], 0
    for old, new in zip(anchors, anchors[1:]):
        proof_hex = claimed.get(new["period"], {}).get("consistency_from_previous")
        if proof_hex is None:
            ok, why = False, "the gateway gives no consistency proof for this anchor"
        else:
            try:
                proof = [bytes.fromhex(p) for p in proof_hex]
                ok = verify_consistency(old["size"], new["size"], bytes.fromhex(old["root"]), bytes.fromhex(new["root"]), proof)
            except ValueError:
                ok = False
            why = None if ok else "the proof does not take the earlier root on chain to the later one"
        bad += not ok
        rows.append({"from_period": old["period"], "to_period": new["period"], "from_size": old["size"], "to_size": new["size"],
                     "from_root": old["root"], "to_root": new["root"], "proof": proof_hex, "ok": ok, "why": why})
    status = FAIL if bad else PASS
    summary = f"{bad} anchor(s) do not extend the previous one" if bad else f"each of {len(rows)} anchors extends the previous one"
    return AuditCheck(f"{kind}.anchor_consistency", status, summary, {"pairs": rows})


def _public_key(access: GatewayAccess) -> tuple[PublicKey, str]:
    if access.public_key_pem:
        return PublicKey.from_pem(access.public_key_pem.encode()), "pinned in the auditor's configuration"
    info = access.http.get("/v1/brand").json()
    return PublicKey.from_pem(info["receipt_public_key_pem"].encode()), "read from the gateway's /v1/brand (pin it to remove that trust)"


def check_signatures(entries: list[ChainEntry], key: PublicKey, key_source: str) -> AuditCheck:
    bad = []
    for e in entries:
        try:
            verify_receipt(load_receipt(e.payload), key)  # either format: Kantara JWS, or the earlier JCS
        except Exception as exc:  # malformed or not verifying: both are a forged receipt to the auditor
            bad.append({"seq": e.seq, "error": f"{type(exc).__name__}: {exc}"})
    evidence = {"key_id": key.key_id, "key_source": key_source, "checked": len(entries), "bad": bad[:50]}
    if bad:
        return AuditCheck("consent_log.signatures", FAIL, f"{len(bad)} of {len(entries)} receipts do not verify under key {key.key_id}", evidence)
    return AuditCheck("consent_log.signatures", PASS, f"all {len(entries)} receipts verify under key {key.key_id}", evidence)


def check_sampled(access: GatewayAccess, entries: list[ChainEntry], anchors: list[dict[str, Any]], key: PublicKey,
                  sample: int | None, seed: int) -> AuditCheck:
    if not anchors:
        return AuditCheck("consent_log.sampled_receipts", SKIP, "no anchor on chain to prove receipts against", {})
    covered = min(anchors[-1]["size"], len(entries))
    by_period = {a["period"]: a for a in anchors}
    seqs = list(range(covered))
    if sample is not None and sample < covered:
        seqs = sorted(random.Random(seed).sample(seqs, sample))
    rows, bad = [], 0
    for seq in seqs:
        row: dict[str, Any] = {"seq": seq}
        try:
            proof = access.get(f"/v1/audit/logs/consent-log/{seq}/proof")
            anchor = by_period.get(proof["anchor"]["period"])
            entry = proof["entry"]
            receipt = load_receipt(entry["payload"])
            row["receipt_id"] = receipt.receipt.receipt_id
            row["same_as_log"] = entry["payload"] == entries[seq].payload
            try:
                verify_receipt(receipt, key)
                row["signature"] = True
            except Exception as exc:
                row["signature"], row["signature_error"] = False, str(exc)
            if anchor is None:
                row["included"], row["why"] = False, f"period {proof['anchor']['period']} is not anchored on chain"
            else:
                row["anchor"] = {"period": anchor["period"], "size": anchor["size"], "root": anchor["root"], "block": anchor["block"]}
                row["included"] = proof["tree_size"] == anchor["size"] and verify_inclusion(
                    entry_body(seq, entry["payload"]), seq, anchor["size"], [bytes.fromhex(p) for p in proof["proof"]], bytes.fromhex(anchor["root"]))
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"
        row["ok"] = bool(row.get("same_as_log") and row.get("signature") and row.get("included"))
        bad += not row["ok"]
        rows.append(row)
    evidence = {"sampled": len(rows), "covered_by_anchor": covered, "seed": seed, "receipts": rows}
    if bad:
        return AuditCheck("consent_log.sampled_receipts", FAIL, f"{bad} of {len(rows)} sampled receipts fail", evidence)
    return AuditCheck("consent_log.sampled_receipts", PASS, f"{len(rows)} sampled receipts: signed, in the log, proven against the root on chain", evidence)


# ---------------------------------------------------------------------------------------- processings


def _ts(value: str | datetime) -> float:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class ConsentTimeline:
    """Consent state per (member ref, purpose) over time, rebuilt from the verified consent log."""

    def __init__(self, entries: list[ChainEntry], row_times: dict[int, float] | None = None):
        self._events: dict[tuple[str, str], list[tuple[float, int, bool]]] = defaultdict(list)
        for e in entries:
            try:
                r = load_receipt(e.payload).receipt.to_dict()  # either format
                at = _ts(r["issued_at"])
            except (ReceiptError, KeyError, ValueError):
                continue
            # The receipt's second-resolution time is the signed truth; the gateway's row time refines
            # it within that second (and is used only when it agrees with the receipt).
            precise = (row_times or {}).get(e.seq)
            if precise is not None and int(precise) == int(at):
                at = precise
            self._events[r.get("pseudonym"), r.get("purpose")].append((at, e.seq, r.get("state") == "granted"))
        for v in self._events.values():
            v.sort()

    def state_at(self, member_ref: str, purpose: str, at: float) -> tuple[bool, int | None]:
        """(granted, seq of the receipt relied on) at time ``at``."""
        events = self._events.get((member_ref, purpose), [])
        i = bisect_right(events, (at, float("inf"), True))
        if i == 0:
            return False, None
        _, seq, granted = events[i - 1]
        return granted, seq




def fetch_processings(access: GatewayAccess, page: int = 5000) -> list[dict[str, Any]]:
    """Every processing the gateway lists, one item per (processing, member), page by page."""
    items: list[dict[str, Any]] = []
    since = None
    while True:
        body = access.get("/v1/audit/processings", limit=page, **({"since": since} if since else {}))
        items += body["items"]
        since = body.get("next")
        if not since or not body["items"]:
            return items


def check_processings(access: GatewayAccess, entries: list[ChainEntry], row_times: dict[int, float] | None = None) -> list[AuditCheck]:
    try:
        processings = fetch_processings(access)
    except Exception as exc:
        return [AuditCheck("processings.consent", FAIL, f"the gateway's processings could not be listed: {exc}", {})]
    timeline = ConsentTimeline(entries, row_times)
    rows, bad = [], []
    by_kind: dict[str, int] = defaultdict(int)
    for p in processings:
        kind = p.get("kind")
        by_kind[str(kind)] += 1
        needed = PURPOSE_OF.get(kind)
        row = {"processing": kind, "ref": p.get("ref"), "member_ref": p.get("member_ref"), "at": p.get("decided_at"),
               "purpose": needed, "claimed_consent_seq": p.get("consent_seq"), "status": p.get("status")}
        why = None
        try:
            at = _ts(p["decided_at"])
        except (KeyError, TypeError, ValueError):
            at, why = None, "no readable decision time"
        if needed is None:
            why = f"unknown kind {kind!r}"
        elif at is not None:
            granted, seq = timeline.state_at(p.get("member_ref"), needed, at)
            row["consent_seq"], row["consent_valid"] = seq, granted
            if not granted:
                why = f"no {needed} consent in force at that moment"
            elif p.get("purpose") != needed:
                why = f"recorded under purpose {p.get('purpose')!r}; a {kind} needs {needed}"
            elif p.get("consent_seq") is not None and p["consent_seq"] != seq:
                why = f"relied on consent-log entry {p['consent_seq']}, but entry {seq} was in force then"
        row["ok"] = why is None
        if why:
            row["why"] = why
            bad.append(row)
        rows.append(row)
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(by_kind.items()))
    evidence = {"checked": len(rows), "by_kind": dict(by_kind), "violations": bad[:100], "processings": rows[:200]}
    if bad:
        return [AuditCheck("processings.consent", FAIL, f"{len(bad)} of {len(rows)} processings had no valid consent at the time", evidence)]
    return [AuditCheck("processings.consent", PASS, f"all {len(rows)} processings ({kinds or 'none'}) relied on a consent valid at the time", evidence)]


# ---------------------------------------------------------------------------------------- run


def audit_brand(alliance: Alliance, access: GatewayAccess, *, sample: int | None = 20, seed: int = 0, store=None) -> BrandAudit:
    result = BrandAudit(access.brand_id, access.address)
    for kind in ("consent-log", "audit-log"):
        label = kind.replace("-", "_")
        row_times: dict[int, float] = {}
        try:
            entries = fetch_log(access, kind, row_times=row_times)
        except Exception as exc:
            result.checks.append(AuditCheck(f"{label}.hash_chain", FAIL, f"the log could not be read: {exc}", {}))
            continue
        anchors = chain_anchors(alliance, access.address, kind, store)
        chain_check = check_chain(label, entries, anchors)
        chain_check.name = f"{label}.hash_chain"
        result.checks.append(chain_check)
        tree = MerkleTree(_leaves(entries))
        result.checks.append(check_roots(label, tree, anchors))
        try:
            result.checks.append(check_consistency(label, access, anchors, kind))
        except Exception as exc:
            result.checks.append(AuditCheck(f"{label}.anchor_consistency", FAIL, f"no consistency proofs: {exc}", {}))
        if kind == "consent-log":
            key, source = _public_key(access)
            result.checks.append(check_signatures(entries, key, source))
            result.checks.append(check_sampled(access, entries, anchors, key, sample, seed))
            result.checks.extend(check_processings(access, entries, row_times))
    return result


def verify(alliance: Alliance, gateways: list[GatewayAccess], *, sample: int | None = 20, seed: int = 0, store=None) -> AuditReport:
    """Audit every brand; ``store`` (optional) is a settlement store to read anchors from instead of
    eth_getLogs (same chain events, faster on the embedded chain)."""
    return AuditReport(datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), alliance.chain.chain_id, dict(alliance.manifest.addresses),
                       [audit_brand(alliance, g, sample=sample, seed=seed, store=store) for g in gateways])


__all__ = ["AnchorClient", "AuditCheck", "AuditReport", "BrandAudit", "ConsentTimeline", "GatewayAccess", "verify", "audit_brand"]
