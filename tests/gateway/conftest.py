"""Fixtures of the gateway tests.

``db_backend`` is the database a test's gateways use: SQLite and PostgreSQL (marker ``postgres``);
``database_url`` is a fresh database for one test on that backend. Chains are shared per module where
the tests allow it (``world``): deploying the alliance and onboarding brands costs transactions, and
the embedded chain mines about 40 a second.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness, whatever the import mode

import harness  # noqa: E402

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


make_database_url = harness.make_database_url


@pytest.fixture(params=BACKENDS)
def db_backend(request) -> str:
    return request.param


@pytest.fixture
def database_url(request, db_backend: str, tmp_path: Path) -> str:
    return make_database_url(request, db_backend, tmp_path)


@pytest.fixture(scope="module", params=BACKENDS)
def module_backend(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> harness.World:
    """One embedded chain with the alliance deployed, for the tests of one module."""
    return harness.new_world(tmp_path_factory.mktemp("world"))


@pytest.fixture
def clock() -> harness.Clock:
    return harness.Clock()
