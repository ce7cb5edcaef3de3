"""The append-only, hash-chained audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from portal.extensions import db
from portal.types import UTCDateTime

GENESIS_HASH = "0" * 64


class AuditEvent(db.Model):
    """One audited action. Rows are never updated or deleted (triggers enforce it)."""

    __tablename__ = "audit_events"
    # A page of the log is newest first within one tenant, so the filter indexes end in id: a filtered page is
    # one index range read backwards, and a history of a few targets reads only their events. The time index
    # turns a time range into an id range (`portal.audit.service._first_id_at`).
    __table_args__ = (
        Index("ix_audit_events_tenant_id_id", "tenant_id", "id"),
        Index("ix_audit_events_tenant_target", "tenant_id", "target_type", "target_id", "id"),
        Index("ix_audit_events_tenant_action", "tenant_id", "action", "id"),
        Index("ix_audit_events_tenant_actor", "tenant_id", "actor_label", "id"),
        Index("ix_audit_events_tenant_created", "tenant_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor_id: Mapped[int | None]
    actor_label: Mapped[str] = mapped_column(String(254))
    impersonator_id: Mapped[int | None]
    tenant_id: Mapped[int | None]
    action: Mapped[str] = mapped_column(String(80))
    target_type: Mapped[str | None] = mapped_column(String(40))
    target_id: Mapped[int | None]
    request_id: Mapped[str | None] = mapped_column(String(64))
    ip: Mapped[str | None] = mapped_column(String(45))
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditHead(db.Model):
    """The single row holding the newest event's hash: appending locks it, so the chain never forks."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(primary_key=True)
    last_hash: Mapped[str] = mapped_column(String(64))
