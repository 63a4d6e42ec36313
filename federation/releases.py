"""Release records of global models, written as JSON next to the released model file.

A record says which model this is (version, SHA-256 of the exact serialised model bytes), how it
was trained (task, model, strategy, rounds, participating brand ids, secure aggregation), which
privacy guarantee it carries (``record-level`` DP-SGD inside each brand, ``client-level`` DP of a
whole brand's update, both, or ``none``) with the epsilon spent, and the metrics of every round.

Later phases anchor the record's hash on chain (``ConsentAnchor``, kind ``model-release``) and
append it to each participating gateway's audit log; :func:`record_digest` is the value to anchor.
"""

from __future__ import annotations

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


def verify_release(path: str | os.PathLike[str]) -> bool:
    """True when the model file next to the record hashes to the recorded SHA-256."""
    rec = load_release(path)
    blob = (Path(path).parent / rec["model_file"]).read_bytes()
    return sha256_hex(blob) == rec["model_sha256"]


def record_digest(record: dict[str, Any]) -> str:
    """SHA-256 of the record's canonical JSON (what later phases anchor on chain)."""
    return sha256_hex(json.dumps(record, sort_keys=True, separators=(",", ":")).encode())


def latest_release(release_dir: str | os.PathLike[str]) -> Path | None:
    paths = sorted(Path(release_dir).glob("*.release.json"), key=lambda p: p.stat().st_mtime)
    return paths[-1] if paths else None
