"""One-time download links of a WireGuard configuration's file or an OpenVPN client's profile."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.extensions import db
from portal.openvpn.models import VpnClient
from portal.tenancy.models import Tenant
from portal.types import UTCDateTime, utcnow
from portal.wireguard.models import VpnConfiguration


class LinkKind(enum.StrEnum):
    EMAIL = "email"  # a person opens it from an e-mail and presses Download (a POST uses it)
    ROUTER_FETCH = "router_fetch"  # a router's `/tool fetch` GET uses it


class LinkState(enum.StrEnum):
    OPEN = "open"
    USED = "used"
    EXPIRED = "expired"
    REVOKED = "revoked"


# What each file is, for pages and e-mails.
FILES = {"rsc": "RouterOS script (.rsc)", "conf": "wg-quick config (.conf)", "ovpn": "OpenVPN profile (.ovpn)"}


class DownloadLink(db.Model):
    """A link that downloads one file once, until `expires_at`.

    The link carries a random 32-byte token; only its SHA-256 is kept. It targets a WireGuard configuration (its
    `.rsc` or `.conf`) or an OpenVPN client (its `.ovpn`). Using it is a compare-and-set on `used_at`, so it
    works once however many requests race; revoking the target, or rotating its keys, sets `revoked_at`.
    """

    __tablename__ = "download_links"
    __table_args__ = (
        CheckConstraint("kind IN ('email', 'router_fetch')", name="kind"),
        CheckConstraint("(configuration_id IS NOT NULL AND client_id IS NULL AND file_format IN ('rsc', 'conf')) "
                        "OR (configuration_id IS NULL AND client_id IS NOT NULL AND file_format = 'ovpn')",
                        name="target"),
        CheckConstraint("kind = 'email' OR file_format = 'rsc'", name="router_fetch_rsc"),
        CheckConstraint("kind <> 'email' OR recipient IS NOT NULL", name="email_recipient"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    configuration_id: Mapped[int | None] = mapped_column(ForeignKey("vpn_configurations.id"), index=True)
    client_id: Mapped[int | None] = mapped_column(ForeignKey("vpn_clients.id"), index=True)
    file_format: Mapped[str] = mapped_column(String(8))  # rsc, conf or ovpn
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    recipient: Mapped[str | None] = mapped_column(String(254))  # e-mail links: where it was sent
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    used_ip: Mapped[str | None] = mapped_column(String(45))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_reason: Mapped[str | None] = mapped_column(String(100))

    tenant: Mapped[Tenant] = relationship()
    configuration: Mapped[VpnConfiguration | None] = relationship()
    client: Mapped[VpnClient | None] = relationship()

    def state(self, now: datetime) -> LinkState:
        if self.used_at is not None:
            return LinkState.USED
        if self.revoked_at is not None:
            return LinkState.REVOKED
        if self.expires_at <= now:
            return LinkState.EXPIRED
        return LinkState.OPEN

    @property
    def file_label(self) -> str:
        return FILES[self.file_format]

    @property
    def target_label(self) -> str:
        """"router Branch 7", "OpenVPN client laptop-1"."""
        if self.configuration is not None:
            return f"router {self.configuration.router.name}"
        return f"OpenVPN client {self.client.name}"
