"""OpenVPN certificate names unique per server without revealing other tenants' client names.

Revision ID: 0011_openvpn_common_names
Revises: 0010_api_tokens
"""

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = '0011_openvpn_common_names'
down_revision = '0010_api_tokens'
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
