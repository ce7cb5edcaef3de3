"""Router imports from CSV files: one row per committed import, and the routers each created.

Revision ID: 0013_router_imports
Revises: 0012_router_api_access
"""

import sqlalchemy as sa
from alembic import op

revision = '0013_router_imports'
down_revision = '0012_router_api_access'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('router_imports',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('created_by_label', sa.String(length=254), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('row_count', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['created_by'], ['users.id'], name=op.f('fk_router_imports_created_by_users')),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_router_imports_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_router_imports'))
    )
    op.create_index(op.f('ix_router_imports_tenant_id'), 'router_imports', ['tenant_id'], unique=False)
    op.create_table('router_import_routers',
    sa.Column('import_id', sa.Integer(), nullable=False),
    sa.Column('router_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['import_id'], ['router_imports.id'],
                            name=op.f('fk_router_import_routers_import_id_router_imports')),
    sa.ForeignKeyConstraint(['router_id'], ['routers.id'], name=op.f('fk_router_import_routers_router_id_routers')),
    sa.PrimaryKeyConstraint('import_id', 'router_id', name=op.f('pk_router_import_routers')),
    sa.UniqueConstraint('router_id', name=op.f('uq_router_import_routers_router_id'))
    )


def downgrade():
    op.drop_table('router_import_routers')
    op.drop_index(op.f('ix_router_imports_tenant_id'), table_name='router_imports')
    op.drop_table('router_imports')
