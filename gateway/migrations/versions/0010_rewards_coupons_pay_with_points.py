"""rewards catalogue, reward orders, coupons; purchases paid in part with points and a coupon

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 10:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
PAYMENT_COLUMNS = ('points_burned', 'burn_value_minor', 'points_returned', 'discount_minor')


def upgrade() -> None:
    op.create_table(
        'rewards',
        sa.Column('id', Id, primary_key=True),
        sa.Column('code', sa.String(40), nullable=False, unique=True),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(16), nullable=False),
        sa.Column('name', sa.String(100), nullable=False),
        sa.Column('description', sa.Text(), nullable=False),
        sa.Column('points_price', sa.BigInteger(), nullable=False),
        sa.Column('stock', sa.BigInteger(), nullable=True),
        sa.Column('available_from', sa.DateTime(timezone=True), nullable=False),
        sa.Column('available_until', sa.DateTime(timezone=True), nullable=True),
        sa.Column('min_tier', sa.String(16), nullable=True),
        sa.Column('per_member_limit', sa.Integer(), nullable=True),
        sa.Column('coupon_value_minor', sa.BigInteger(), nullable=True),
        sa.Column('coupon_min_spend_minor', sa.BigInteger(), nullable=True),
        sa.Column('coupon_valid_days', sa.Integer(), nullable=True),
        sa.Column('active', sa.Boolean(), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        'reward_orders',
        sa.Column('id', Id, primary_key=True),
        sa.Column('order_ref', sa.String(36), nullable=False, unique=True),
        sa.Column('idempotency_key', sa.String(160), nullable=False, unique=True),
        sa.Column('request_hash', sa.String(64), nullable=False),
        sa.Column('member_id', Id, sa.ForeignKey('members.id'), nullable=False),
        sa.Column('reward_id', Id, sa.ForeignKey('rewards.id'), nullable=False),
        sa.Column('reward_version', sa.Integer(), nullable=False),
        sa.Column('points', sa.BigInteger(), nullable=False),
        sa.Column('status', sa.String(16), nullable=False),
        sa.Column('debit_txn_id', Id, sa.ForeignKey('ledger_txns.id'), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index('ix_reward_orders_member', 'reward_orders', ['member_id', 'reward_id'])
    op.create_table(
        'coupons',
        sa.Column('id', Id, primary_key=True),
        sa.Column('order_id', Id, sa.ForeignKey('reward_orders.id'), nullable=False, unique=True),
        sa.Column('member_id', Id, sa.ForeignKey('members.id'), nullable=False),
        sa.Column('code_hash', sa.String(64), nullable=False, unique=True),
        sa.Column('value_minor', sa.BigInteger(), nullable=False),
        sa.Column('min_spend_minor', sa.BigInteger(), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('status', sa.String(8), nullable=False),
        sa.Column('purchase_id', Id, sa.ForeignKey('purchases.id'), nullable=True),
    )
    op.create_index('ix_coupons_member_id', 'coupons', ['member_id'])
    for column in PAYMENT_COLUMNS:
        op.add_column('purchases', sa.Column(column, sa.BigInteger(), nullable=False, server_default='0'))
    op.add_column('refunds', sa.Column('points_returned', sa.BigInteger(), nullable=False, server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('refunds') as batch_op:
        batch_op.drop_column('points_returned')
    with op.batch_alter_table('purchases') as batch_op:
        for column in PAYMENT_COLUMNS:
            batch_op.drop_column(column)
    op.drop_table('coupons')
    op.drop_index('ix_reward_orders_member', table_name='reward_orders')
    op.drop_table('reward_orders')
    op.drop_table('rewards')
