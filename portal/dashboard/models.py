"""Fleet samples: a tenant's routers online and monitored at one time, for the dashboard's chart."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer
from sqlalchemy.orm import Mapped, mapped_column

from portal.extensions import db
from portal.types import UTCDateTime


class FleetSample(db.Model):
    """One per tenant with live configurations per sampling round; recent ones dense, older ones thinned
    (like traffic samples)."""

    __tablename__ = "fleet_samples"
    __table_args__ = (Index("ix_fleet_samples_tenant_taken", "tenant_id", "taken_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    taken_at: Mapped[datetime] = mapped_column(UTCDateTime)
    online: Mapped[int]  # active on a managed hub, with a handshake within ONLINE_WITHIN
    monitored: Mapped[int]  # active on a managed hub
