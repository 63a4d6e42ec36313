"""each brand's personal model of a released global model

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 06:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'personal_models',
        sa.Column('global_sha256', sa.String(64), primary_key=True),
        sa.Column('task', sa.String(16), nullable=False),
        sa.Column('choice', sa.String(32), nullable=False),
        sa.Column('model', sa.LargeBinary(), nullable=False),
        sa.Column('model_sha256', sa.String(64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table('personal_models')
