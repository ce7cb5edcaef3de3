"""Indexes for pages that must not grow with the tenant: the OpenVPN clients list (newest first) and the
dashboard's configuration counts (per status; on PostgreSQL the hub and last handshake ride along, so the counts
read the index alone).

Revision ID: 0017_list_indexes
Revises: 0016_router_indexes
"""

from alembic import op

revision = '0017_list_indexes'
down_revision = '0016_router_indexes'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("vpn_clients") as batch_op:
        batch_op.create_index("ix_vpn_clients_tenant_created", ["tenant_id", "created_at", "id"], unique=False)
    with op.batch_alter_table("vpn_configurations") as batch_op:
        batch_op.create_index("ix_vpn_configurations_tenant_status", ["tenant_id", "status"], unique=False,
                              postgresql_include=["hub_id", "last_handshake_at"])


def downgrade():
    with op.batch_alter_table("vpn_configurations") as batch_op:
        batch_op.drop_index("ix_vpn_configurations_tenant_status")
    with op.batch_alter_table("vpn_clients") as batch_op:
        batch_op.drop_index("ix_vpn_clients_tenant_created")
