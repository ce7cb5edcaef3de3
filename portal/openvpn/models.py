"""OpenVPN servers and tenants' clients (one certificate each, named by a common name of the portal's)."""

from __future__ import annotations

import base64
import enum
import re
import secrets
from datetime import datetime
from ipaddress import IPv4Network

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, Text, func, text
from sqlalchemy.orm import Mapped, column_property, mapped_column, relationship

from portal.crypto import EncryptedText
from portal.extensions import db
from portal.lifecycle import Lifecycle
from portal.remote import ManagedHost
from portal.types import UTCDateTime, utcnow

# The one rule for client names and for certificate common names (the name a client has on its server). The
# server script checks the same rule and exits 2 on anything else; a name never reaches a shell without passing it.
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


COMMON_NAME_MAX = 64  # X.509's upper bound for a common name, and the script's
_COMMON_NAME_HINT = 40  # characters of the tenant's name kept in a common name, for people reading server logs


def new_common_name(tenant_id: int, name: str) -> str:
    """A fresh certificate common name for the tenant's client `name`: `t<tenant id>-<name, cut>-<8 random>`,
    such as `t12-laptop-1-k3q9x2mz`.

    Unique per server whatever other tenants call their clients (the tenant id and 40 random bits set it apart;
    the unique index on server and common name guarantees it, and the caller retries a collision), it tells
    nothing of other tenants, and it passes `CLIENT_NAME` (so easy-rsa's file names and the script accept it).
    """
    prefix, suffix = f"t{int(tenant_id)}-", "-" + base64.b32encode(secrets.token_bytes(5)).decode().lower()
    hint = name[:max(0, min(_COMMON_NAME_HINT, COMMON_NAME_MAX - len(prefix) - len(suffix)))]
    common_name = f"{prefix}{hint}{suffix}" if hint else f"{prefix.rstrip('-')}{suffix}"
    if not is_client_name(common_name) or len(common_name) > COMMON_NAME_MAX:
        raise ValueError(f"cannot make a common name for {name!r}")
    return common_name


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


UNIQUE_NAME_INDEX = "uq_vpn_clients_tenant_id_lower_name"
UNIQUE_COMMON_NAME_INDEX = "uq_vpn_clients_server_id_lower_common_name"
KIND = "client"  # what live hints call a VpnClient (the prefix of its audit actions)


class VpnClient(Lifecycle, db.Model):
    """A tenant's OpenVPN client: one certificate on one server, and the `.ovpn` credential blocks.

    `name` is the tenant's: unique within the tenant regardless of case and over all statuses (a revoked
    client keeps its name), never compared with other tenants' names, and the name of the download.
    `common_name` is the server's: the certificate's CN, unique per server regardless of case and over all
    statuses (the server's PKI keeps revoked names), made by `new_common_name` so that it reveals nothing of
    other tenants; clients from before it existed kept their name as their common name. The scripts, revocation
    and monitoring know a client only by its common name. `attempt` is the fencing token, as for WireGuard
    configurations: each claim increments it and every later write of that worker is conditional on it.
    """

    __tablename__ = "vpn_clients"
    IN_FLIGHT = (Status.PENDING, Status.PROVISIONING, Status.REVOKING)  # a worker must act
    REVOCABLE = (Status.PENDING, Status.FAILED, Status.ACTIVE)
    __table_args__ = (
        CheckConstraint(f"status IN ({', '.join(repr(s.value) for s in Status)})", name="status"),
        Index(UNIQUE_NAME_INDEX, "tenant_id", func.lower(text("name")), unique=True),
        Index(UNIQUE_COMMON_NAME_INDEX, "server_id", func.lower(text("common_name")), unique=True),
        Index("ix_vpn_clients_status_updated", "status", "updated_at"),
        Index("ix_vpn_clients_tenant_created", "tenant_id", "created_at", "id"),  # the clients list, newest first
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    server_id: Mapped[int] = mapped_column(ForeignKey("openvpn_servers.id"))
    name: Mapped[str] = mapped_column(String(64))
    common_name: Mapped[str] = mapped_column(String(COMMON_NAME_MAX))
    serial: Mapped[str | None] = mapped_column(String(64))
    not_after: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # <ca> <cert> <key> <tls-crypt> blocks: kilobytes to decrypt, so read only to render the .ovpn file
    bundle: Mapped[str | None] = mapped_column(EncryptedText, deferred=True)
    has_bundle: Mapped[bool] = column_property(bundle.column.is_not(None))
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
        return self.status == Status.ACTIVE and bool(self.has_bundle)
