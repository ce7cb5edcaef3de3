"""Rows that failed transiently wait for their retry time in the database (no RQ scheduler).

Revision ID: 0004_retry_at
Revises: 0003_openvpn
"""

import sqlalchemy as sa
from alembic import op

revision = '0004_retry_at'
down_revision = '0003_openvpn'
branch_labels = None
depends_on = None

TABLES = ('vpn_configurations', 'vpn_clients')


def upgrade():
    for table in TABLES:
        op.add_column(table, sa.Column('retry_at', sa.DateTime(timezone=True), nullable=True))


def downgrade():
    for table in TABLES:
        op.drop_column(table, 'retry_at')
