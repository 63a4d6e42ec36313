"""The settlement service's own database: every alliance contract event, decoded, one row each.

SQLite by default (one file), PostgreSQL in production; only the URL differs. The store is the
auditor's copy of the chain: everything the epoch checks, the reconciliation and the reports derive
is derived from these rows, and each row can be traced back to (tx hash, log index) on chain.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import BigInteger, Index, Integer, String, Text, UniqueConstraint, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

Id = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class ChainEvent(Base):
    """One decoded log. Typed columns hold what the derivations filter and sum on; ``args`` holds every
    argument as JSON (integers as decimal strings, so uint256 values stay exact)."""

    __tablename__ = "chain_events"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    block_number: Mapped[int] = mapped_column(BigInteger)
    block_time: Mapped[int] = mapped_column(BigInteger)  # unix seconds (block timestamp)
    tx_hash: Mapped[str] = mapped_column(String(66))
    log_index: Mapped[int] = mapped_column(Integer)
    contract: Mapped[str] = mapped_column(String(24))  # AlliancePoints | Settlement | AllianceRegistry | ConsentAnchor
    name: Mapped[str] = mapped_column(String(32))  # event name
    brand: Mapped[str | None] = mapped_column(String(42), nullable=True)
    account: Mapped[str | None] = mapped_column(String(42), nullable=True)  # Issued.to, Redeemed/Refunded.owner, Transfer.from
    counterparty: Mapped[str | None] = mapped_column(String(42), nullable=True)  # Transfer.to
    ref: Mapped[str | None] = mapped_column(String(66), nullable=True)  # Issued.ref, Anchored.root (hex, no 0x)
    nonce: Mapped[str | None] = mapped_column(String(78), nullable=True)  # uint256 as decimal text
    amount: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    epoch: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    args: Mapped[str] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("tx_hash", "log_index", name="uq_chain_events_log"),
        Index("ix_chain_events_name_brand", "name", "brand"),
        Index("ix_chain_events_order", "block_number", "log_index"),
    )


class IndexedBlock(Base):
    """Hash and time of every block the indexer read events from (and of the last block it reached),
    so a resumed run can tell that the chain it left is still the chain it finds (reorg check)."""

    __tablename__ = "indexed_blocks"

    number: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    hash: Mapped[str] = mapped_column(String(66))
    timestamp: Mapped[int] = mapped_column(BigInteger)


class IndexerState(Base):
    __tablename__ = "indexer_state"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # "<chain id>:<points address>"
    last_block: Mapped[int] = mapped_column(BigInteger)
    last_hash: Mapped[str] = mapped_column(String(66))


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


class Store:
    """An engine with the schema created, and sessions on it."""

    def __init__(self, url: str = "sqlite:///var/settlement/index.sqlite"):
        self.url = url
        self.engine = make_engine(url)
        Base.metadata.create_all(self.engine)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessions() as session:
            yield session

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self.sessions() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
