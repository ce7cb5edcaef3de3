"""Staff looking at a tenant's pages: reason, time limit, read-only unless changes were asked for.

Revision ID: 0006_impersonations
Revises: 0005_login_sessions
"""

import sqlalchemy as sa
from alembic import op

revision = '0006_impersonations'
down_revision = '0005_login_sessions'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('impersonations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('staff_id', sa.Integer(), nullable=False),
    sa.Column('login_session_id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('reason', sa.String(length=500), nullable=False),
    sa.Column('changes_reason', sa.String(length=500), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('end_reason', sa.String(length=40), nullable=True),
    sa.ForeignKeyConstraint(['login_session_id'], ['login_sessions.id'],
                            name=op.f('fk_impersonations_login_session_id_login_sessions')),
    sa.ForeignKeyConstraint(['staff_id'], ['users.id'], name=op.f('fk_impersonations_staff_id_users')),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_impersonations_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_impersonations'))
    )
    op.create_index(op.f('ix_impersonations_login_session_id'), 'impersonations', ['login_session_id'], unique=False)
    op.create_index(op.f('ix_impersonations_staff_id'), 'impersonations', ['staff_id'], unique=False)
    op.create_index(op.f('ix_impersonations_tenant_id'), 'impersonations', ['tenant_id'], unique=False)


def downgrade():
    op.drop_index(op.f('ix_impersonations_tenant_id'), table_name='impersonations')
    op.drop_index(op.f('ix_impersonations_staff_id'), table_name='impersonations')
    op.drop_index(op.f('ix_impersonations_login_session_id'), table_name='impersonations')
    op.drop_table('impersonations')
