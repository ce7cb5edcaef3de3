"""Audit log indexes for per-target history and filters.

Revision ID: 0015_audit_indexes
Revises: 0014_fleet_samples
"""
from alembic import op

revision = '0015_audit_indexes'
down_revision = '0014_fleet_samples'
branch_labels = None
depends_on = None

INDEXES = {
    'ix_audit_events_tenant_id_id': ['tenant_id', 'id'],
    'ix_audit_events_tenant_target': ['tenant_id', 'target_type', 'target_id', 'id'],
    'ix_audit_events_tenant_action': ['tenant_id', 'action', 'id'],
    'ix_audit_events_tenant_actor': ['tenant_id', 'actor_label', 'id'],
    'ix_audit_events_tenant_created': ['tenant_id', 'created_at'],
}


def upgrade():
    # Plain CREATE INDEX, not batch_alter_table: on SQLite a batch would copy the table, and its
    # append-only triggers with it.
    for name, columns in INDEXES.items():
        op.create_index(name, 'audit_events', columns)
    op.drop_index('ix_audit_events_tenant_id', table_name='audit_events')  # (tenant_id, id) covers it


def downgrade():
    op.create_index('ix_audit_events_tenant_id', 'audit_events', ['tenant_id'])
    for name in reversed(INDEXES):
        op.drop_index(name, table_name='audit_events')
