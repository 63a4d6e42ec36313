"""one chain sender per brand: signed transactions stored once in chain_txs (a batch carries many
rows), the sender's lease

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 01:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    chain_txs = op.create_table('chain_txs',
    sa.Column('hash', sa.String(length=66), nullable=False),
    sa.Column('nonce', sa.BigInteger(), nullable=False),
    sa.Column('raw', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('hash')
    )
    op.create_table('sender_lease',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('holder', sa.String(length=100), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    # Every stored transaction moves to chain_txs (a pending row may still need its bytes again).
    conn = op.get_bind()
    seen = set()
    for table in ('exchanges', 'redemptions'):
        for tx_hash, nonce, raw, at in conn.execute(sa.text(
                f"SELECT tx_hash, tx_nonce, raw_tx, updated_at FROM {table} WHERE raw_tx IS NOT NULL")):
            if tx_hash not in seen:
                seen.add(tx_hash)
                conn.execute(chain_txs.insert().values(hash=tx_hash, nonce=nonce, raw=raw, created_at=at))
    for table in ('exchanges', 'redemptions'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('raw_tx')
            batch_op.drop_column('tx_nonce')
            batch_op.create_index(batch_op.f(f'ix_{table}_tx_hash'), ['tx_hash'], unique=False)


def downgrade() -> None:
    for table in ('redemptions', 'exchanges'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(batch_op.f(f'ix_{table}_tx_hash'))
            batch_op.add_column(sa.Column('tx_nonce', sa.BigInteger(), nullable=True))
            batch_op.add_column(sa.Column('raw_tx', sa.Text(), nullable=True))
        op.execute(f"UPDATE {table} SET raw_tx = (SELECT raw FROM chain_txs WHERE chain_txs.hash = {table}.tx_hash), "
                   f"tx_nonce = (SELECT nonce FROM chain_txs WHERE chain_txs.hash = {table}.tx_hash)")
    op.drop_table('sender_lease')
    op.drop_table('chain_txs')
