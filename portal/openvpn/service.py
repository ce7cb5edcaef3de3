"""OpenVPN clients and servers: creation, revocation, retry, monitoring, and server settings.

Views and jobs call these functions with explicit arguments; they add and flush, and the caller commits
once. Jobs are enqueued by the caller after the commit (see `portal.openvpn.jobs`). Every status change
of a client happens in one function here, so live notifications can be added in one place.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from ipaddress import IPv4Address, IPv4Network

from sqlalchemy import exists, func, select

from portal import live
from portal.audit.service import Actor, record
from portal.errors import Conflict, DomainError, FieldError
from portal.extensions import db
from portal.lifecycle import claim_row, compare_and_set, finish_row
from portal.openvpn.driver import Session, check_base_dir, driver_for
from portal.openvpn.models import (
    CLIENT_NAME,
    CLIENT_NAME_RULE,
    DRIVERS,
    PROTOCOLS,
    RESERVED_NAMES,
    OpenVpnServer,
    Status,
    VpnClient,
)
from portal.remote import HOST_NAME, SshSettings
from portal.types import utcnow

KIND = "client"  # what live hints call a VpnClient (the prefix of its audit actions)
SERVER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}")


def validate_client_name(name: str) -> str:
    name = name.strip()
    if not CLIENT_NAME.fullmatch(name):
        raise DomainError(f"Client names are {CLIENT_NAME_RULE}.")
    if name.lower() in RESERVED_NAMES:
        raise DomainError(f"The name {name!r} is reserved for the server's own certificate.")
    return name


def name_taken(server_id: int, name: str) -> bool:
    return db.session.scalar(select(exists().where(
        VpnClient.server_id == server_id, func.lower(VpnClient.name) == name.lower())))


def name_taken_message(name: str) -> str:
    return (f"The name {name!r} is already in use on this server. A certificate name cannot be reused, "
            "not even after it is revoked.")


# Servers ----------------------------------------------------------------------------------------

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


# Creating ---------------------------------------------------------------------------------------

def add_client(actor: Actor, tenant_id: int, name: str) -> VpnClient:
    """A new client (status pending) on the least-loaded server, in the caller's transaction."""
    name = validate_client_name(name)
    server = default_server()
    if name_taken(server.id, name):
        raise Conflict(name_taken_message(name))
    client = VpnClient(tenant_id=tenant_id, server_id=server.id, name=name, status=Status.PENDING)
    db.session.add(client)
    db.session.flush()
    record("client.created", actor, tenant_id=tenant_id, target=client,
           details={"name": name, "server": server.name})
    _status_hint(client)
    return client


# Human-initiated transitions --------------------------------------------------------------------

def request_revocation(actor: Actor, client: VpnClient) -> None:
    """Mark the client for revocation (irreversible); a job revokes the certificate on the server."""
    if not compare_and_set(VpnClient, client.id, VpnClient.REVOCABLE, status=Status.REVOKING, last_error=None):
        db.session.refresh(client)
        raise Conflict(_cannot_revoke_reason(client.status))
    db.session.refresh(client)
    record("client.revoke.requested", actor, tenant_id=client.tenant_id, target=client,
           details={"name": client.name, "serial": client.serial})
    _status_hint(client)


def _cannot_revoke_reason(status: str) -> str:
    if status in (Status.REVOKING, Status.REVOKED):
        return "This client is already revoked or being revoked."
    return "This client is being provisioned right now; revoke it once that is done."


def request_retry(actor: Actor, client: VpnClient) -> None:
    """Send a failed client back to provisioning."""
    if not compare_and_set(VpnClient, client.id, (Status.FAILED,), status=Status.PENDING):
        raise Conflict("Only a failed client can be retried.")
    db.session.refresh(client)
    record("client.retry.requested", actor, tenant_id=client.tenant_id, target=client)
    _status_hint(client)


def _status_hint(client: VpnClient) -> None:
    live.status_changed(KIND, client.id, client.tenant_id, client.status)


# Worker-side transitions (fenced by `attempt`) ---------------------------------------------------

def claim(client_id: int, from_states: Sequence[str], to_state: str) -> VpnClient | None:
    return claim_row(VpnClient, client_id, from_states, to_state)


def finish(client_id: int, attempt: int, from_state: str, **values) -> VpnClient | None:
    return finish_row(VpnClient, client_id, attempt, from_state, **values)


# Queries ----------------------------------------------------------------------------------------

def clients_page(tenant_id: int, *, search: str = "", page: int = 1, per_page: int = 25):
    """One page of the tenant's clients, newest first."""
    query = select(VpnClient).where(VpnClient.tenant_id == tenant_id)
    if search:
        escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(VpnClient.name.ilike(f"%{escaped}%", escape="\\"))
    return db.paginate(query.order_by(VpnClient.created_at.desc(), VpnClient.id.desc()), page=page,
                       per_page=per_page, error_out=False)


def record_download(actor: Actor, client: VpnClient) -> None:
    record("client.downloaded", actor, tenant_id=client.tenant_id, target=client,
           details={"format": "ovpn", "serial": client.serial})


# Monitoring -------------------------------------------------------------------------------------

def record_status_poll(server: OpenVpnServer, sessions: Sequence[Session], now: datetime) -> list[int]:
    """Store what one `status` says of the server's clients; return the ids of the clients that changed."""
    by_name = {session.name: session for session in sessions}
    candidates = db.session.scalars(select(VpnClient).where(
        VpnClient.server_id == server.id,
        (VpnClient.status.in_([Status.ACTIVE, Status.REVOKING])) | VpnClient.connected.is_(True))).all()
    changed = []
    for client in candidates:
        session = by_name.get(client.name)
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
