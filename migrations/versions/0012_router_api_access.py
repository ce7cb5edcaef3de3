"""RouterOS API access per router: address, port, TLS with a pinned certificate, username, encrypted password, facts.

Revision ID: 0012_router_api_access
Revises: 0011_openvpn_common_names
"""

import sqlalchemy as sa
from alembic import op

revision = '0012_router_api_access'
down_revision = '0011_openvpn_common_names'
branch_labels = None
depends_on = None

IN_FLIGHT = sa.text("status IN ('pending', 'working', 'waiting')")


def upgrade():
    # Plain ALTER TABLE (no batch copy): a batch would have to reflect `routers`, whose expression index on
    # lower(name) SQLite cannot reflect, and would lose it. SQLite adds and drops columns in place.
    for column in (
        sa.Column('api_address', sa.String(length=255), nullable=True),
        sa.Column('api_port', sa.Integer(), nullable=False, server_default=sa.text('8729')),
        sa.Column('api_tls', sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column('api_username', sa.String(length=64), nullable=True),
        sa.Column('api_password', sa.Text(), nullable=True),
        sa.Column('api_fingerprint', sa.String(length=95), nullable=True),
        sa.Column('api_identity', sa.String(length=255), nullable=True),
        sa.Column('api_version', sa.String(length=64), nullable=True),
        sa.Column('api_board', sa.String(length=64), nullable=True),
        sa.Column('api_uptime', sa.String(length=32), nullable=True),
        sa.Column('api_peer_state', sa.String(length=255), nullable=True),
        sa.Column('api_checked_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('api_error', sa.Text(), nullable=True),
    ):
        op.add_column('routers', column)
    op.create_table('router_pushes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('router_id', sa.Integer(), nullable=False),
    sa.Column('configuration_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('step', sa.String(length=16), nullable=False),
    sa.Column('new_public_key', sa.String(length=44), nullable=True),
    sa.Column('keys_sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('handshake_by', sa.DateTime(timezone=True), nullable=True),
    sa.Column('handshake_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('changes', sa.String(length=1000), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('retry_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('activated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('pending', 'working', 'waiting', 'active', 'failed')",
                       name=op.f('ck_router_pushes_status')),
    sa.CheckConstraint("kind IN ('push', 'rotate')", name=op.f('ck_router_pushes_kind')),
    sa.ForeignKeyConstraint(['configuration_id'], ['vpn_configurations.id'],
                            name=op.f('fk_router_pushes_configuration_id_vpn_configurations')),
    sa.ForeignKeyConstraint(['router_id'], ['routers.id'], name=op.f('fk_router_pushes_router_id_routers')),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_router_pushes_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_router_pushes'))
    )
    op.create_index(op.f('ix_router_pushes_tenant_id'), 'router_pushes', ['tenant_id'], unique=False)
    op.create_index('ix_router_pushes_router_id', 'router_pushes', ['router_id'], unique=False)
    op.create_index('ix_router_pushes_status_updated', 'router_pushes', ['status', 'updated_at'], unique=False)
    op.create_index('uq_router_pushes_in_flight_router', 'router_pushes', ['router_id'], unique=True,
                    sqlite_where=IN_FLIGHT, postgresql_where=IN_FLIGHT)


def downgrade():
    op.drop_index('uq_router_pushes_in_flight_router', table_name='router_pushes')
    op.drop_index('ix_router_pushes_status_updated', table_name='router_pushes')
    op.drop_index('ix_router_pushes_router_id', table_name='router_pushes')
    op.drop_index(op.f('ix_router_pushes_tenant_id'), table_name='router_pushes')
    op.drop_table('router_pushes')
    for column in ('api_error', 'api_checked_at', 'api_peer_state', 'api_uptime', 'api_board', 'api_version',
                   'api_identity', 'api_fingerprint', 'api_password', 'api_username', 'api_tls', 'api_port',
                   'api_address'):
        op.drop_column('routers', column)
