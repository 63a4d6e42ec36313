"""The committed compiled contracts: read them without Node.js or a compiler."""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent
SRC_DIR = PACKAGE_DIR / "src"
ARTIFACTS_DIR = PACKAGE_DIR / "artifacts"

#: Deployable contracts, in deployment order.
CONTRACT_NAMES = ("AllianceRegistry", "SettlementToken", "Settlement", "AlliancePoints", "ConsentAnchor")


class ArtifactError(RuntimeError):
    """A compiled artifact is missing or unreadable."""


@cache
def load_artifact(name: str) -> dict[str, Any]:
    path = ARTIFACTS_DIR / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"no artifact for {name} at {path}: run `alliance contracts build`") from None


def artifact_hash(name: str) -> str:
    """SHA-256 of an artifact's deployable bytecode and ABI, recorded in deployment manifests."""
    artifact = load_artifact(name)
    canonical = json.dumps({"abi": artifact["abi"], "bytecode": artifact["bytecode"]}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


@cache
def error_selectors() -> dict[bytes, dict[str, Any]]:
    """Every custom error of every contract (OpenZeppelin's included), by 4-byte selector."""
    from eth_utils import function_abi_to_4byte_selector

    selectors: dict[bytes, dict[str, Any]] = {}
    for name in CONTRACT_NAMES:
        for entry in load_artifact(name)["abi"]:
            if entry["type"] == "error":
                selectors[function_abi_to_4byte_selector(entry)] = entry
    return selectors
