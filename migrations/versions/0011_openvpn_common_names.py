"""OpenVPN certificate names unique per server without revealing other tenants' client names.

A client's name becomes the tenant's (unique per tenant, any case); its certificate's common name moves to a
new column, unique per server. Existing clients keep their name as their common name, so their certificates
go on working. A tenant that had two clients of one name on different servers (allowed before) keeps the
older one's name; the others get `-<id>` appended to theirs (not to their common name).

The table is altered without being rebuilt on SQLite (a rebuild drops and recreates it, which rows of other
tables that refer to it would not survive): the new column is added with an empty default, filled, and on
PostgreSQL the default is dropped again (SQLite keeps it; the portal always writes the column).

Downgrading puts each client's common name back into its name (what the older code sends to the server).

Revision ID: 0011_openvpn_common_names
Revises: 0010_api_tokens
"""

from collections import defaultdict

import sqlalchemy as sa
from alembic import op

revision = '0011_openvpn_common_names'
down_revision = '0010_api_tokens'
branch_labels = None
depends_on = None

OLD_INDEX = 'uq_vpn_clients_server_id_lower_name'
NAME_INDEX = 'uq_vpn_clients_tenant_id_lower_name'
COMMON_NAME_INDEX = 'uq_vpn_clients_server_id_lower_common_name'
NAME_MAX = 64

clients = sa.table('vpn_clients', sa.column('id', sa.Integer), sa.column('tenant_id', sa.Integer),
                   sa.column('name', sa.String), sa.column('common_name', sa.String))


def upgrade():
    op.drop_index(OLD_INDEX, table_name='vpn_clients')
    op.add_column('vpn_clients', sa.Column('common_name', sa.String(length=NAME_MAX), nullable=False,
                                           server_default=''))
    op.execute(clients.update().values(common_name=clients.c.name))
    if op.get_bind().dialect.name != 'sqlite':
        op.alter_column('vpn_clients', 'common_name', server_default=None)
    _rename_duplicates_within_tenants()
    op.create_index(NAME_INDEX, 'vpn_clients', ['tenant_id', sa.text('lower(name)')], unique=True)
    op.create_index(COMMON_NAME_INDEX, 'vpn_clients', ['server_id', sa.text('lower(common_name)')], unique=True)


def _rename_duplicates_within_tenants():
    connection = op.get_bind()
    rows = connection.execute(sa.select(clients.c.id, clients.c.tenant_id, clients.c.name)
                              .order_by(clients.c.id)).all()
    names = defaultdict(set)  # tenant id: every name in lower case, to pick new ones that are free
    for _, tenant_id, name in rows:
        names[tenant_id].add(name.lower())
    kept = defaultdict(set)
    for client_id, tenant_id, name in rows:
        if name.lower() not in kept[tenant_id]:
            kept[tenant_id].add(name.lower())
            continue
        new_name = next(candidate for number in range(1, 1000)
                        if (candidate := _with_suffix(name, f"-{client_id}" if number == 1
                                                      else f"-{client_id}-{number}")).lower()
                        not in names[tenant_id])
        names[tenant_id].add(new_name.lower())
        kept[tenant_id].add(new_name.lower())
        connection.execute(clients.update().where(clients.c.id == client_id).values(name=new_name))


def _with_suffix(name, suffix):
    return name[:NAME_MAX - len(suffix)] + suffix


def downgrade():
    op.drop_index(COMMON_NAME_INDEX, table_name='vpn_clients')
    op.drop_index(NAME_INDEX, table_name='vpn_clients')
    op.execute(clients.update().values(name=clients.c.common_name))
    # Both dialects drop a column in place (SQLite since 3.35); no rebuild of the table.
    op.execute('ALTER TABLE vpn_clients DROP COLUMN common_name')
    op.create_index(OLD_INDEX, 'vpn_clients', ['server_id', sa.text('lower(name)')], unique=True)
