"""Fixtures of the settlement tests.

``anvil_url`` (tests/conftest.py): one anvil node for the session. ``gateway_world``: one whole local
alliance with gateways on the embedded chain for the module (audit, reconciliation against gateway
databases, the console).

``store_backend``: the database the settlement store of a test lives in, SQLite and PostgreSQL (marker
``postgres``; skipped, saying why, when the server at ALLIANCE_TEST_POSTGRES_URL does not answer).
``new_store()`` makes a fresh, empty store on that backend (a file, or a new database), any number per
test (hypothesis examples included); every store is disposed of at the end of the test."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stores import STORE_BACKENDS, store_url  # noqa: E402


@pytest.fixture(scope="session")
def gateway_world(tmp_path_factory):
    import world

    return world.build(tmp_path_factory.mktemp("gateway-world"))


@pytest.fixture(params=STORE_BACKENDS)
def store_backend(request) -> str:
    return request.param


@pytest.fixture
def new_store(request, store_backend: str, tmp_path_factory):
    """Factory of fresh settlement stores on ``store_backend``."""
    from settlement.store import Store

    made: list[Store] = []
    directory = tmp_path_factory.mktemp("store")
    if store_backend == "postgres":
        request.getfixturevalue("postgres_databases")  # skip now, not part way through the test

    def make() -> Store:
        store = Store(store_url(request, store_backend, directory))
        made.append(store)
        return store

    yield make
    for store in made:
        store.dispose()
