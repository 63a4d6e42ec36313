"""an erased member's exchanges and redemptions keep no wallet address or signature

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 04:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

COLUMNS = (('exchanges', 'wallet_address', 42), ('redemptions', 'owner', 42), ('redemptions', 'signature', 200))


def upgrade() -> None:
    for table, column, length in COLUMNS:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(column, existing_type=sa.String(length=length), nullable=True)


def downgrade() -> None:
    for table, column, length in COLUMNS:
        op.execute(f"UPDATE {table} SET {column} = '' WHERE {column} IS NULL")
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(column, existing_type=sa.String(length=length), nullable=False)
