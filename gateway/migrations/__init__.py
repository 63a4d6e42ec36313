"""Alembic migrations of the gateway database, run programmatically (no alembic.ini needed)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine

MIGRATIONS_DIR = Path(__file__).resolve().parent


def alembic_config(engine: Engine | None = None, keystore=None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if engine is not None:
        config.attributes["engine"] = engine
    if keystore is not None:
        config.attributes["keystore"] = keystore  # 0008 moves data keys there
    return config


def upgrade_to_head(engine: Engine, keystore=None) -> None:
    command.upgrade(alembic_config(engine, keystore), "head")
