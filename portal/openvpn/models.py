"""OpenVPN servers and tenants' clients (one certificate, named by its common name, each)."""

from __future__ import annotations

import enum
import re
from datetime import datetime
from ipaddress import IPv4Network

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, Text, func, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from portal.crypto import EncryptedText
from portal.extensions import db
from portal.lifecycle import Lifecycle
from portal.remote import ManagedHost
from portal.types import UTCDateTime, utcnow

# The one rule for client names (the certificate's common name). The server script checks the same rule and
# exits 2 on anything else; a name never reaches a shell without passing it.
CLIENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
CLIENT_NAME_RULE = "1 to 64 characters: letters, digits, dots, dashes and underscores, starting with a letter or digit"

DEFAULT_BASE_DIR = "/etc/openvpn/portal"
DEFAULT_NETWORK = "10.8.0.0"
DEFAULT_NETMASK = "255.255.255.0"
DEFAULT_MANAGEMENT_PORT = 7505
PROTOCOLS = ("udp", "tcp")
DRIVERS = ("ssh", "local")


RESERVED_NAMES = ("server",)  # the server's own certificate


def is_client_name(name: str) -> bool:
    return CLIENT_NAME.fullmatch(name) is not None and name.lower() not in RESERVED_NAMES


class OpenVpnServer(ManagedHost, db.Model):
    """An OpenVPN server with its easy-rsa PKI under `base_dir`, managed through the project's scripts.

    `driver` says how the portal reaches it: `ssh` (pinned host key) or `local` (a portal installed on it).
    """

    __tablename__ = "openvpn_servers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    remote_host: Mapped[str] = mapped_column(String(253))  # what clients connect to
    remote_port: Mapped[int] = mapped_column(default=1194)
    protocol: Mapped[str] = mapped_column(String(3), default="udp")
    base_dir: Mapped[str] = mapped_column(String(200), default=DEFAULT_BASE_DIR)
    network: Mapped[str] = mapped_column(String(15), default=DEFAULT_NETWORK)
    netmask: Mapped[str] = mapped_column(String(15), default=DEFAULT_NETMASK)
    management_port: Mapped[int] = mapped_column(default=DEFAULT_MANAGEMENT_PORT)
    driver: Mapped[str] = mapped_column(String(20), default="ssh")
    accepts_new_clients: Mapped[bool] = mapped_column(default=True)  # off to drain a server
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_bootstrapped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_bootstrap_result: Mapped[str | None] = mapped_column(Text)

    @property
    def tunnel_address(self) -> str:
        """The server's own address in the tunnel: the network's first host (OpenVPN's `server` directive)."""
        return str(next(IPv4Network(f"{self.network}/{self.netmask}").hosts()))


class Status(enum.StrEnum):
    PENDING = "pending"
    PROVISIONING = "provisioning"
    ACTIVE = "active"
    FAILED = "failed"
    REVOKING = "revoking"
    REVOKED = "revoked"


UNIQUE_NAME_INDEX = "uq_vpn_clients_server_id_lower_name"
KIND = "client"  # what live hints call a VpnClient (the prefix of its audit actions)


class VpnClient(Lifecycle, db.Model):
    """A tenant's OpenVPN client: one certificate on one server, and the `.ovpn` credential blocks.

    The name is the certificate's common name, unique per server regardless of case and over all statuses:
    a revoked name stays taken, since the server's PKI keeps it. `attempt` is the fencing token, as for
    WireGuard configurations: each claim increments it and every later write of that worker is
    conditional on it.
    """

    __tablename__ = "vpn_clients"
    IN_FLIGHT = (Status.PENDING, Status.PROVISIONING, Status.REVOKING)  # a worker must act
    REVOCABLE = (Status.PENDING, Status.FAILED, Status.ACTIVE)
    __table_args__ = (
        CheckConstraint(f"status IN ({', '.join(repr(s.value) for s in Status)})", name="status"),
        Index(UNIQUE_NAME_INDEX, "server_id", func.lower(text("name")), unique=True),
        Index("ix_vpn_clients_status_updated", "status", "updated_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    server_id: Mapped[int] = mapped_column(ForeignKey("openvpn_servers.id"))
    name: Mapped[str] = mapped_column(String(64))
    serial: Mapped[str | None] = mapped_column(String(64))
    not_after: Mapped[datetime | None] = mapped_column(UTCDateTime)
    bundle: Mapped[str | None] = mapped_column(EncryptedText)  # <ca> <cert> <key> <tls-crypt> blocks
    # What the server's monitor saw last (bytes are those of the current or last session).
    connected: Mapped[bool] = mapped_column(default=False)
    real_address: Mapped[str | None] = mapped_column(String(64))
    virtual_address: Mapped[str | None] = mapped_column(String(45))
    bytes_received: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_sent: Mapped[int] = mapped_column(BigInteger, default=0)
    connected_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    server: Mapped[OpenVpnServer] = relationship()

    @property
    def monitored(self) -> bool:
        """The server's sessions say something about it: it holds a certificate, or it is still connected."""
        return self.status in (Status.ACTIVE, Status.REVOKING) or self.connected

    @property
    def downloadable(self) -> bool:
        return self.status == Status.ACTIVE and self.bundle is not None
