"""Fixtures of the contract tests.

``world`` is one deployed alliance per backend per session: ``embedded`` (eth-tester on py-evm, in
process) and ``anvil`` (a real JSON-RPC node, one process for the session). The backend is a
parameter of the fixture, never of a test, so every behaviour test runs on both. ``w`` isolates a
test: it snapshots the chain before and reverts after.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from components import unavailable

sys.path.insert(0, str(Path(__file__).resolve().parent))  # contracts_testkit, whatever the import mode

from contracts.chain import Anvil, ChainError, connect  # noqa: E402
from contracts_testkit import World, build_world, start_background_compile  # noqa: E402

BACKENDS = ["embedded", pytest.param("anvil", marks=pytest.mark.anvil)]


@pytest.hookimpl(trylast=True)  # after pytest has grouped the items by backend
def pytest_collection_modifyitems(items):
    """Recompiling the contracts (test_contract_build.py) takes ~10 s of Node.js: start it in the
    background now and run those tests last, so it overlaps the chain tests on the other core."""
    build = [item for item in items if item.path.name == "test_contract_build.py"]
    if build:
        items[:] = [item for item in items if item.path.name != "test_contract_build.py"] + build
        start_background_compile()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def world(backend: str):
    if backend == "embedded":
        yield build_world(backend, connect("embedded"))
        return
    try:
        node = Anvil()
        url = node.start()
    except ChainError as exc:
        unavailable("anvil", f"anvil backend unavailable: {exc}")
    try:
        yield build_world(backend, connect(url))
    finally:
        node.stop()


@pytest.fixture
def w(world: World):
    """The session's alliance, with every change this test makes undone afterwards."""
    snapshot = world.chain.snapshot()
    try:
        yield world
    finally:
        world.chain.revert(snapshot)
