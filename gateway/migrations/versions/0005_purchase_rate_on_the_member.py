"""the purchase rate limit is GCRA state on the member (one number) instead of a count of the last
minute's purchases, so purchases lose their (member, received_at) index

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 13:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('members', schema=None) as batch_op:
        batch_op.add_column(sa.Column('purchase_tat_us', sa.BigInteger(), server_default='0', nullable=False))
    with op.batch_alter_table('purchases', schema=None) as batch_op:
        batch_op.drop_index('ix_purchases_member_received')


def downgrade() -> None:
    with op.batch_alter_table('purchases', schema=None) as batch_op:
        batch_op.create_index('ix_purchases_member_received', ['member_id', 'received_at'], unique=False)
    with op.batch_alter_table('members', schema=None) as batch_op:
        batch_op.drop_column('purchase_tat_us')
