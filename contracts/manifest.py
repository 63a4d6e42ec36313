"""The deployment manifest: where an alliance lives and which compiled code it runs."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .defaults import CONTRACTS_VERSION


@dataclass(frozen=True)
class Manifest:
    chain_id: int
    addresses: dict[str, str]  # contract name -> address
    deployed_block: int
    governor: str
    value_per_point: int  # settlement-token units per AP
    artifact_hashes: dict[str, str] = field(default_factory=dict)
    contracts_version: str = CONTRACTS_VERSION
    epoch_lengths: tuple[int, int] = (0, 0)  # (minimum, normal) seconds
    refund_window: int = 0  # seconds

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        data = json.loads(text)
        version = data.get("contracts_version", "1")
        if version != CONTRACTS_VERSION:
            raise ValueError(f"this manifest is for alliance contracts v{version}; this software runs v{CONTRACTS_VERSION}: "
                             "redeploy the alliance")
        data["epoch_lengths"] = tuple(data.get("epoch_lengths", (0, 0)))
        return cls(**data)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json())
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Manifest":
        return cls.from_json(Path(path).read_text())
