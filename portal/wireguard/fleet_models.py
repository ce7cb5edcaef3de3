"""Router imports: one row per CSV import that was committed, and which routers it created."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from portal.extensions import db
from portal.types import UTCDateTime, utcnow


class RouterImport(db.Model):
    """A batch of routers added from one CSV file, all in one transaction (so never a partial one)."""

    __tablename__ = "router_imports"

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))  # None: a command or a bench
    created_by_label: Mapped[str] = mapped_column(String(254))  # as the audit log names the actor
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    row_count: Mapped[int]


class RouterImportItem(db.Model):
    """A router an import created (a router is created once, so it belongs to one import at most)."""

    __tablename__ = "router_import_routers"

    import_id: Mapped[int] = mapped_column(ForeignKey("router_imports.id"), primary_key=True)
    router_id: Mapped[int] = mapped_column(ForeignKey("routers.id"), primary_key=True, unique=True)
