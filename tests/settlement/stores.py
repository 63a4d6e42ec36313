"""The settlement store's two backends for the tests: SQLite (a file) and PostgreSQL (a fresh
database on the test server, marker ``postgres``)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

STORE_BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def store_url(request, backend: str, directory: Path) -> str:
    """A fresh, empty database for a settlement store: a new SQLite file or a new PostgreSQL database
    (``postgres_databases`` skips the test, saying why, when the server does not answer)."""
    if backend == "sqlite":
        return f"sqlite:///{directory / f'store-{uuid.uuid4().hex[:8]}.sqlite'}"
    return request.getfixturevalue("postgres_databases").create("settlement_test")
