"""leaner ledger indexes: postings are found through their member legs, in posting order (member,
account, txn); counter legs (member_id NULL) are only summed and leave the index; ledger_txns and
ledger_entries.txn_id need no index of their own

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 08:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

MEMBER_LEGS = sa.text("member_id IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table('ledger_txns', schema=None) as batch_op:
        batch_op.drop_index('ix_ledger_txns_member_id')
    with op.batch_alter_table('ledger_entries', schema=None) as batch_op:
        batch_op.drop_index('ix_ledger_entries_txn_id')
        batch_op.drop_index('ix_ledger_entries_member')
        batch_op.create_index('ix_ledger_entries_member', ['member_id', 'account', 'txn_id'], unique=False,
                              sqlite_where=MEMBER_LEGS, postgresql_where=MEMBER_LEGS)


def downgrade() -> None:
    with op.batch_alter_table('ledger_entries', schema=None) as batch_op:
        batch_op.drop_index('ix_ledger_entries_member')
        batch_op.create_index('ix_ledger_entries_member', ['member_id', 'account'], unique=False)
        batch_op.create_index('ix_ledger_entries_txn_id', ['txn_id'], unique=False)
    with op.batch_alter_table('ledger_txns', schema=None) as batch_op:
        batch_op.create_index('ix_ledger_txns_member_id', ['member_id'], unique=False)
