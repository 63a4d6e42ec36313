"""Compile the Solidity sources with py-solc-x driving the pinned solc-js, and check the committed
artifacts against the sources.

Node.js is needed only here: `npm install` in contracts/ installs solc-js, OpenZeppelin and anvil at the
versions of package-lock.json. Running the alliance reads the committed artifacts instead.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import solcx

from .artifacts import ARTIFACTS_DIR, CONTRACT_NAMES, PACKAGE_DIR, SRC_DIR
from .defaults import CONTRACTS_VERSION

SOLC_WRAPPER = PACKAGE_DIR / "tools" / "solc"
NODE_MODULES = PACKAGE_DIR / "node_modules"

#: py-evm, the embedded chain, has no VM later than Prague.
SETTINGS: dict[str, Any] = {
    "evmVersion": "prague",
    "optimizer": {"enabled": True, "runs": 10_000},
    "remappings": ["@openzeppelin/contracts/=node_modules/@openzeppelin/contracts/"],
    "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object", "metadata"]}},
}


class ToolchainMissing(RuntimeError):
    """Node.js or the pinned npm packages are not installed."""


@dataclass(frozen=True)
class CheckResult:
    stale: list[str]  # artifacts that differ from what the sources compile to
    missing: list[str]
    extra: list[str]

    @property
    def ok(self) -> bool:
        return not (self.stale or self.missing or self.extra)


def _require_toolchain() -> None:
    if shutil.which("node") is None:
        raise ToolchainMissing("Node.js is required to compile the contracts (not to run them)")
    if not (NODE_MODULES / "solc").is_dir() or not (NODE_MODULES / "@openzeppelin" / "contracts").is_dir():
        raise ToolchainMissing(f"pinned toolchain missing: run `npm install` in {PACKAGE_DIR}")


def compiler_version() -> str:
    _require_toolchain()
    return solcx.wrapper.get_version_str_from_solc_binary(SOLC_WRAPPER)


def compile_all() -> dict[str, dict[str, Any]]:
    """Compile every source under src/ and return one artifact per deployable contract."""
    _require_toolchain()
    sources = {
        f"src/{path.name}": {"content": path.read_text()} for path in sorted(SRC_DIR.glob("*.sol"))
    }
    output = solcx.compile_standard(
        {"language": "Solidity", "sources": sources, "settings": SETTINGS},
        solc_binary=SOLC_WRAPPER,
        base_path=str(PACKAGE_DIR),
        allow_paths=[str(PACKAGE_DIR)],
    )
    version = compiler_version()
    artifacts = {}
    for source_name, contracts in output["contracts"].items():
        for name, compiled in contracts.items():
            if name not in CONTRACT_NAMES:
                continue
            metadata = json.loads(compiled["metadata"])
            artifacts[name] = {
                "contractName": name,
                "contractsVersion": CONTRACTS_VERSION,
                "sourceName": source_name,
                "abi": compiled["abi"],
                "bytecode": "0x" + compiled["evm"]["bytecode"]["object"],
                "deployedBytecode": "0x" + compiled["evm"]["deployedBytecode"]["object"],
                "compiler": {"version": version, "settings": {k: v for k, v in SETTINGS.items() if k != "outputSelection"}},
                # keccak256 of every source in the compilation unit (OpenZeppelin's included),
                # hashed once more: it changes when any source that went into the contract changes.
                "sourceHash": hashlib.sha256(json.dumps(metadata["sources"], sort_keys=True).encode()).hexdigest(),
            }
    missing = set(CONTRACT_NAMES) - artifacts.keys()
    if missing:
        raise RuntimeError(f"compilation produced no output for {sorted(missing)}")
    return artifacts


def _render(artifact: dict[str, Any]) -> str:
    return json.dumps(artifact, indent=2, sort_keys=True) + "\n"


def build(out_dir: Path = ARTIFACTS_DIR) -> list[Path]:
    """Compile and write the artifacts; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, artifact in compile_all().items():
        path = out_dir / f"{name}.json"
        path.write_text(_render(artifact))
        written.append(path)
    return written


def check(artifacts_dir: Path = ARTIFACTS_DIR) -> CheckResult:
    """Recompile and compare byte for byte with the committed artifacts."""
    fresh = compile_all()
    committed = {path.stem: path for path in artifacts_dir.glob("*.json")}
    stale = [name for name, artifact in fresh.items() if name in committed and committed[name].read_text() != _render(artifact)]
    return CheckResult(
        stale=sorted(stale),
        missing=sorted(fresh.keys() - committed.keys()),
        extra=sorted(committed.keys() - fresh.keys()),
    )
