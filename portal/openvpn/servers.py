"""OpenVPN servers: settings, bootstrap, the server new clients go to, and what monitoring reads of them.

A server's state is built by its own idempotent scripts (`portal.openvpn.drivers`); the portal keeps its
settings and the outcome of the last bootstrap and poll.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from ipaddress import IPv4Address, IPv4Network

from sqlalchemy import func, select

from portal import live
from portal.audit.service import Actor, record
from portal.errors import DomainError, FieldError
from portal.extensions import db
from portal.openvpn.drivers import Session, check_base_dir, driver_for
from portal.openvpn.models import DRIVERS, KIND, PROTOCOLS, OpenVpnServer, Status, VpnClient
from portal.remote import HOST_NAME, SshSettings
from portal.types import utcnow

SERVER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}")


def any_server_open() -> bool:
    """Whether a new client could be added now (some server takes new clients)."""
    return db.session.scalar(select(OpenVpnServer.id).where(OpenVpnServer.accepts_new_clients).limit(1)) is not None


def default_server() -> OpenVpnServer:
    """The server new clients go to: the one open to new clients with the fewest live clients."""
    live = func.count(VpnClient.id)
    server = db.session.scalar(
        select(OpenVpnServer)
        .outerjoin(VpnClient, (VpnClient.server_id == OpenVpnServer.id) & (VpnClient.status != Status.REVOKED))
        .where(OpenVpnServer.accepts_new_clients).group_by(OpenVpnServer.id)
        .order_by(live, OpenVpnServer.id).limit(1))
    if server is None:
        raise DomainError("No OpenVPN server takes new clients yet; ask a platform admin to add one.")
    return server


def servers_with_client_counts() -> list[tuple[OpenVpnServer, int]]:
    rows = db.session.execute(
        select(OpenVpnServer, func.count(VpnClient.id))
        .outerjoin(VpnClient, (VpnClient.server_id == OpenVpnServer.id) & (VpnClient.status != Status.REVOKED))
        .group_by(OpenVpnServer.id).order_by(OpenVpnServer.name)).all()
    return [(server, clients) for server, clients in rows]


def all_servers() -> list[OpenVpnServer]:
    return list(db.session.scalars(select(OpenVpnServer).order_by(OpenVpnServer.id)))


def server_named(name: str) -> OpenVpnServer | None:
    return db.session.scalar(select(OpenVpnServer).where(OpenVpnServer.name == name))


@dataclass(kw_only=True)
class ServerSettings(SshSettings):
    """What a platform admin enters for an OpenVPN server (validated by `save_server`)."""

    name: str
    remote_host: str
    remote_port: int = 1194
    protocol: str = "udp"
    base_dir: str = "/etc/openvpn/portal"
    network: str = "10.8.0.0"
    netmask: str = "255.255.255.0"
    management_port: int = 7505
    accepts_new_clients: bool = True


def save_server(actor: Actor, settings: ServerSettings, server: OpenVpnServer | None = None) -> OpenVpnServer:
    """Create a server, or update one; the audit row names what changed but never a key."""
    _validate_server(settings, server)
    creating = server is None
    if creating:
        server = OpenVpnServer(name=settings.name)
        db.session.add(server)
    for column in ("name", "remote_host", "remote_port", "protocol", "base_dir", "network", "netmask",
                   "management_port", "driver", "accepts_new_clients"):
        setattr(server, column, getattr(settings, column))
    ssh_details = settings.apply_ssh(server)
    db.session.flush()
    record("openvpn_server.created" if creating else "openvpn_server.updated", actor, tenant_id=None, target=server,
           details={"name": server.name, "driver": server.driver, "protocol": server.protocol,
                    "remote": f"{server.remote_host}:{server.remote_port}", "base_dir": server.base_dir,
                    "network": f"{server.network}/{server.netmask}", **ssh_details})
    return server


def _validate_server(settings: ServerSettings, server: OpenVpnServer | None) -> None:
    settings.name, settings.remote_host = settings.name.strip(), settings.remote_host.strip()
    settings.base_dir = settings.base_dir.strip()
    if not SERVER_NAME.fullmatch(settings.name):
        raise FieldError("name", "1 to 64 letters, digits, spaces, dots, dashes or underscores.")
    if not HOST_NAME.fullmatch(settings.remote_host):
        raise FieldError("remote_host", "A host name or an IP address.")
    for field in ("remote_port", "management_port"):
        if not 1 <= getattr(settings, field) <= 65535:
            raise FieldError(field, "Ports are 1 to 65535.")
    if settings.protocol not in PROTOCOLS:
        raise FieldError("protocol", f"One of {', '.join(PROTOCOLS)}.")
    if settings.driver not in DRIVERS:
        raise FieldError("driver", f"One of {', '.join(DRIVERS)}.")
    try:
        check_base_dir(settings.base_dir)
    except ValueError as error:
        raise FieldError("base_dir", str(error).capitalize() + ".") from None
    try:
        network = IPv4Network(f"{settings.network.strip()}/{settings.netmask.strip()}")
    except ValueError as error:
        raise FieldError("network", f"Not a network: {error}.") from None
    if network.num_addresses < 4:
        raise FieldError("netmask", "The tunnel network needs room for the server and its clients.")
    settings.network, settings.netmask = str(network.network_address), str(IPv4Address(int(network.netmask)))
    settings.validate_ssh(server, "server")
    taken = db.session.scalar(select(OpenVpnServer.id).where(
        func.lower(OpenVpnServer.name) == settings.name.lower()))
    if taken is not None and (server is None or taken != server.id):
        raise FieldError("name", f"There is already an OpenVPN server named {settings.name!r}.")


def bootstrap_server(actor: Actor, server: OpenVpnServer) -> list[str]:
    """Prepare the server over its runner: PKI, server configuration, the client script. Re-running is a no-op.

    A failure is kept on the server (for its page) and raised.
    """
    try:
        changes = driver_for(server).bootstrap(server)
    except Exception as error:
        server.last_bootstrapped_at, server.last_bootstrap_result = utcnow(), f"failed: {error}"[:500]
        record("openvpn_server.bootstrap.failed", actor, tenant_id=None, target=server,
               details={"error": str(error)[:500], **_script_details(error)})
        raise
    server.last_bootstrapped_at, server.last_bootstrap_result = utcnow(), "; ".join(changes) or "unchanged"
    record("openvpn_server.bootstrapped", actor, tenant_id=None, target=server, details={"changes": changes})
    return changes


def _script_details(error: Exception) -> dict:
    exit_status = getattr(error, "exit_status", None)
    return {"exit_status": exit_status, "stderr": getattr(error, "stderr", "")} if exit_status is not None else {}


def record_status_poll(server: OpenVpnServer, sessions: Sequence[Session], now: datetime) -> list[int]:
    """Store what one `status` says of the server's clients; return the ids of the clients that changed."""
    by_common_name = {session.name: session for session in sessions}
    candidates = db.session.scalars(select(VpnClient).where(
        VpnClient.server_id == server.id,
        (VpnClient.status.in_([Status.ACTIVE, Status.REVOKING])) | VpnClient.connected.is_(True))).all()
    changed = []
    for client in candidates:
        session = by_common_name.get(client.common_name)
        before = (client.connected, client.real_address, client.virtual_address, client.bytes_received,
                  client.bytes_sent, client.connected_since)
        if session is None:
            client.connected = False
        else:
            client.connected, client.last_seen_at = True, now
            client.real_address, client.virtual_address = session.real_address, session.virtual_address
            client.bytes_received, client.bytes_sent = session.bytes_received, session.bytes_sent
            client.connected_since = session.connected_since
        after = (client.connected, client.real_address, client.virtual_address, client.bytes_received,
                 client.bytes_sent, client.connected_since)
        if after != before:
            changed.append(client.id)
            live.monitor_changed(KIND, client.id, client.tenant_id, client.connected)
    server.last_polled_at, server.last_poll_error = now, None
    return changed
