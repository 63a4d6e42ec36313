"""gifts between members and donations to the brand's causes

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 15:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        'causes',
        sa.Column('id', Id, primary_key=True),
        sa.Column('code', sa.String(40), nullable=False, unique=True),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(100), nullable=False),
        sa.Column('description', sa.Text(), nullable=False),
        sa.Column('active', sa.Boolean(), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        'gifts',
        sa.Column('id', Id, primary_key=True),
        sa.Column('gift_ref', sa.String(36), nullable=False, unique=True),
        sa.Column('idempotency_key', sa.String(160), nullable=False, unique=True),
        sa.Column('request_hash', sa.String(64), nullable=False),
        sa.Column('sender_id', Id, sa.ForeignKey('members.id'), nullable=False),
        sa.Column('recipient_id', Id, sa.ForeignKey('members.id'), nullable=True),
        sa.Column('cause_id', Id, sa.ForeignKey('causes.id'), nullable=True),
        sa.Column('points', sa.BigInteger(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index('ix_gifts_sender', 'gifts', ['sender_id', 'created_at'])
    op.create_index('ix_gifts_recipient', 'gifts', ['recipient_id', 'created_at'])


def downgrade() -> None:
    op.drop_index('ix_gifts_recipient', table_name='gifts')
    op.drop_index('ix_gifts_sender', table_name='gifts')
    op.drop_table('gifts')
    op.drop_table('causes')
