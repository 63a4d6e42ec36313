"""Release records of global models, written as JSON next to the released model file.

A record says which model this is (version, SHA-256 of the exact serialised model bytes), how it
was trained (task, model, strategy, rounds, participating brand ids, secure aggregation), which
privacy guarantee it carries (``record-level`` DP-SGD inside each brand, ``client-level`` DP of a
whole brand's update, both, or ``none``) with the epsilon spent, and the metrics of every round.

Every participating gateway records the release in its audit log and anchors its log of releases
on chain (``ConsentAnchor``, kind ``model-releases``; :func:`record_release`): the operator does it
for all brands where it holds their gateways (simulation, the demo: :func:`publish_release`); in a
deployment each brand does it for itself with ``alliance gateway record-release``, which also
checks the model file against the record and installs the release for campaign targeting.
"""

from __future__ import annotations

import contextlib

import datetime as _dt
import json
import os
import re
from pathlib import Path
from typing import Any

from federation.models import sha256_hex

SCHEMA = "alliance.federation.release/1"

REQUIRED_FIELDS = (
    "schema",
    "model_version",
    "task",
    "model",
    "strategy",
    "data_source",
    "created_at",
    "model_file",
    "model_format",
    "model_sha256",
    "num_rounds",
    "rounds_completed",
    "participating_brands",
    "privacy",
    "secure_aggregation",
    "metrics_per_round",
    "final_metrics",
)


def _next_version(release_dir: Path, stem: str) -> int:
    pattern = re.compile(rf"^{re.escape(stem)}-v(\d+)\.release\.json$")
    versions = [int(m.group(1)) for p in release_dir.glob(f"{stem}-v*.release.json") if (m := pattern.match(p.name))]
    return max(versions, default=0) + 1


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and value != value:  # NaN
        return None
    if hasattr(value, "item"):
        return value.item()
    return value


def write_release(
    release_dir: str | os.PathLike[str],
    *,
    model_bytes: bytes,
    model_format: str,
    fields: dict[str, Any],
) -> tuple[Path, dict[str, Any]]:
    """Write the model file and its release record; returns (record path, record)."""
    rdir = Path(release_dir)
    rdir.mkdir(parents=True, exist_ok=True)
    stem = f"{fields['task']}-{fields['model']}-{fields['data_source']}"
    version = _next_version(rdir, stem)
    model_version = f"{stem}-v{version}"
    model_path = rdir / f"{model_version}.model.json"
    model_path.write_bytes(model_bytes)
    record = {
        "schema": SCHEMA,
        "model_version": model_version,
        "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "model_file": model_path.name,
        "model_format": model_format,
        "model_sha256": sha256_hex(model_bytes),
        **fields,
    }
    missing = [f for f in REQUIRED_FIELDS if f not in record]
    if missing:
        raise ValueError(f"release record misses {missing}")
    record = _jsonable(record)
    path = rdir / f"{model_version}.release.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
    tmp.replace(path)
    return path, record


def load_release(path: str | os.PathLike[str]) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def model_path(path: str | os.PathLike[str], record: dict[str, Any]) -> Path:
    """The model file of a release record: beside the record, nowhere else (a record names it)."""
    name = record["model_file"]
    if not isinstance(name, str) or Path(name).name != name:
        raise ValueError(f"{path}: model_file must be a file name in the release directory")
    return Path(path).parent / name


def verify_release(path: str | os.PathLike[str]) -> bool:
    """True when the model file next to the record hashes to the recorded SHA-256."""
    rec = load_release(path)
    return sha256_hex(model_path(path, rec).read_bytes()) == rec["model_sha256"]


def record_digest(record: dict[str, Any]) -> str:
    """SHA-256 of the record's canonical JSON (what later phases anchor on chain)."""
    return sha256_hex(json.dumps(record, sort_keys=True, separators=(",", ":")).encode())


def latest_release(release_dir: str | os.PathLike[str]) -> Path | None:
    paths = sorted(Path(release_dir).glob("*.release.json"), key=lambda p: p.stat().st_mtime)
    return paths[-1] if paths else None


# --------------------------------------------------------------------------- publishing (phase 2)

RELEASE_ANCHOR_KIND = "model-releases"
RELEASE_AUDIT_ACTION = "model.released"


def audit_summary(record: dict[str, Any]) -> dict[str, Any]:
    """What a gateway's audit log keeps of a release (no member data: hashes, rounds, brands, epsilon)."""
    priv = record.get("privacy") or {}
    final = record.get("final_metrics") or {}
    return {
        "model_version": record["model_version"],
        "model_sha256": record["model_sha256"],
        "record_digest": record_digest({k: v for k, v in record.items() if not str(k).startswith("_")}),
        "task": record["task"],
        "model": record["model"],
        "strategy": record["strategy"],
        "rounds": int(record["rounds_completed"]),
        "num_rounds": int(record["num_rounds"]),
        "participating_brands": list(record["participating_brands"]),
        "guarantee": priv.get("guarantee", "none"),
        "epsilon_spent": priv.get("epsilon_spent"),
        "delta": priv.get("delta"),
        "secure_aggregation": bool((record.get("secure_aggregation") or {}).get("enabled")),
        "metrics": {k: final[k] for k in sorted(final) if isinstance(final[k], (int, float))},
    }


def release_entries(session: Any) -> dict[str, int]:
    """Every release recorded in this gateway's audit log: record digest -> audit seq, in order."""
    from sqlalchemy import select

    from gateway.models import AuditLogEntry

    out: dict[str, int] = {}
    for seq, payload in session.execute(select(AuditLogEntry.seq, AuditLogEntry.payload).order_by(AuditLogEntry.seq)):
        doc = json.loads(payload)
        if doc.get("action") == RELEASE_AUDIT_ACTION:
            out.setdefault(doc["details"]["record_digest"], seq)
    return out


def releases_root(digests: list[str]) -> bytes:
    """Merkle root (privacy.merkle, RFC 6962 style) over the release record digests, in order."""
    from privacy.merkle import MerkleTree

    return MerkleTree([bytes.fromhex(d) for d in digests]).root()


def publish_release(record: dict[str, Any], gateways: dict[str, Any], *, actor: str = "alliance-operator",
                    anchor: bool = True) -> dict[str, dict[str, Any]]:
    """Record a release in every participating gateway (:func:`record_release`), where the
    operator holds them all (simulation, the demo): all of them or none.  Returns the results per brand."""
    missing = [b for b in record["participating_brands"] if b not in gateways]
    if missing:
        raise ValueError(f"no gateway for participating brands {missing}")
    return {brand: record_release(record, gateways[brand], actor=actor, anchor=anchor) for brand in record["participating_brands"]}


def record_release(record: dict[str, Any], gw: Any, *, actor: str, anchor: bool = True) -> dict[str, Any]:
    """Record a release in one participating gateway's audit log and anchor that log of releases.

    One audit entry ``model.released`` with :func:`audit_summary` and the brand's own model of it
    (``personal_model``: what it uses, checked against its database); then (when the gateway has a
    chain) the ConsentAnchor post of kind ``model-releases`` with period = release number at this
    brand, size = number of releases, root = Merkle root over the release record digests, signed
    with the brand's own key, and an audit entry ``model-releases.anchored`` with the transaction.
    Both in one database transaction: a failed anchor records nothing.  A release the gateway
    already holds is not recorded again (``already_recorded``).  Returns ``{"audit_seq", "period",
    "size", "root", "tx_hash", "already_recorded"}``.
    """
    from gateway.db import transaction
    from gateway.services import audit
    from gateway.services.alliance import sender
    from gateway.services.outbox import LEASE_S

    brand = gw.settings.brand_id
    if brand not in record["participating_brands"]:
        raise ValueError(f"{brand} did not take part in release {record['model_version']}")
    summary = audit_summary(record)
    anchoring = anchor and gw.alliance is not None
    # The anchor goes out as the brand's chain sender (taken before the database transaction).
    with sender(gw).exclusive(wait_s=LEASE_S) if anchoring else contextlib.nullcontext(), transaction(gw.sessions) as session:
        now = gw.now()
        recorded = release_entries(session)
        if summary["record_digest"] in recorded:
            digests = list(recorded)
            seq = recorded[summary["record_digest"]]
            period = digests.index(summary["record_digest"]) + 1
            return {"audit_seq": seq, "period": period, "size": period, "root": releases_root(digests[:period]).hex(),
                    "tx_hash": None, "already_recorded": True}
        personal = ((record.get("personalisation") or {}).get("brands") or {}).get(brand)
        if personal and personal.get("kept"):
            from gateway.services.personal import load as load_personal

            held = load_personal(session.connection(), str(record["model_sha256"]))
            if held is None or sha256_hex(held) != personal.get("model_sha256"):
                raise ValueError(f"release {record['model_version']} names a personal model of {brand} that its database does not hold")
        entry = audit.record(session, actor, RELEASE_AUDIT_ACTION, now, **summary, personal_model=personal)
        digests = [*recorded, summary["record_digest"]]
        res: dict[str, Any] = {"audit_seq": entry.seq, "period": len(digests), "size": len(digests),
                               "root": releases_root(digests).hex(), "tx_hash": None, "already_recorded": False}
        if anchoring:
            receipt = gw.alliance.anchor.post(gw.transactor(), RELEASE_ANCHOR_KIND, res["period"], res["size"], bytes.fromhex(res["root"]))
            res["tx_hash"] = "0x" + bytes(receipt["transactionHash"]).hex()
            res["block_number"] = int(receipt["blockNumber"])
            audit.record(session, actor, "model-releases.anchored", now, kind=RELEASE_ANCHOR_KIND,
                         period=res["period"], size=res["size"], root=res["root"], tx_hash=res["tx_hash"],
                         model_version=summary["model_version"])
    return res
