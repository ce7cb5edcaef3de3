"""One-time download links: e-mailed to a person, or fetched once by a router.

Revision ID: 0009_download_links
Revises: 0008_user_accounts
"""

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = '0009_download_links'
down_revision = '0008_user_accounts'
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
