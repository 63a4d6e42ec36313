"""members' data keys move out of this database into the brand's key store (privacy/keystore.py),
and a pending enrolment no longer carries its key

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 04:00:00
"""
import json

from alembic import context, op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    from privacy.vault import WrappedKey

    bind = op.get_bind()
    keys = bind.execute(sa.text("SELECT m.member_ref, d.record FROM data_keys d JOIN members m ON m.id = d.member_id")).all()
    pending = bind.execute(sa.text("SELECT id, member_ref, sealed FROM enrolments")).all()
    moving = [(ref, json.loads(record)) for ref, record in keys]
    moving += [(ref, json.loads(sealed)["key"]) for _, ref, sealed in pending if "key" in json.loads(sealed)]
    if moving:
        store = context.config.attributes.get("keystore")
        if store is None:
            raise RuntimeError("data keys to move into the key store: start the gateway once (it migrates with its keys directory)")
        store.put_many([(ref, WrappedKey.from_record(record)) for ref, record in moving])
    for id_, _, sealed in pending:
        fields = json.loads(sealed)
        if "key" in fields:
            del fields["key"]
            bind.execute(sa.text("UPDATE enrolments SET sealed = :sealed WHERE id = :id"), {"sealed": json.dumps(fields), "id": id_})
    op.drop_table('data_keys')


def downgrade() -> None:
    # The table comes back empty: the keys stay in the key store, out of this database's files.
    op.create_table('data_keys',
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kek_id', sa.String(length=64), nullable=False),
    sa.Column('record', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['members.id'], ),
    sa.PrimaryKeyConstraint('member_id')
    )
