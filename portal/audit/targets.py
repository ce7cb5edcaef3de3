"""What an event is about, for people: "router Branch 1" linked to its page, instead of `routers 19`.

Names are read with one query per target type on a page (however many events name that type), scoped to the
log's tenant, so an id of another tenant's row never resolves. A target that is gone is named from the
events that named it when it existed ("router Branch 1 (deleted)"), without a link.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from flask import url_for
from sqlalchemy import or_, select

from portal.audit.models import AuditEvent
from portal.extensions import db

# Who may open a page: any reader of the tenant's pages, its own admins only, or platform admins.
TENANT, OWNER, PLATFORM = "tenant", "owner", "platform"
# Actions whose details name their target ({"name": ...} or {"email": ...}), as the row was then.
NAMING_SUFFIXES = (".created", ".updated", ".renamed", ".deleted", ".invited")


@dataclass(frozen=True)
class Viewer:
    """Which pages the person reading the log may open."""

    tenant_pages: bool = False
    owner_pages: bool = False
    platform_pages: bool = False

    def may_open(self, audience: str) -> bool:
        return {TENANT: self.tenant_pages, OWNER: self.owner_pages, PLATFORM: self.platform_pages}[audience]


NO_LINKS = Viewer()


@dataclass(frozen=True)
class Target:
    label: str
    url: str | None = None


@dataclass(frozen=True)
class Page:
    audience: str
    endpoint: str
    values: dict[str, int]


@dataclass(frozen=True)
class Found:
    """A target row that still exists: its label and the pages that show it, preferred first."""

    label: str
    pages: tuple[Page, ...] = ()


Lookup = Callable[[int, list[int]], dict[int, Found]]


@dataclass(frozen=True)
class Kind:
    table: str
    noun: str
    lookup: Lookup


def _routers(tenant_id: int, ids: list[int]) -> dict[int, Found]:
    return {router_id: _router(router_id, name) for router_id, name in _router_names(tenant_id, ids).items()}


def _router_names(tenant_id: int, ids: list[int]) -> dict[int, str]:
    from portal.wireguard.models import Router

    return dict(db.session.execute(select(Router.id, Router.name)
                                   .where(Router.tenant_id == tenant_id, Router.id.in_(ids))).all())


def _router(router_id: int, name: str) -> Found:
    return Found(f"router {name}", (Page(TENANT, "wireguard.router", {"router_id": router_id}),))


def _configurations(tenant_id: int, ids: list[int]) -> dict[int, Found]:
    from portal.wireguard.models import Router, VpnConfiguration

    # The name as a subquery per configuration: a join lets PostgreSQL hash all the tenant's routers once a page
    # names some fifty configurations (2 ms at 10,000 routers, where fifty index lookups take 0.2 ms).
    name = select(Router.name).where(Router.id == VpnConfiguration.router_id).scalar_subquery()
    rows = db.session.execute(select(VpnConfiguration.id, VpnConfiguration.router_id, name.label("name"))
                              .where(VpnConfiguration.tenant_id == tenant_id, VpnConfiguration.id.in_(ids)))
    return {row.id: _router(row.router_id, row.name) for row in rows}


def _client(client_id: int, name: str) -> Found:
    return Found(f"OpenVPN client {name}", (Page(TENANT, "openvpn.client", {"client_id": client_id}),))


def _clients(tenant_id: int, ids: list[int]) -> dict[int, Found]:
    from portal.openvpn.models import VpnClient

    rows = db.session.execute(select(VpnClient.id, VpnClient.name)
                              .where(VpnClient.tenant_id == tenant_id, VpnClient.id.in_(ids)))
    return {row.id: _client(row.id, row.name) for row in rows}


def _users(tenant_id: int, ids: list[int]) -> dict[int, Found]:
    from portal.tenancy.models import User

    rows = db.session.execute(select(User.id, User.email).where(User.tenant_id == tenant_id, User.id.in_(ids)))
    return {row.id: Found(f"user {row.email}", (Page(OWNER, "users.user_of_tenant", {"user_id": row.id}),
                                                Page(PLATFORM, "tenancy.user", {"user_id": row.id})))
            for row in rows}


def _tokens(tenant_id: int, ids: list[int]) -> dict[int, Found]:
    from portal.api.models import ApiToken

    rows = db.session.execute(select(ApiToken.id, ApiToken.name)
                              .where(ApiToken.tenant_id == tenant_id, ApiToken.id.in_(ids)))
    return {row.id: Found(f"API token {row.name}", (Page(OWNER, "api_tokens.tokens_page", {}),)) for row in rows}


def _links(tenant_id: int, ids: list[int]) -> dict[int, Found]:
    from portal.links.models import DownloadLink
    from portal.openvpn.models import VpnClient
    from portal.wireguard.models import Router, VpnConfiguration

    rows = db.session.execute(
        select(DownloadLink.id, Router.id.label("router_id"), Router.name.label("router_name"),
               VpnClient.id.label("client_id"), VpnClient.name.label("client_name"))
        .outerjoin(VpnConfiguration, VpnConfiguration.id == DownloadLink.configuration_id)
        .outerjoin(Router, Router.id == VpnConfiguration.router_id)
        .outerjoin(VpnClient, VpnClient.id == DownloadLink.client_id)
        .where(DownloadLink.tenant_id == tenant_id, DownloadLink.id.in_(ids)))
    found = {}
    for row in rows:
        of = _router(row.router_id, row.router_name) if row.router_id else _client(row.client_id, row.client_name)
        found[row.id] = Found(f"download link for {of.label}", of.pages)
    return found


def _imports(tenant_id: int, ids: list[int]) -> dict[int, Found]:
    from portal.wireguard.fleet_models import RouterImport

    rows = db.session.execute(select(RouterImport.id, RouterImport.row_count)
                              .where(RouterImport.tenant_id == tenant_id, RouterImport.id.in_(ids)))
    return {row.id: Found(f"import #{row.id} ({row.row_count} routers)",
                          (Page(TENANT, "fleet.import_status", {"import_id": row.id}),)) for row in rows}


def _hubs(tenant_id: int, ids: list[int]) -> dict[int, Found]:
    from portal.wireguard.models import Hub

    rows = db.session.execute(select(Hub.id, Hub.name).where(Hub.id.in_(ids)))
    return {row.id: Found(f"hub {row.name}", (Page(PLATFORM, "hubs.edit_hub", {"hub_id": row.id}),)) for row in rows}


def _servers(tenant_id: int, ids: list[int]) -> dict[int, Found]:
    from portal.openvpn.models import OpenVpnServer

    rows = db.session.execute(select(OpenVpnServer.id, OpenVpnServer.name).where(OpenVpnServer.id.in_(ids)))
    return {row.id: Found(f"OpenVPN server {row.name}",
                          (Page(PLATFORM, "openvpn_servers.edit_server", {"server_id": row.id}),)) for row in rows}


def _tenants(tenant_id: int, ids: list[int]) -> dict[int, Found]:
    from portal.tenancy.models import Tenant

    tenant = db.session.get(Tenant, tenant_id) if tenant_id in ids else None
    return {tenant.id: Found(f"tenant {tenant.name}")} if tenant else {}


def _visits(tenant_id: int, ids: list[int]) -> dict[int, Found]:
    from portal.tenancy.models import Impersonation, User

    rows = db.session.execute(select(Impersonation.id, User.email).join(User, User.id == Impersonation.staff_id)
                              .where(Impersonation.tenant_id == tenant_id, Impersonation.id.in_(ids)))
    return {row.id: Found(f"support visit by {row.email}") for row in rows}


# By the name used in filters (`?target=router:5`).
KINDS = {
    "router": Kind("routers", "router", _routers),
    "configuration": Kind("vpn_configurations", "configuration", _configurations),
    "client": Kind("vpn_clients", "OpenVPN client", _clients),
    "user": Kind("users", "user", _users),
    "token": Kind("api_tokens", "API token", _tokens),
    "link": Kind("download_links", "download link", _links),
    "import": Kind("router_imports", "import", _imports),
    "hub": Kind("hubs", "hub", _hubs),
    "server": Kind("openvpn_servers", "OpenVPN server", _servers),
    "tenant": Kind("tenants", "tenant", _tenants),
    "visit": Kind("impersonations", "support visit", _visits),
}
BY_TABLE = {kind.table: kind for kind in KINDS.values()}


def describe(events: Iterable[AuditEvent], tenant_id: int, viewer: Viewer) -> dict[tuple[str, int], Target]:
    """(target type, target id) -> what to show, for every event with a target."""
    events = [event for event in events if event.target_type and event.target_id is not None]
    wanted: dict[str, set[int]] = {}
    for event in events:
        wanted.setdefault(event.target_type, set()).add(event.target_id)
    found = {(table, target_id): row for table, ids in wanted.items() if table in BY_TABLE
             for target_id, row in BY_TABLE[table].lookup(tenant_id, sorted(ids)).items()}
    gone = {(event.target_type, event.target_id) for event in events if event.target_type in BY_TABLE} - found.keys()
    remembered = _remembered(tenant_id, gone, events)
    routers = _names_of_routers_of(tenant_id, remembered)
    return {pair: _shown(found[pair], viewer) if pair in found else _deleted(pair, remembered.get(pair, {}), routers)
            for pair in {(event.target_type, event.target_id) for event in events}}


def _shown(found: Found, viewer: Viewer) -> Target:
    page = next((page for page in found.pages if viewer.may_open(page.audience)), None)
    return Target(found.label, url_for(page.endpoint, **page.values) if page else None)


def _deleted(pair: tuple[str, int], details: dict[str, Any], routers: dict[int, str]) -> Target:
    table, target_id = pair
    kind = BY_TABLE.get(table)
    if kind is None:
        return Target(f"{table} {target_id}")
    if table == "vpn_configurations" and details.get("router_id") in routers:
        return Target(f"router {routers[details['router_id']]} (deleted)")
    name = details.get("name") or details.get("email")
    return Target(f"{kind.noun} {name} (deleted)" if name else f"{kind.noun} #{target_id} (deleted)")


def _remembered(tenant_id: int, gone: set[tuple[str, int]], events: list[AuditEvent]) -> dict[tuple[str, int], dict]:
    """Details that named each gone target: its newest naming event's (read through the per-target index),
    else those of an event on the page."""
    remembered = {(event.target_type, event.target_id): event.details for event in events
                  if (event.target_type, event.target_id) in gone and _names(event.details)}
    if not gone:
        return remembered
    rows = db.session.execute(
        select(AuditEvent.target_type, AuditEvent.target_id, AuditEvent.details)
        .where(AuditEvent.tenant_id == tenant_id,
               or_(*(AuditEvent.action.endswith(suffix) for suffix in NAMING_SUFFIXES)),
               or_(*((AuditEvent.target_type == table) & AuditEvent.target_id.in_(ids)
                     for table, ids in _grouped(gone).items())))
        .order_by(AuditEvent.id))
    for row in rows:
        if _names(row.details):
            remembered[(row.target_type, row.target_id)] = row.details
    return remembered


def _names_of_routers_of(tenant_id: int, remembered: dict[tuple[str, int], dict]) -> dict[int, str]:
    """The names of the routers of gone configurations (their `configuration.created` says which)."""
    router_ids = sorted({details["router_id"] for (table, _), details in remembered.items()
                         if table == "vpn_configurations" and isinstance(details.get("router_id"), int)})
    if not router_ids:
        return {}
    names = _router_names(tenant_id, router_ids)
    gone = {("routers", router_id) for router_id in router_ids if router_id not in names}
    names.update({router_id: details["name"] for (_, router_id), details in _remembered(tenant_id, gone, []).items()
                  if details.get("name")})
    return names


def _names(details: dict) -> bool:
    return bool(details.get("name") or details.get("email") or details.get("router_id"))


def _grouped(pairs: Iterable[tuple[str, int]]) -> dict[str, list[int]]:
    grouped: dict[str, list[int]] = {}
    for table, target_id in sorted(pairs):
        grouped.setdefault(table, []).append(target_id)
    return grouped


def history_of(name: str, target_id: int, tenant_id: int) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """The (type, ids) whose events make one target's history: a router's include its configurations', as on
    its page. Another tenant's router has no configurations here, and its own events are not in this log."""
    from portal.wireguard.models import VpnConfiguration

    kind = KINDS[name]
    if name != "router":
        return ((kind.table, (target_id,)),)
    configurations = tuple(db.session.scalars(select(VpnConfiguration.id).where(
        VpnConfiguration.tenant_id == tenant_id, VpnConfiguration.router_id == target_id)))
    return (("routers", (target_id,)), *((("vpn_configurations", configurations),) if configurations else ()))


def label_of(name: str, target_id: int, tenant_id: int) -> str:
    """How the filter names one target ("router Branch 1")."""
    kind = KINDS[name]
    probe = AuditEvent(target_type=kind.table, target_id=target_id, details={})
    return describe([probe], tenant_id, NO_LINKS)[(kind.table, target_id)].label
