"""Tenant fleet samples (routers online over time) for the dashboard chart.

Revision ID: 0014_fleet_samples
Revises: 0013_router_imports
"""

import sqlalchemy as sa
from alembic import op

revision = '0014_fleet_samples'
down_revision = '0013_router_imports'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('fleet_samples',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('taken_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('online', sa.Integer(), nullable=False),
    sa.Column('monitored', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_fleet_samples_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_fleet_samples'))
    )
    op.create_index('ix_fleet_samples_tenant_taken', 'fleet_samples', ['tenant_id', 'taken_at'], unique=False)


def downgrade():
    op.drop_index('ix_fleet_samples_tenant_taken', table_name='fleet_samples')
    op.drop_table('fleet_samples')
