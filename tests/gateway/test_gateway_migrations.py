"""The Alembic migration creates exactly the models' schema, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from gateway.db import Base, make_engine
from gateway.migrations import alembic_config, upgrade_to_head
from gateway import models  # noqa: F401  (registers the tables)


def test_migration_matches_the_models(database_url):
    engine = make_engine(database_url)
    try:
        upgrade_to_head(engine)
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True, "compare_server_default": True})
            diff = compare_metadata(context, Base.metadata)
            assert diff == [], diff
            assert context.get_current_revision() == ScriptDirectory.from_config(alembic_config()).get_current_head()
        tables = set(inspect(engine).get_table_names()) - {"alembic_version"}
        assert tables == set(Base.metadata.tables)
        upgrade_to_head(engine)  # running it again (every start does) changes nothing
    finally:
        engine.dispose()


def test_single_linear_history():
    script = ScriptDirectory.from_config(alembic_config())
    heads = script.get_heads()
    assert len(heads) == 1, heads


def test_member_ledger_index_leaves_counter_legs_out(database_url):
    """Alembic's comparison does not look at an index's WHERE clause: check the partial index itself."""
    engine = make_engine(database_url)
    try:
        upgrade_to_head(engine)
        with engine.connect() as connection:
            if engine.dialect.name == "postgresql":
                definition = connection.exec_driver_sql(
                    "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_ledger_entries_member'").scalar_one()
            else:
                definition = connection.exec_driver_sql(
                    "SELECT sql FROM sqlite_master WHERE name = 'ix_ledger_entries_member'").scalar_one()
        assert "(member_id, account, txn_id)" in definition.replace('"', "")
        assert "member_id IS NOT NULL" in definition
        assert not any(ix["name"] == "ix_ledger_entries_txn_id" for ix in inspect(engine).get_indexes("ledger_entries"))
    finally:
        engine.dispose()
