"""Tenant subnets and the free list of router addresses returned by revocation."""

from __future__ import annotations

from datetime import datetime
from ipaddress import IPv4Network

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from portal.extensions import db
from portal.types import UTCDateTime, utcnow


class TenantSubnet(db.Model):
    """A tenant's subnet. `next_host` counts up through never-used hosts; freed ones go to FreeAddress."""

    __tablename__ = "tenant_subnets"

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), unique=True)
    hub_id: Mapped[int] = mapped_column(ForeignKey("hubs.id"), index=True)
    network: Mapped[str] = mapped_column(String(18), unique=True)
    next_host: Mapped[int]
    # Whether the hub has its address and firewall rules for this subnet (set by the hub's bootstrap).
    on_hub: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    @property
    def ip_network(self) -> IPv4Network:
        return IPv4Network(self.network)


class FreeAddress(db.Model):
    """A host index below `next_host` that is free again; the lowest is handed out first."""

    __tablename__ = "free_addresses"

    subnet_id: Mapped[int] = mapped_column(ForeignKey("tenant_subnets.id"), primary_key=True)
    host_index: Mapped[int] = mapped_column(primary_key=True)
