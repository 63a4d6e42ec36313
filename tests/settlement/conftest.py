"""Fixtures of the settlement tests.

``anvil_url``: one anvil node for the session (volume and property tests; they skip where anvil is
missing). ``gateway_world``: one whole local alliance with gateways on the embedded chain for the
module (audit, reconciliation against gateway databases, the console)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from contracts.chain import Anvil, ChainError  # noqa: E402


@pytest.fixture(scope="session")
def anvil_url():
    try:
        node = Anvil()
        url = node.start()
    except ChainError as exc:
        pytest.skip(f"anvil unavailable: {exc}")
    try:
        yield url
    finally:
        node.stop()


@pytest.fixture(scope="session")
def gateway_world(tmp_path_factory):
    import world

    return world.build(tmp_path_factory.mktemp("gateway-world"))
