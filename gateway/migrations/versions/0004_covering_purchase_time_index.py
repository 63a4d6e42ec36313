"""a member's purchases by time cover what the tier window and the daily cap sum (amount, refunded,
points), so those reads stay in the index

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 10:45:00
"""
from alembic import op


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('purchases', schema=None) as batch_op:
        batch_op.drop_index('ix_purchases_member_time')
        batch_op.create_index('ix_purchases_member_time', ['member_id', 'occurred_at', 'amount_minor', 'refunded_minor', 'points'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('purchases', schema=None) as batch_op:
        batch_op.drop_index('ix_purchases_member_time')
        batch_op.create_index('ix_purchases_member_time', ['member_id', 'occurred_at'], unique=False)
