"""Fixtures of the settlement tests.

``anvil_url`` (tests/conftest.py): one anvil node for the session. ``gateway_world``: one whole local alliance with gateways on the embedded chain for the
module (audit, reconciliation against gateway databases, the console)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def gateway_world(tmp_path_factory):
    import world

    return world.build(tmp_path_factory.mktemp("gateway-world"))
