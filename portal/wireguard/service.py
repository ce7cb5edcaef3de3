"""Routers and their WireGuard configurations: creation, revocation, retry, and the work jobs do.

Views and jobs call these functions with explicit arguments; they add and flush, and the caller
commits once. Jobs are enqueued by the caller after the commit (see `portal.wireguard.jobs`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from ipaddress import IPv4Network
from typing import NamedTuple

from flask import current_app
from sqlalchemy import and_, delete, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import defer, joinedload, selectinload

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
from portal.live.reuse import reuse_until_news, tenant_row_count
from portal.pagination import paginate_from_both_ends
from portal.wireguard.charts import Sample
from portal.wireguard.models import KIND, WITH_KEYS, Hub, Router, Status, TrafficSample, VpnConfiguration
from portal.wireguard.render import PeerConfig

NAME_MAX = 64
NAME_PUNCTUATION = frozenset(" ._-")
NAME_CHARACTERS = "letters, digits, spaces, dots, dashes and underscores"
# `validate_router_name`'s rule as one pattern, for the API's JSON Schema: `\w` is Unicode (letters, digits, `_`).
ROUTER_NAME = re.compile(r"[^\W_][\w .-]{0,63}")
ROUTER_NAME_RULE = (
    f"1 to {NAME_MAX} characters: {NAME_CHARACTERS} (accents and other alphabets welcome), starting with a letter "
    "or digit"
)
NOTE_MAX = 500
NOTE_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
ALREADY_CONFIGURED = "This router already has a configuration; revoke it before creating a new one."
BULK_MAX = 500  # routers one bulk action takes
STILL_CONFIGURED = "{name} has a live configuration: revoke it first, then delete the router."


def validate_router_name(name: str) -> str:
    """`name` stripped and composed (NFC: an `e` with a combining accent becomes `é`), or a FieldError that says
    exactly what is wrong with it."""
    name = unicodedata.normalize("NFC", name).strip()
    if not name:
        raise FieldError("name", "Give the router a name.")
    if len(name) > NAME_MAX:
        raise FieldError("name", f"At most {NAME_MAX} characters (this one has {len(name)}).")
    refused = next((char for char in name if not (char.isalnum() or char in NAME_PUNCTUATION)), None)
    if refused is not None:
        raise FieldError("name", f"{_quoted(refused)} is not allowed: use {NAME_CHARACTERS}.")
    if not name[0].isalnum():
        raise FieldError("name", f"Router names are 1 to {NAME_MAX} characters, starting with a letter or digit: "
                                 f"this one starts with {_quoted(name[0])}.")
    return name


def _quoted(char: str) -> str:
    """A character as a message shows it: itself in quotes, or its code point when it is invisible or combining."""
    if char.isprintable() and not char.isspace() and not unicodedata.category(char).startswith("M"):
        return f"“{char}”"
    described = "a control character" if unicodedata.category(char) == "Cc" else unicodedata.name(char, "").lower()
    return f"U+{ord(char):04X} ({described or 'an unassigned character'})"


def name_taken(tenant_id: int, name: str, *, besides: int | None = None) -> bool:
    """Whether another router of the tenant (not router `besides`) has this name, in any case: the database's
    `lower` on both sides, as the unique index compares them."""
    same_name = (Router.tenant_id == tenant_id, func.lower(Router.name) == func.lower(name))
    other = (Router.id != besides,) if besides is not None else ()
    return db.session.scalar(select(exists().where(*same_name, *other)))


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


def update_router(actor: Actor, router: Router, *, name: str | None, note: str | None) -> Router:
    """Rename the router and/or change its note (None: leave it), audited as `router.updated` when anything
    changed. Renaming changes nothing on the hub (peers are keyed by public key), only later downloads' names."""
    details: dict[str, object] = {}
    if name is not None:
        name = validate_router_name(name)
        if name != router.name:
            if name_taken(router.tenant_id, name, besides=router.id):
                raise Conflict(f"You already have a router named {name!r}.")
            details.update(name=name, previous_name=router.name)
            router.name = name
    if note is not None:
        note = validate_note(note)
        if note != router.note:
            details["note_changed"] = True
            router.note = note
    if details:
        record("router.updated", actor, tenant_id=router.tenant_id, target=router, details=details)
    return router


def delete_router(actor: Actor, router: Router) -> None:
    """Remove a router whose configurations are all revoked, with them and every row that hangs on them, in the
    caller's transaction (so all or nothing). The audit log keeps its events, which name the router.

    The router row is locked first, and only revoked configurations are deleted: a configuration added
    concurrently makes the router's own DELETE fail on its foreign key, and `portal.actions.commit`'s retry then
    sees it and refuses."""
    if db.session.scalar(select(Router.id).where(Router.id == router.id).with_for_update()) is None:
        raise Conflict(f"{router.name} was deleted a moment ago.")
    db.session.refresh(router)
    if any(configuration.is_live for configuration in router.configurations):
        raise Conflict(STILL_CONFIGURED.format(name=router.name))
    record("router.deleted", actor, tenant_id=router.tenant_id, target=router,
           details={"name": router.name, "configurations": [c.id for c in router.configurations]})
    revoked = select(VpnConfiguration.id).where(VpnConfiguration.router_id == router.id,
                                                VpnConfiguration.status == Status.REVOKED)
    for statement in _router_dependents(router.id, revoked):
        db.session.execute(statement.execution_options(synchronize_session=False))
    db.session.execute(delete(VpnConfiguration).where(VpnConfiguration.id.in_(revoked))
                       .execution_options(synchronize_session=False))
    db.session.execute(delete(Router).where(Router.id == router.id).execution_options(synchronize_session=False))
    live.status_changed("router", router.id, router.tenant_id, "deleted")  # the dashboard counts routers


def _router_dependents(router_id: int, configurations) -> list:
    """DELETEs of the rows that point at a router or at its `configurations` (every foreign key to `routers` and
    `vpn_configurations`; tests/wireguard/test_router_management.py fails when one is added and not listed)."""
    from portal.links.models import DownloadLink
    from portal.routeros.models import RouterPush
    from portal.wireguard.fleet_models import RouterImportItem

    return [delete(TrafficSample).where(TrafficSample.configuration_id.in_(configurations)),
            delete(DownloadLink).where(DownloadLink.configuration_id.in_(configurations)),
            delete(RouterPush).where(RouterPush.router_id == router_id),
            delete(RouterImportItem).where(RouterImportItem.router_id == router_id)]


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


@dataclass
class BulkRevocation:
    """Routers chosen together: those whose configuration is (or would be) revoked, and the rest with the reason."""

    revoked: list[Router] = field(default_factory=list)
    skipped: list[tuple[Router, str]] = field(default_factory=list)
    hub_ids: set[int] = field(default_factory=set)


def revocation_plan(routers: Sequence[Router]) -> BulkRevocation:
    """What `revoke_routers` would do, changing nothing (the confirmation page)."""
    plan = BulkRevocation()
    for router in routers:
        configuration = router.current_configuration
        if configuration is None or not configuration.is_live:
            plan.skipped.append((router, "no live configuration"))
        elif configuration.status not in VpnConfiguration.REVOCABLE:
            plan.skipped.append((router, _cannot_revoke_reason(configuration.status)))
        else:
            plan.revoked.append(router)
            plan.hub_ids.add(configuration.hub_id)
    return plan


def revoke_routers(actor: Actor, routers: Sequence[Router]) -> BulkRevocation:
    """`request_revocation` for each router's live configuration, in the caller's transaction; a router whose
    configuration cannot be revoked (none is live, or it changed state since the plan) is skipped, not an error.
    The caller wakes each of `hub_ids` once after the commit."""
    plan = revocation_plan(routers)
    done = BulkRevocation(skipped=plan.skipped)
    for router in plan.revoked:
        configuration = router.current_configuration
        try:
            request_revocation(actor, configuration)
        except Conflict as error:
            done.skipped.append((router, str(error)))
            continue
        done.revoked.append(router)
        done.hub_ids.add(configuration.hub_id)
    return done


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

# The list's sort keys. Names sort as the unique index (tenant_id, lower(name)) orders them, so a page is read
# from the index; "created" is the id order, which is the order routers were added in.
SORTS = {
    "name": (func.lower(Router.name), Router.id),
    "created": (Router.id,),
}
# The list's status filter: what the router's current configuration is doing.
STATUS_FILTERS = {
    "active": "active",
    "in_progress": "pending or in progress",
    "failed": "failed",
    "revoked": "revoked",
    "none": "no configuration",
}


def routers_page(tenant_id: int, *, search: str = "", sort: str = "name", descending: bool = False,
                 status: str | None = None, hub_id: int | None = None, page: int = 1, per_page: int = 25):
    """One page of the tenant's routers, each with its configurations loaded (for the live or newest one) in the
    same statement: the page is a subquery, its routers' configurations joined to it.

    Search is a case-insensitive substring of the name, `lower(name) LIKE '%term%'`, which a trigram index
    serves on PostgreSQL (migration 0016)."""
    query = (select(Router).where(Router.tenant_id == tenant_id)
             .options(joinedload(Router.configurations), defer(Router.api_password)))  # no list shows it
    if search:
        escaped = search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(func.lower(Router.name).like(f"%{escaped}%", escape="\\"))
    if status in STATUS_FILTERS:
        query = query.where(_in_status(status))
    if hub_id is not None:
        query = query.where(_on_hub(hub_id))
    unfiltered = not search and status not in STATUS_FILTERS and hub_id is None
    return paginate_from_both_ends(query, SORTS.get(sort, SORTS["name"]), descending=descending, page=page,
                                   per_page=per_page, total=tenant_row_count(Router, tenant_id) if unfiltered else None)


def _configuration_of_router(*conditions):
    return exists().where(VpnConfiguration.router_id == Router.id, *conditions)


_LIVE = VpnConfiguration.status != Status.REVOKED


def _in_status(status: str):
    """Routers whose current configuration is in the filter's state (at most one is live per router)."""
    if status == "none":
        return ~_configuration_of_router()
    if status == "revoked":
        return and_(_configuration_of_router(), ~_configuration_of_router(_LIVE))
    states = {"active": (Status.ACTIVE,), "failed": (Status.FAILED,), "in_progress": VpnConfiguration.IN_FLIGHT}
    return _configuration_of_router(VpnConfiguration.status.in_(states[status]), _LIVE)  # _LIVE: the partial index


def _on_hub(hub_id: int):
    """Routers with a configuration on the hub (live or revoked: a router whose tenant moved hubs is on both).

    One semi-join; telling a router's current hub from its earlier ones would cost an OR of subqueries per row."""
    return _configuration_of_router(VpnConfiguration.hub_id == hub_id)


class HubChoice(NamedTuple):
    id: int
    name: str


def hubs_in_use(tenant_id: int) -> list[HubChoice]:
    """The hubs that hold (or held) the tenant's configurations, for the list's hub filter: read again only after
    news of the tenant (a configuration on a new hub is news), or a hub's new name after at most KEEP_SECONDS."""
    used = exists().where(VpnConfiguration.tenant_id == tenant_id, VpnConfiguration.hub_id == Hub.id)
    rows = reuse_until_news(tenant_id, "hubs-in-use", lambda: [
        list(row) for row in db.session.execute(select(Hub.id, Hub.name).where(used).order_by(Hub.name))])
    return [HubChoice(*row) for row in rows]


def routers_by_id(tenant_id: int, router_ids: Collection[int]) -> list[Router]:
    """The tenant's routers among `router_ids` (others' ids are not there), with their configurations, by name."""
    return list(db.session.scalars(
        select(Router).where(Router.tenant_id == tenant_id, Router.id.in_(list(router_ids)))
        .options(selectinload(Router.configurations)).order_by(*SORTS["name"])))


def traffic_samples(configuration_id: int, since: datetime) -> list[Sample]:
    """The configuration's stored traffic samples since `since`, oldest first."""
    rows = db.session.execute(
        select(TrafficSample.taken_at, TrafficSample.rx_bytes, TrafficSample.tx_bytes)
        .where(TrafficSample.configuration_id == configuration_id, TrafficSample.taken_at >= since)
        .order_by(TrafficSample.taken_at)
    ).all()
    return [Sample(*row) for row in rows]


# Loader options for a configuration that is about to be rendered: what `peer_config` reads, in one statement.
PEER_PARTS = (joinedload(VpnConfiguration.router), joinedload(VpnConfiguration.hub),
              joinedload(VpnConfiguration.subnet), WITH_KEYS)


def peer_config(configuration: VpnConfiguration) -> PeerConfig:
    """What the renderers need, for a configuration that still has its keys."""
    if not configuration.has_keys:
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
