"""Per-tenant API tokens and idempotency keys for the JSON API.

Revision ID: 0010_api_tokens
Revises: 0009_download_links
"""

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = '0010_api_tokens'
down_revision = '0009_download_links'
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
