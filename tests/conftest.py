"""Fixtures shared by every test package.

PostgreSQL: the server named by ALLIANCE_TEST_POSTGRES_URL (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``). Tests never share rows: each gets a fresh
database with a random name (``CREATE DATABASE``), and every database made in the session is dropped
at its end. Where no server answers, the tests that need one skip and say why.
"""

from __future__ import annotations

import os
import uuid

import pytest
from components import unavailable
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


class PostgresDatabases:
    """Creates throwaway databases on one server and drops them all at the end."""

    def __init__(self, url: str):
        self.base: URL = make_url(url)
        self.admin = create_engine(self.base, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        self.created: list[str] = []

    def check(self) -> None:
        with self.admin.connect() as connection:
            connection.execute(text("SELECT 1"))

    def create(self, prefix: str = "alliance_test") -> str:
        """A new empty database; returns its URL (as a string, password included)."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with self.admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        return self.base.set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        with self.admin.connect() as connection:
            for name in self.created:
                # FORCE: engines a test forgot to dispose must not keep a database alive.
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.created.clear()
        self.admin.dispose()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first (a stable sort): on two workers (``make test``: pytest-xdist, a file per worker
    at a time) the longest files start at once rather than finishing the run alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def postgres_databases():
    """Factory of fresh PostgreSQL databases (skips when the server cannot be reached)."""
    url = os.environ.get("ALLIANCE_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    shown = make_url(url).render_as_string(hide_password=True)
    databases = PostgresDatabases(url)
    try:
        databases.check()
    except Exception as exc:  # driver errors of several kinds: refused, auth, unknown database
        databases.admin.dispose()
        unavailable("postgres", f"PostgreSQL not reachable at {shown}: {type(exc).__name__}: {exc}".splitlines()[0])
    try:
        yield databases
    finally:
        databases.drop_all()


@pytest.fixture(scope="session")
def postgres_url(postgres_databases: PostgresDatabases) -> str:
    """A fresh PostgreSQL database for the session (dropped at the end)."""
    return postgres_databases.create()


@pytest.fixture
def fresh_postgres_url(postgres_databases: PostgresDatabases) -> str:
    """A fresh PostgreSQL database for one test."""
    return postgres_databases.create()


@pytest.fixture(scope="session")
def anvil_url():
    """One anvil node (a real JSON-RPC chain) for the session; every module deploys its own alliance."""
    from contracts.chain import Anvil, ChainError

    try:
        node = Anvil()
        url = node.start()
    except ChainError as exc:
        unavailable("anvil", f"anvil unavailable: {exc}")
    try:
        yield url
    finally:
        node.stop()
