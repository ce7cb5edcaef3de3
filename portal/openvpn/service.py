"""OpenVPN clients and servers: creation, revocation, retry, monitoring, and server settings.

Views and jobs call these functions with explicit arguments; they add and flush, and the caller commits
once. Jobs are enqueued by the caller after the commit (see `portal.openvpn.jobs`). Every status change
of a client happens in one function here, so live notifications can be added in one place.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlalchemy import exists, func, select

from portal import live
from portal.audit.service import Actor, record
from portal.errors import Conflict, DomainError
from portal.extensions import db
from portal.lifecycle import claim_row, compare_and_set, finish_row
from portal.links.service import CLIENT_REVOKED, revoke_open_links
from portal.live.reuse import tenant_row_count
from portal.openvpn.models import (
    CLIENT_NAME,
    CLIENT_NAME_RULE,
    KIND,
    RESERVED_NAMES,
    Status,
    VpnClient,
    new_common_name,
)
from portal.openvpn.servers import default_server
from portal.pagination import paginate_from_both_ends

SERVER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}")


def validate_client_name(name: str) -> str:
    name = name.strip()
    if not CLIENT_NAME.fullmatch(name):
        raise DomainError(f"Client names are {CLIENT_NAME_RULE}.")
    if name.lower() in RESERVED_NAMES:
        raise DomainError(f"The name {name!r} is reserved for the server's own certificate.")
    return name


def name_taken(tenant_id: int, name: str) -> bool:
    """Whether the tenant has a client of that name (any case, revoked ones too). Only the tenant's own clients
    count: other tenants' names are never compared, so no answer reveals them."""
    return db.session.scalar(select(exists().where(
        VpnClient.tenant_id == tenant_id, func.lower(VpnClient.name) == name.lower())))


def name_taken_message(name: str) -> str:
    return (f"You already have a client named {name!r}. A client's name cannot be reused, not even after it "
            "is revoked.")


# Servers ----------------------------------------------------------------------------------------

# Creating ---------------------------------------------------------------------------------------

def add_client(actor: Actor, tenant_id: int, name: str) -> VpnClient:
    """A new client (status pending) on the least-loaded server, in the caller's transaction.

    Its certificate gets a common name of its own (`new_common_name`). The unique indexes refuse a concurrent
    twin of the name, and the rare random common name that is taken; `portal.actions.commit` runs this
    again after either, which then says the name is taken, or picks another common name.
    """
    name = validate_client_name(name)
    if name_taken(tenant_id, name):
        raise Conflict(name_taken_message(name))
    server = default_server()
    client = VpnClient(tenant_id=tenant_id, server_id=server.id, name=name,
                       common_name=new_common_name(tenant_id, name), status=Status.PENDING)
    db.session.add(client)
    db.session.flush()
    record("client.created", actor, tenant_id=tenant_id, target=client,
           details={"name": name, "server": server.name, "common_name": client.common_name})
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
    revoke_open_links(actor, client_id=client.id, reason=CLIENT_REVOKED)
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
    """One page of the tenant's clients, newest first (read along the (tenant_id, created_at, id) index, from
    whichever end is nearer)."""
    query = select(VpnClient).where(VpnClient.tenant_id == tenant_id)
    if search:
        escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(VpnClient.name.ilike(f"%{escaped}%", escape="\\"))
    return paginate_from_both_ends(query, (VpnClient.created_at, VpnClient.id), descending=True, page=page,
                                   per_page=per_page, total=None if search else tenant_row_count(VpnClient, tenant_id))


def record_download(actor: Actor, client: VpnClient) -> None:
    record("client.downloaded", actor, tenant_id=client.tenant_id, target=client,
           details={"format": "ovpn", "serial": client.serial})


