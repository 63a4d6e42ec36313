"""the programme (earn rules, tiers, campaigns) versioned in the database

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 03:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'programme_versions',
        sa.Column('version', sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column('document', sa.Text(), nullable=False),
        sa.Column('actor', sa.String(64), nullable=False),
        sa.Column('note', sa.String(200), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table('programme_versions')
