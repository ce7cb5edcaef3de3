"""Router list indexes: case-insensitive name order and search, and a router's configurations.

A router's configurations are found by `router_id` (a page of routers loads them; the status filters and deleting
a router look for them): until now only live ones had an index (the partial unique one). The name order uses the
unique (tenant_id, lower(name)) index of 0001. Search is `lower(name) LIKE '%term%'`: on PostgreSQL a trigram
index serves it (pg_trgm, a trusted extension since PostgreSQL 13); SQLite has no such index and scans the
tenant's routers.

Revision ID: 0016_router_indexes
Revises: 0015_audit_indexes
"""

from alembic import op

revision = '0016_router_indexes'
down_revision = '0015_audit_indexes'
branch_labels = None
depends_on = None

TRIGRAM_INDEX = "ix_routers_lower_name_trgm"
ROUTER_INDEX = "ix_vpn_configurations_router_id"


def upgrade():
    with op.batch_alter_table("vpn_configurations") as batch_op:
        batch_op.create_index(ROUTER_INDEX, ["router_id"], unique=False)
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.execute(f"CREATE INDEX {TRIGRAM_INDEX} ON routers USING gin (lower(name) gin_trgm_ops)")


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP INDEX IF EXISTS {TRIGRAM_INDEX}")  # the extension stays: other objects may use it
    with op.batch_alter_table("vpn_configurations") as batch_op:
        batch_op.drop_index(ROUTER_INDEX)
