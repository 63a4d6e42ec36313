"""self-enrolment proven by one-time codes (pending enrolments), rate limits and login locks by
pseudonym, API key expiry and last use, actions remember their request

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 10:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('enrolments',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('member_ref', sa.String(length=36), nullable=False),
    sa.Column('pseudonyms', sa.Text(), nullable=False),
    sa.Column('code_hashes', sa.Text(), nullable=False),
    sa.Column('sealed', sa.Text(), nullable=False),
    sa.Column('passphrase_hash', sa.String(length=200), nullable=False),
    sa.Column('birth_month', sa.Integer(), nullable=True),
    sa.Column('jurisdiction', sa.String(length=2), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_enrolments_expires_at'), 'enrolments', ['expires_at'], unique=False)
    op.create_table('throttles',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('tat_us', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    op.create_table('login_failures',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('locked_until', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('key')
    )
    with op.batch_alter_table('members', schema=None) as batch_op:
        batch_op.add_column(sa.Column('identity_proof', sa.String(length=16), server_default='none', nullable=False))
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table('actions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('request_hash', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('actions', schema=None) as batch_op:
        batch_op.drop_column('request_hash')
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_column('last_used_at')
        batch_op.drop_column('expires_at')
    with op.batch_alter_table('members', schema=None) as batch_op:
        batch_op.drop_column('identity_proof')
    op.drop_table('login_failures')
    op.drop_table('throttles')
    op.drop_index(op.f('ix_enrolments_expires_at'), table_name='enrolments')
    op.drop_table('enrolments')
