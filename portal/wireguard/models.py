"""WireGuard hubs, tenants' routers, and each router's configurations (one WireGuard peer each)."""

from __future__ import annotations

import enum
from datetime import datetime, timedelta

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String, Text, func, text, true
from sqlalchemy.orm import Mapped, column_property, mapped_column, relationship, undefer_group

from portal.crypto import EncryptedText
from portal.extensions import db
from portal.ipam.models import TenantSubnet
from portal.lifecycle import Lifecycle
from portal.remote import ManagedHost
from portal.types import UTCDateTime, utcnow

ONLINE_WITHIN = timedelta(seconds=180)  # WireGuard rehandshakes every 2 minutes while traffic flows


class Hub(ManagedHost, db.Model):
    """A WireGuard server. Its address in each tenant subnet is that subnet's first host.

    `driver` says how the portal reaches it: `none` (not managed), `ssh` (commands over SSH with a pinned
    host key) or `local` (commands on this machine, for a portal installed on the hub itself).
    """

    __tablename__ = "hubs"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    endpoint_host: Mapped[str] = mapped_column(String(253))
    endpoint_port: Mapped[int]
    interface: Mapped[str] = mapped_column(String(15))
    public_key: Mapped[str] = mapped_column(String(44))
    private_key: Mapped[str | None] = mapped_column(EncryptedText)
    driver: Mapped[str] = mapped_column(String(20), default="none")
    accepts_new_tenants: Mapped[bool] = mapped_column(default=True)  # off to drain a hub before retiring it
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_reconciled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_reconcile_result: Mapped[str | None] = mapped_column(Text)

    @property
    def managed(self) -> bool:
        return self.driver != "none"


UNIQUE_NAME_INDEX = "uq_routers_tenant_id_lower_name"
TRIGRAM_INDEX = "ix_routers_lower_name_trgm"
KIND = "configuration"  # what live hints call a VpnConfiguration (the prefix of its audit actions)
KEYS = "keys"  # the deferred group of a configuration's secret keys


class Router(db.Model):
    """A tenant's MikroTik device. It outlives its configurations."""

    __tablename__ = "routers"
    # Names are unique per tenant regardless of case; the index also serves the name check.
    # On PostgreSQL a trigram index serves the list's search, `lower(name) LIKE '%term%'` (migration 0016 creates
    # it there only; SQLite has no such index).
    __table_args__ = (Index(UNIQUE_NAME_INDEX, "tenant_id", func.lower(text("name")), unique=True),
                      Index(TRIGRAM_INDEX, func.lower(text("name")).label("lower_name"), postgresql_using="gin",
                            postgresql_ops={"lower_name": "gin_trgm_ops"}))

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    name: Mapped[str] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # RouterOS API access, optional (portal.routeros). The password is key material: encrypted at rest, never
    # shown, never audited. The TLS certificate's SHA-256 is pinned the first time a login over TLS succeeds.
    api_address: Mapped[str | None] = mapped_column(String(255))
    api_port: Mapped[int] = mapped_column(default=8729, server_default=text("8729"))
    api_tls: Mapped[bool] = mapped_column(default=True, server_default=true())
    api_username: Mapped[str | None] = mapped_column(String(64))
    api_password: Mapped[str | None] = mapped_column(EncryptedText)
    api_fingerprint: Mapped[str | None] = mapped_column(String(95))  # "AB:CD:..." (32 bytes)
    # What the router said when last asked (Test connection, or the facts poll), and why it did not answer.
    api_identity: Mapped[str | None] = mapped_column(String(255))
    api_version: Mapped[str | None] = mapped_column(String(64))
    api_board: Mapped[str | None] = mapped_column(String(64))
    api_uptime: Mapped[str | None] = mapped_column(String(32))
    api_peer_state: Mapped[str | None] = mapped_column(String(255))  # the router's own view of its hub peer
    api_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    api_error: Mapped[str | None] = mapped_column(Text)

    configurations: Mapped[list[VpnConfiguration]] = relationship(
        back_populates="router", order_by="VpnConfiguration.id.desc()"
    )

    @property
    def has_api_access(self) -> bool:
        """The portal may talk to this router over the RouterOS API (an address, a user and a password are set)."""
        return bool(self.api_address and self.api_username) and self.api_password is not None

    @property
    def current_configuration(self) -> VpnConfiguration | None:
        """The live configuration, else the newest revoked one."""
        return next((c for c in self.configurations if c.is_live), None) or next(iter(self.configurations), None)


class Status(enum.StrEnum):
    PENDING = "pending"
    PROVISIONING = "provisioning"
    ACTIVE = "active"
    FAILED = "failed"
    REVOKING = "revoking"
    REVOKED = "revoked"
    ROTATING = "rotating"


LIVE_ONLY = text("status <> 'revoked'")
ROUTER_INDEX = "ix_vpn_configurations_router_id"


class VpnConfiguration(Lifecycle, db.Model):
    """One WireGuard peer of a router: its address, keys and provisioning state.

    `attempt` is the fencing token: each claim by a worker increments it, and every later write of that
    worker is conditional on it, so a stale worker's writes change nothing.
    """

    __tablename__ = "vpn_configurations"
    IN_FLIGHT = (Status.PENDING, Status.PROVISIONING, Status.REVOKING, Status.ROTATING)  # a worker must act
    REVOCABLE = (Status.PENDING, Status.FAILED, Status.ACTIVE, Status.ROTATING)
    __table_args__ = (
        CheckConstraint(f"status IN ({', '.join(repr(s.value) for s in Status)})", name="status"),
        # Among configurations that are not revoked: one address per tenant, one per router.
        Index("uq_vpn_configurations_live_address", "subnet_id", "host_index", unique=True,
              sqlite_where=LIVE_ONLY, postgresql_where=LIVE_ONLY),
        Index("uq_vpn_configurations_live_router", "router_id", unique=True,
              sqlite_where=LIVE_ONLY, postgresql_where=LIVE_ONLY),
        Index("ix_vpn_configurations_status_updated", "status", "updated_at"),
        # A router's configurations (loading them for a page of routers, the list's status filters, deleting).
        Index(ROUTER_INDEX, "router_id"),
        # The dashboard's counts per status, and of those on a managed hub and online: read from the index alone.
        Index("ix_vpn_configurations_tenant_status", "tenant_id", "status",
              postgresql_include=["hub_id", "last_handshake_at"]),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    router_id: Mapped[int] = mapped_column(ForeignKey("routers.id"))
    hub_id: Mapped[int] = mapped_column(ForeignKey("hubs.id"))
    subnet_id: Mapped[int] = mapped_column(ForeignKey("tenant_subnets.id"))
    host_index: Mapped[int]
    address: Mapped[str] = mapped_column(String(15))
    public_key: Mapped[str] = mapped_column(String(44))
    # The secret keys are decrypted only where a file or a hub needs them (loaded with `WITH_KEYS`), not for every
    # row of a list; whether there is a private key is known without them.
    private_key: Mapped[str | None] = mapped_column(EncryptedText, deferred=True, deferred_group=KEYS)
    holds_private_key: Mapped[bool] = column_property(private_key.column.is_not(None))
    preshared_key: Mapped[str | None] = mapped_column(EncryptedText, deferred=True, deferred_group=KEYS)
    # Key rotation: the new keys wait here until the hub holds the new peer.
    next_public_key: Mapped[str | None] = mapped_column(String(44))
    next_private_key: Mapped[str | None] = mapped_column(EncryptedText, deferred=True, deferred_group=KEYS)
    next_preshared_key: Mapped[str | None] = mapped_column(EncryptedText, deferred=True, deferred_group=KEYS)
    # What the hub's monitor saw last. rx/tx are totals kept across hub counter resets; hub_rx/hub_tx
    # are the hub's own counters at the last poll, to tell growth from a reset.
    last_handshake_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    endpoint_seen: Mapped[str | None] = mapped_column(String(64))
    rx_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    tx_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    hub_rx_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    hub_tx_bytes: Mapped[int] = mapped_column(BigInteger, default=0)

    router: Mapped[Router] = relationship(back_populates="configurations")
    hub: Mapped[Hub] = relationship()
    subnet: Mapped[TenantSubnet] = relationship()

    @property
    def is_live(self) -> bool:
        return self.status != Status.REVOKED

    @property
    def on_hub(self) -> bool:
        """Its peer is on the hub (also while a rotation swaps in the new keys): handshakes and traffic count."""
        return self.status in (Status.ACTIVE, Status.ROTATING)

    @property
    def downloadable(self) -> bool:
        """Its files are offered: only once active (a pending one may never reach the hub)."""
        return self.active and self.has_keys

    @property
    def has_keys(self) -> bool:
        return self.status != Status.REVOKED and bool(self.holds_private_key)

    def online(self, now: datetime) -> bool:
        return (self.status == Status.ACTIVE and self.last_handshake_at is not None
                and now - self.last_handshake_at <= ONLINE_WITHIN)


WITH_KEYS = undefer_group(KEYS)  # the loader option for configurations whose keys will be read


class TrafficSample(db.Model):
    """A configuration's rx/tx totals at one poll, for charts: recent ones dense, older ones thinned."""

    __tablename__ = "traffic_samples"
    __table_args__ = (Index("ix_traffic_samples_configuration_taken", "configuration_id", "taken_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    configuration_id: Mapped[int] = mapped_column(ForeignKey("vpn_configurations.id"))
    taken_at: Mapped[datetime] = mapped_column(UTCDateTime)
    rx_bytes: Mapped[int] = mapped_column(BigInteger)
    tx_bytes: Mapped[int] = mapped_column(BigInteger)
