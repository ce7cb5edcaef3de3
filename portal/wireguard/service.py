"""Routers and their WireGuard configurations: creation, revocation, retry, and the work jobs do.

Views and jobs call these functions with explicit arguments; they add and flush, and the caller
commits once. Jobs are enqueued by the caller after the commit (see `portal.wireguard.jobs`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from ipaddress import IPv4Network

from flask import current_app
from sqlalchemy import exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from portal import live
from portal.audit.service import Actor, record
from portal.crypto import generate_keypair, generate_preshared_key
from portal.errors import Conflict, DomainError, FieldError
from portal.extensions import db
from portal.ipam import service as ipam
from portal.ipam.models import TenantSubnet
from portal.ipam.pool import host_address, hub_address
from portal.lifecycle import compare_and_set, finish_row
from portal.links.service import CONFIGURATION_REVOKED, KEYS_ROTATED, revoke_open_links
from portal.pagination import paginate
from portal.wireguard.charts import Sample
from portal.wireguard.models import KIND, Hub, Router, Status, TrafficSample, VpnConfiguration
from portal.wireguard.render import PeerConfig

ROUTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}")
ROUTER_NAME_RULE = (
    "1 to 64 characters: letters, digits, spaces, dots, dashes and underscores, starting with a letter or digit"
)
NOTE_MAX = 500
NOTE_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
ALREADY_CONFIGURED = "This router already has a configuration; revoke it before creating a new one."


def validate_router_name(name: str) -> str:
    name = name.strip()
    if not ROUTER_NAME.fullmatch(name):
        raise DomainError(f"Router names are {ROUTER_NAME_RULE}.")
    return name


def name_taken(tenant_id: int, name: str) -> bool:
    return db.session.scalar(
        select(exists().where(Router.tenant_id == tenant_id, func.lower(Router.name) == name.lower())))


# Hubs -------------------------------------------------------------------------------------------

def default_hub() -> Hub:
    """The hub new tenants go to: the least loaded one open to them, or the one described by the settings."""
    hub = db.session.scalar(
        select(Hub).outerjoin(TenantSubnet, TenantSubnet.hub_id == Hub.id).where(Hub.accepts_new_tenants)
        .group_by(Hub.id).order_by(func.count(TenantSubnet.id), Hub.id).limit(1)
    )
    return hub if hub is not None else create_hub_from_settings()


def create_hub_from_settings() -> Hub:
    config = current_app.config
    if not config["PORTAL_HUB_ENDPOINT"] or not config["PORTAL_HUB_PUBLIC_KEY"]:
        raise DomainError("No WireGuard hub is configured: set PORTAL_HUB_ENDPOINT and PORTAL_HUB_PUBLIC_KEY.")
    hub = Hub(name=config["PORTAL_HUB_NAME"], endpoint_host=config["PORTAL_HUB_ENDPOINT"],
              endpoint_port=config["PORTAL_HUB_PORT"], interface=config["PORTAL_HUB_INTERFACE"],
              public_key=config["PORTAL_HUB_PUBLIC_KEY"], driver=config["PORTAL_HUB_DRIVER"])
    try:
        with db.session.begin_nested():
            db.session.add(hub)
    except IntegrityError:  # a concurrent first router created it a moment ago
        return db.session.scalar(select(Hub).where(Hub.name == hub.name))
    return hub


def hubs_with_tenant_counts() -> list[tuple[Hub, int]]:
    rows = db.session.execute(
        select(Hub, func.count(TenantSubnet.id)).outerjoin(TenantSubnet, TenantSubnet.hub_id == Hub.id)
        .group_by(Hub.id).order_by(Hub.name)
    ).all()
    return [(hub, tenants) for hub, tenants in rows]


# Creating ---------------------------------------------------------------------------------------

def validate_note(note: str) -> str:
    """A router's note, stripped: at most NOTE_MAX characters, no control characters but tabs and line breaks
    (PostgreSQL refuses NUL in text; nothing a person types needs the others)."""
    note = note.strip()
    if len(note) > NOTE_MAX:
        raise FieldError("note", f"The note is limited to {NOTE_MAX} characters (this one has {len(note)}).")
    if NOTE_CONTROL.search(note):
        raise FieldError("note", "The note contains a control character; only text, tabs and line breaks.")
    return note


def add_router(actor: Actor, tenant_id: int, name: str, note: str = "") -> Router:
    """A new router and its first configuration (status pending), in the caller's transaction."""
    name, note = validate_router_name(name), validate_note(note)
    if name_taken(tenant_id, name):
        raise Conflict(f"You already have a router named {name!r}.")
    router = Router(tenant_id=tenant_id, name=name, note=note, configurations=[])  # known empty: no lazy load
    db.session.add(router)
    configuration = _new_configuration(router)
    record("router.created", actor, tenant_id=tenant_id, target=router, details={"name": name})
    _record_configuration_created(actor, configuration)
    return router


def add_configuration(actor: Actor, router: Router) -> VpnConfiguration:
    """A fresh configuration (new keys, new address) for a router whose configuration was revoked."""
    live = db.session.scalar(select(VpnConfiguration).where(
        VpnConfiguration.router_id == router.id, VpnConfiguration.status != Status.REVOKED))
    if live is not None:
        raise Conflict(ALREADY_CONFIGURED)
    configuration = _new_configuration(router)
    _record_configuration_created(actor, configuration)
    return configuration


def _new_configuration(router: Router) -> VpnConfiguration:
    """Keys, then an address: the subnet stays locked from allocation to commit, so do the slow part first.

    Callers write their audit events after this (the audit head is the other lock held to commit).
    """
    keys, preshared_key = generate_keypair(), generate_preshared_key()
    subnet = ipam.locked_subnet(router.tenant_id) or ipam.ensure_subnet(router.tenant_id, default_hub().id)
    host_index = ipam.allocate_host(subnet)
    configuration = VpnConfiguration(
        tenant_id=router.tenant_id, router=router, hub_id=subnet.hub_id, subnet_id=subnet.id,
        host_index=host_index, address=str(host_address(subnet.ip_network, host_index)),
        public_key=keys.public, private_key=keys.private, preshared_key=preshared_key, status=Status.PENDING,
    )
    db.session.add(configuration)
    db.session.flush()
    live.status_changed(KIND, configuration.id, router.tenant_id, Status.PENDING, router_id=router.id)
    live.usage_changed(router.tenant_id)
    return configuration


def _record_configuration_created(actor: Actor, configuration: VpnConfiguration) -> None:
    record("configuration.created", actor, tenant_id=configuration.tenant_id, target=configuration,
           details={"router_id": configuration.router_id, "address": configuration.address,
                    "public_key": configuration.public_key, "hub_id": configuration.hub_id})


# Human-initiated transitions --------------------------------------------------------------------

def request_revocation(actor: Actor, configuration: VpnConfiguration) -> None:
    """Mark the configuration for revocation (irreversible); a job removes the peer."""
    moved = compare_and_set(VpnConfiguration, configuration.id, VpnConfiguration.REVOCABLE, status=Status.REVOKING,
                            last_error=None)
    if not moved:
        db.session.refresh(configuration)
        raise Conflict(_cannot_revoke_reason(configuration.status))
    db.session.refresh(configuration)
    record("configuration.revoke.requested", actor, tenant_id=configuration.tenant_id, target=configuration)
    revoke_open_links(actor, configuration_id=configuration.id, reason=CONFIGURATION_REVOKED)
    _status_hint(configuration)


def _cannot_revoke_reason(status: str) -> str:
    if status in (Status.REVOKING, Status.REVOKED):
        return "This configuration is already revoked or being revoked."
    return f"This configuration is {status}; revoke it once that finishes."


def request_rotation(actor: Actor, configuration: VpnConfiguration) -> bool:
    """New keys for an active configuration; a job swaps the peer on the hub, then they become current. True when
    the rotation goes through the router's API instead (the router keeps working throughout)."""
    keys, preshared_key = generate_keypair(), generate_preshared_key()
    moved = compare_and_set(VpnConfiguration, configuration.id, (Status.ACTIVE,), status=Status.ROTATING,
                            last_error=None, next_public_key=keys.public)
    if not moved:
        raise Conflict("Only an active configuration can get new keys.")
    db.session.refresh(configuration)
    configuration.next_private_key, configuration.next_preshared_key = keys.private, preshared_key
    record("configuration.rotate.requested", actor, tenant_id=configuration.tenant_id, target=configuration,
           details={"old_public_key": configuration.public_key, "new_public_key": keys.public})
    revoke_open_links(actor, configuration_id=configuration.id, reason=KEYS_ROTATED)  # they would serve old keys
    _status_hint(configuration)
    # A router the portal reaches over the RouterOS API rotates without losing it: new peer beside the old one,
    # new keys to the router, its handshake, then the old peer goes (portal.routeros.jobs); the batch holds off.
    from portal.routeros.service import take_over_rotation  # late: portal.routeros builds on this module

    return take_over_rotation(actor, configuration)


def request_retry(actor: Actor, configuration: VpnConfiguration) -> None:
    """Send a failed configuration back to provisioning."""
    if not compare_and_set(VpnConfiguration, configuration.id, (Status.FAILED,), status=Status.PENDING):
        raise Conflict("Only a failed configuration can be retried.")
    db.session.refresh(configuration)
    record("configuration.retry.requested", actor, tenant_id=configuration.tenant_id, target=configuration)
    _status_hint(configuration)


def _status_hint(configuration: VpnConfiguration) -> None:
    live.status_changed(KIND, configuration.id, configuration.tenant_id, configuration.status,
                        router_id=configuration.router_id)


# Queries ----------------------------------------------------------------------------------------

SORTS = {
    "name": Router.name,
    "created": Router.created_at,
}


def routers_page(tenant_id: int, *, search: str = "", sort: str = "name", descending: bool = False,
                 page: int = 1, per_page: int = 25):
    """One page of the tenant's routers, each with its live (or newest) configuration loaded."""
    query = select(Router).where(Router.tenant_id == tenant_id).options(selectinload(Router.configurations))
    if search:
        escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(Router.name.ilike(f"%{escaped}%", escape="\\"))
    column = SORTS.get(sort, Router.name)
    query = query.order_by(column.desc() if descending else column.asc(), Router.id)
    return paginate(query, page=page, per_page=per_page)


def traffic_samples(configuration_id: int, since: datetime) -> list[Sample]:
    """The configuration's stored traffic samples since `since`, oldest first."""
    rows = db.session.execute(
        select(TrafficSample.taken_at, TrafficSample.rx_bytes, TrafficSample.tx_bytes)
        .where(TrafficSample.configuration_id == configuration_id, TrafficSample.taken_at >= since)
        .order_by(TrafficSample.taken_at)
    ).all()
    return [Sample(*row) for row in rows]


def peer_config(configuration: VpnConfiguration) -> PeerConfig:
    """What the renderers need, for a configuration that still has its keys."""
    if not configuration.downloadable:
        raise Conflict("A revoked configuration cannot be downloaded; create a new configuration.")
    network = IPv4Network(configuration.subnet.network)
    hub = configuration.hub
    return PeerConfig(
        configuration_id=configuration.id, router_name=configuration.router.name,
        address=host_address(network, configuration.host_index), subnet=network,
        hub_address=hub_address(network), private_key=configuration.private_key,
        preshared_key=configuration.preshared_key, hub_public_key=hub.public_key,
        hub_endpoint_host=hub.endpoint_host, hub_endpoint_port=hub.endpoint_port,
    )


def record_download(actor: Actor, configuration: VpnConfiguration, kind: str) -> None:
    record("configuration.downloaded", actor, tenant_id=configuration.tenant_id, target=configuration,
           details={"format": kind})


# Worker-side transitions (fenced by `attempt`) ---------------------------------------------------

def finish_rotation(configuration_id: int, attempt: int) -> VpnConfiguration | None:
    """Make the new keys current once the hub holds them; None if a later attempt (or a revocation) took over."""
    configuration = db.session.get(VpnConfiguration, configuration_id, populate_existing=True)
    new_keys = {"public_key": configuration.next_public_key, "private_key": configuration.next_private_key,
                "preshared_key": configuration.next_preshared_key}
    return finish(configuration_id, attempt, Status.ROTATING, status=Status.ACTIVE, last_error=None,
                  next_public_key=None, next_private_key=None, next_preshared_key=None,
                  hub_rx_bytes=0, hub_tx_bytes=0, **new_keys)


# What revocation forgets: a revoked configuration keeps only its public key, for the record.
REVOKED_KEYS = {"private_key": None, "preshared_key": None, "next_public_key": None, "next_private_key": None,
                "next_preshared_key": None}


def finish(configuration_id: int, attempt: int, from_state: str, **values) -> VpnConfiguration | None:
    """`finish_row` for configurations."""
    return finish_row(VpnConfiguration, configuration_id, attempt, from_state, **values)


def release_addresses(revoked: Sequence[VpnConfiguration]) -> None:
    """Revoked configurations' addresses are free again."""
    for configuration in revoked:
        ipam.release_host(configuration.subnet_id, configuration.host_index)
        live.usage_changed(configuration.tenant_id)
