"""One-time download links: e-mailed to a person, or fetched once by a router.

Revision ID: 0009_download_links
Revises: 0008_user_accounts
"""

import sqlalchemy as sa
from alembic import op

revision = '0009_download_links'
down_revision = '0008_user_accounts'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('download_links',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('configuration_id', sa.Integer(), nullable=True),
    sa.Column('client_id', sa.Integer(), nullable=True),
    sa.Column('file_format', sa.String(length=8), nullable=False),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('recipient', sa.String(length=254), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('used_ip', sa.String(length=45), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_reason', sa.String(length=100), nullable=True),
    sa.CheckConstraint("kind IN ('email', 'router_fetch')", name=op.f('ck_download_links_kind')),
    sa.CheckConstraint("(configuration_id IS NOT NULL AND client_id IS NULL AND file_format IN ('rsc', 'conf')) "
                       "OR (configuration_id IS NULL AND client_id IS NOT NULL AND file_format = 'ovpn')",
                       name=op.f('ck_download_links_target')),
    sa.CheckConstraint("kind = 'email' OR file_format = 'rsc'", name=op.f('ck_download_links_router_fetch_rsc')),
    sa.CheckConstraint("kind <> 'email' OR recipient IS NOT NULL", name=op.f('ck_download_links_email_recipient')),
    sa.ForeignKeyConstraint(['client_id'], ['vpn_clients.id'], name=op.f('fk_download_links_client_id_vpn_clients')),
    sa.ForeignKeyConstraint(['configuration_id'], ['vpn_configurations.id'],
                            name=op.f('fk_download_links_configuration_id_vpn_configurations')),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], name=op.f('fk_download_links_created_by_id_users')),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_download_links_tenant_id_tenants')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_download_links')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_download_links_token_hash'))
    )
    op.create_index(op.f('ix_download_links_tenant_id'), 'download_links', ['tenant_id'], unique=False)
    op.create_index(op.f('ix_download_links_configuration_id'), 'download_links', ['configuration_id'], unique=False)
    op.create_index(op.f('ix_download_links_client_id'), 'download_links', ['client_id'], unique=False)


def downgrade():
    op.drop_index(op.f('ix_download_links_client_id'), table_name='download_links')
    op.drop_index(op.f('ix_download_links_configuration_id'), table_name='download_links')
    op.drop_index(op.f('ix_download_links_tenant_id'), table_name='download_links')
    op.drop_table('download_links')
