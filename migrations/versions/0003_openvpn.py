"""OpenVPN servers and tenants' OpenVPN clients.

Revision ID: 0003_openvpn
Revises: 0002_hubs
Create Date: 2026-11-25 18:24:43.312618

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = '0003_openvpn'
down_revision = '0002_hubs'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('openvpn_servers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('remote_host', sa.String(length=253), nullable=False),
    sa.Column('remote_port', sa.Integer(), nullable=False),
    sa.Column('protocol', sa.String(length=3), nullable=False),
    sa.Column('base_dir', sa.String(length=200), nullable=False),
    sa.Column('network', sa.String(length=15), nullable=False),
    sa.Column('netmask', sa.String(length=15), nullable=False),
    sa.Column('management_port', sa.Integer(), nullable=False),
    sa.Column('driver', sa.String(length=20), nullable=False),
    sa.Column('accepts_new_clients', sa.Boolean(), nullable=False),
    sa.Column('ssh_host', sa.String(length=253), nullable=True),
    sa.Column('ssh_port', sa.Integer(), nullable=False),
    sa.Column('ssh_user', sa.String(length=32), nullable=False),
    sa.Column('ssh_host_key', sa.Text(), nullable=True),
    sa.Column('ssh_private_key', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_polled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_poll_error', sa.Text(), nullable=True),
    sa.Column('last_bootstrapped_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_bootstrap_result', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_openvpn_servers')),
    sa.UniqueConstraint('name', name=op.f('uq_openvpn_servers_name'))
    )
    op.create_table('vpn_clients',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('server_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('activated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('serial', sa.String(length=64), nullable=True),
    sa.Column('not_after', sa.DateTime(timezone=True), nullable=True),
    sa.Column('bundle', sa.Text(), nullable=True),
    sa.Column('connected', sa.Boolean(), nullable=False),
    sa.Column('real_address', sa.String(length=64), nullable=True),
    sa.Column('virtual_address', sa.String(length=45), nullable=True),
    sa.Column('bytes_received', sa.BigInteger(), nullable=False),
    sa.Column('bytes_sent', sa.BigInteger(), nullable=False),
    sa.Column('connected_since', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('pending', 'provisioning', 'active', 'failed', 'revoking', 'revoked')", name=op.f('ck_vpn_clients_status')),
    sa.ForeignKeyConstraint(['server_id'], ['openvpn_servers.id'], name=op.f('fk_vpn_clients_server_id_openvpn_servers')),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_vpn_clients_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_vpn_clients'))
    )
    with op.batch_alter_table('vpn_clients', schema=None) as batch_op:
        batch_op.create_index('ix_vpn_clients_status_updated', ['status', 'updated_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_vpn_clients_tenant_id'), ['tenant_id'], unique=False)
        # A certificate name is unique per server regardless of case, over all statuses (revoked ones too).
        batch_op.create_index('uq_vpn_clients_server_id_lower_name', ['server_id', sa.text('lower(name)')],
                              unique=True)


def downgrade():
    with op.batch_alter_table('vpn_clients', schema=None) as batch_op:
        batch_op.drop_index('uq_vpn_clients_server_id_lower_name')
        batch_op.drop_index(batch_op.f('ix_vpn_clients_tenant_id'))
        batch_op.drop_index('ix_vpn_clients_status_updated')

    op.drop_table('vpn_clients')
    op.drop_table('openvpn_servers')
