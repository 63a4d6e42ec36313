"""rewards paid with alliance points, member notices, webhooks

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 20:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table('reward_orders') as batch:
        batch.alter_column('debit_txn_id', existing_type=Id, nullable=True)
    op.add_column('redemptions', sa.Column('order_ref', sa.String(36), nullable=True))
    op.add_column('point_lots', sa.Column('reminded_days', sa.Integer(), nullable=True))
    op.create_table(
        'notices',
        sa.Column('id', Id, primary_key=True),
        sa.Column('member_id', Id, sa.ForeignKey('members.id'), nullable=False),
        sa.Column('kind', sa.String(24), nullable=False),
        sa.Column('subject', sa.String(80), nullable=False),
        sa.Column('data', sa.Text(), nullable=False),
        sa.Column('status', sa.String(8), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint('kind', 'subject', name='uq_notices_kind_subject'),
    )
    op.create_index('ix_notices_status', 'notices', ['status'])
    op.create_index('ix_notices_member_id', 'notices', ['member_id'])
    op.create_table(
        'webhook_subscriptions',
        sa.Column('id', Id, primary_key=True),
        sa.Column('url', sa.String(2000), nullable=False),
        sa.Column('event_types', sa.Text(), nullable=False),
        sa.Column('description', sa.String(200), nullable=False),
        sa.Column('secret_version', sa.Integer(), nullable=False),
        sa.Column('active', sa.Boolean(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        'webhook_deliveries',
        sa.Column('id', Id, primary_key=True),
        sa.Column('msg_id', sa.String(40), nullable=False, unique=True),
        sa.Column('subscription_id', Id, sa.ForeignKey('webhook_subscriptions.id'), nullable=False),
        sa.Column('event_type', sa.String(40), nullable=False),
        sa.Column('payload', sa.Text(), nullable=False),
        sa.Column('status', sa.String(12), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index('ix_webhook_deliveries_due', 'webhook_deliveries', ['status', 'next_attempt_at'])
    op.create_index('ix_webhook_deliveries_subscription', 'webhook_deliveries', ['subscription_id', 'id'])
    op.create_table(
        'webhook_attempts',
        sa.Column('id', Id, primary_key=True),
        sa.Column('delivery_id', Id, sa.ForeignKey('webhook_deliveries.id'), nullable=False),
        sa.Column('attempted_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('status_code', sa.Integer(), nullable=True),
        sa.Column('error', sa.String(200), nullable=True),
        sa.Column('duration_ms', sa.Integer(), nullable=False),
    )
    op.create_index('ix_webhook_attempts_delivery_id', 'webhook_attempts', ['delivery_id'])


def downgrade() -> None:
    op.drop_table('webhook_attempts')
    op.drop_index('ix_webhook_deliveries_subscription', table_name='webhook_deliveries')
    op.drop_index('ix_webhook_deliveries_due', table_name='webhook_deliveries')
    op.drop_table('webhook_deliveries')
    op.drop_table('webhook_subscriptions')
    op.drop_index('ix_notices_status', table_name='notices')
    op.drop_table('notices')
    op.drop_column('point_lots', 'reminded_days')
    op.drop_column('redemptions', 'order_ref')
    with op.batch_alter_table('reward_orders') as batch:
        batch.alter_column('debit_txn_id', existing_type=Id, nullable=False)
