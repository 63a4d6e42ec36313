"""processings relying on consent: training reads and campaign target lists, with the members
they covered and the consent-log entry each relied on (exchanges and redemptions are their own tables)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 05:12:36.729157
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('member_sets',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('digest')
    )
    op.create_table('member_set_entries',
    sa.Column('member_set_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('consent_seq', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], ),
    sa.ForeignKeyConstraint(['member_set_id'], ['member_sets.id'], ),
    sa.PrimaryKeyConstraint('member_set_id', 'member_id'),
    sqlite_with_rowid=False
    )
    op.create_table('processings',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('ref', sa.String(length=100), nullable=False),
    sa.Column('purpose', sa.String(length=32), nullable=False),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('member_set_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.ForeignKeyConstraint(['member_set_id'], ['member_sets.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('processings', schema=None) as batch_op:
        batch_op.create_index('ix_processings_kind', ['kind', 'id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('processings', schema=None) as batch_op:
        batch_op.drop_index('ix_processings_kind')

    op.drop_table('processings')
    op.drop_table('member_set_entries')
    op.drop_table('member_sets')
