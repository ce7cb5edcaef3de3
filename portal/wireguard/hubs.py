"""Managed hubs: adding and bootstrapping them, watching them, and repairing drift from the database.

A hub's desired state is derived from the database: its key and port, its address in every tenant subnet
placed on it, one peer per configuration that should be live there, and the firewall that keeps tenants
apart. Nothing about a hub is stored that the database cannot rebuild.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from ipaddress import IPv4Network

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import InstrumentedAttribute

from portal import metrics
from portal.audit.models import AuditEvent
from portal.audit.service import Actor, record
from portal.crypto import generate_keypair, public_key_for
from portal.errors import Conflict, DomainError, FieldError, checked_field
from portal.extensions import db
from portal.ipam.models import TenantSubnet
from portal.ipam.pool import hub_address
from portal.remote import SshSettings
from portal.tenancy.models import Tenant
from portal.types import utcnow
from portal.wireguard.drivers import DRIVERS, WgDriver, driver_for
from portal.wireguard.models import WITH_KEYS, Hub, Status, TrafficSample, VpnConfiguration
from portal.wireguard.wgtext import (
    HubDump,
    Peer,
    TenantNetwork,
    check_interface,
    check_key,
    render_firewall,
    render_hub_state,
)

ON_HUB = (Status.ACTIVE,)  # configurations whose peer must be on the hub
MAYBE_ON_HUB = (Status.PROVISIONING, Status.ROTATING)  # a job is putting them there (or swapping keys)
DENSE_SAMPLES_FOR = timedelta(hours=1)
THINNED_BUCKET = timedelta(minutes=15)


def configuration_peer(configuration: VpnConfiguration) -> Peer:
    return Peer(public_key=configuration.public_key, preshared_key=configuration.preshared_key,
                allowed_ips=(f"{configuration.address}/32",))


def next_peer(configuration: VpnConfiguration) -> Peer:
    """The peer a rotation puts on the hub in place of the current one."""
    return Peer(public_key=configuration.next_public_key, preshared_key=configuration.next_preshared_key,
                allowed_ips=(f"{configuration.address}/32",))


# Adding hubs ------------------------------------------------------------------------------------

@dataclass(kw_only=True)
class HubSettings(SshSettings):
    """What a platform admin enters for a hub (validated by `save_hub`)."""

    name: str
    endpoint_host: str
    endpoint_port: int = 51820
    interface: str = "wg0"
    accepts_new_tenants: bool = True
    public_key: str = ""  # unmanaged hubs: their key (blank on edit: keep it); managed hubs get a generated pair


def save_hub(actor: Actor, settings: HubSettings, hub: Hub | None = None) -> Hub:
    """Create a hub, or update one; the audit row names what changed but never a key."""
    _validate(settings, hub)
    creating = hub is None
    if creating:
        hub = Hub(name=settings.name)
        db.session.add(hub)
        if settings.driver != "none":
            keys = generate_keypair()
            hub.private_key, hub.public_key = keys.private, keys.public
    key_changed = settings.driver == "none" and bool(settings.public_key) and settings.public_key != hub.public_key
    if key_changed:  # every download renders the hub's key, so routers get the new one from their next download
        hub.public_key = settings.public_key
    hub.name, hub.endpoint_host, hub.endpoint_port = settings.name, settings.endpoint_host, settings.endpoint_port
    hub.interface, hub.driver = settings.interface, settings.driver
    hub.accepts_new_tenants = settings.accepts_new_tenants
    ssh_details = settings.apply_ssh(hub)
    db.session.flush()
    record("hub.created" if creating else "hub.updated", actor, tenant_id=None, target=hub,
           details={"name": hub.name, "driver": hub.driver, "endpoint": f"{hub.endpoint_host}:{hub.endpoint_port}",
                    "public_key": hub.public_key if key_changed else None, **ssh_details})
    return hub


def _validate(settings: HubSettings, hub: Hub | None) -> None:
    if settings.driver not in DRIVERS:
        raise FieldError("driver", f"One of {', '.join(DRIVERS)}.")
    checked_field(check_interface, settings.interface, "interface")
    if not 1 <= settings.endpoint_port <= 65535:
        raise FieldError("endpoint_port", "Ports are 1 to 65535.")
    if settings.driver == "none" and (hub is None or settings.public_key or hub.driver != "none"):
        checked_field(check_key, settings.public_key, "public_key")  # required when there is none to keep
    settings.validate_ssh(hub, "hub")
    taken = db.session.scalar(select(Hub.id).where(func.lower(Hub.name) == settings.name.lower()))
    if taken is not None and (hub is None or taken != hub.id):
        raise FieldError("name", f"There is already a hub named {settings.name!r}.")


def place_tenant(actor: Actor, tenant_id: int, hub: Hub) -> TenantSubnet:
    """Put a tenant on a hub now (its subnet is allocated there) instead of the least-loaded one later."""
    from portal.ipam import service as ipam

    subnet = ipam.ensure_subnet(tenant_id, hub.id)
    if subnet.hub_id != hub.id:
        raise Conflict("This tenant already has its subnet on another hub.")
    record("tenant.placed", actor, tenant_id=tenant_id, target=hub, details={"subnet": subnet.network})
    return subnet


def set_router_to_router(actor: Actor, tenant: Tenant, allowed: bool) -> list[int]:
    """Let a tenant's routers reach each other through the hub, or not; the managed hubs whose firewall must
    be bootstrapped again for it to take effect."""
    if tenant.router_to_router == allowed:
        return []
    tenant.router_to_router = allowed
    record("tenant.router_to_router.changed", actor, tenant_id=tenant.id, target=tenant, details={"allowed": allowed})
    return list(db.session.scalars(select(Hub.id).join(TenantSubnet, TenantSubnet.hub_id == Hub.id)
                                   .where(TenantSubnet.tenant_id == tenant.id, Hub.driver != "none")))


def last_bootstraps(hub_ids: Sequence[int]) -> dict[int, AuditEvent]:
    """Each hub's latest bootstrap outcome (done or failed), for the hubs page."""
    latest = (select(func.max(AuditEvent.id))
              .where(AuditEvent.target_type == Hub.__tablename__, AuditEvent.target_id.in_(list(hub_ids)),
                     AuditEvent.action.in_(["hub.bootstrapped", "hub.bootstrap.failed"]))
              .group_by(AuditEvent.target_id))
    return {event.target_id: event for event in db.session.scalars(select(AuditEvent).where(AuditEvent.id.in_(latest)))}


# Desired state ----------------------------------------------------------------------------------

def tenant_networks(hub_id: int) -> list[TenantNetwork]:
    rows = db.session.execute(
        select(TenantSubnet.network, Tenant.router_to_router).join(Tenant, Tenant.id == TenantSubnet.tenant_id)
        .where(TenantSubnet.hub_id == hub_id).order_by(TenantSubnet.network)
    ).all()
    return [TenantNetwork(IPv4Network(network), str(hub_address(IPv4Network(network))), allowed)
            for network, allowed in rows]


def hub_configurations(hub_id: int, statuses: Sequence[str]) -> list[VpnConfiguration]:
    return list(db.session.scalars(select(VpnConfiguration).where(
        VpnConfiguration.hub_id == hub_id, VpnConfiguration.status.in_(list(statuses)))
        .options(WITH_KEYS).order_by(VpnConfiguration.id)))


def managed_driver(hub: Hub) -> WgDriver:
    driver = driver_for(hub)
    if not isinstance(driver, WgDriver):
        raise DomainError(f"The hub {hub.name!r} is not managed by the portal (driver {hub.driver!r}).")
    return driver


def bootstrap(actor: Actor, hub: Hub, private_key: str | None = None) -> list[str]:
    """Prepare the hub: interface, addresses, keys and peers, forwarding, tenant isolation. Re-running is a no-op."""
    driver = managed_driver(hub)
    if private_key is not None:
        hub.private_key, hub.public_key = private_key, checked_field(public_key_for, private_key, "private_key")
    if hub.private_key is None:
        keys = generate_keypair()
        hub.private_key, hub.public_key = keys.private, keys.public
    networks = tenant_networks(hub.id)
    # In-flight peers too: `wg syncconf` removes whatever the file does not name.
    peers = [configuration_peer(c) for c in hub_configurations(hub.id, (*ON_HUB, *MAYBE_ON_HUB))]
    addresses = [f"{network.hub_address}/{network.network.prefixlen}" for network in networks]
    changes = driver.bootstrap(hub, render_hub_state(hub.private_key, hub.endpoint_port, peers),
                               render_firewall(hub.interface, networks), addresses)
    db.session.execute(update(TenantSubnet).where(TenantSubnet.hub_id == hub.id, TenantSubnet.on_hub.is_(False))
                       .values(on_hub=True))
    record("hub.bootstrapped", actor, tenant_id=None, target=hub, details={"changes": changes, "tenants": len(networks),
                                                           "peers": len(peers)})
    return changes


# Reconciliation ---------------------------------------------------------------------------------

@dataclass
class Repair:
    description: str
    action: str
    configuration: VpnConfiguration | None = None
    public_key: str = ""


@dataclass
class HubPlan:
    hub: Hub
    apply: list[tuple[Peer, Repair]] = field(default_factory=list)
    remove: list[tuple[str, Repair]] = field(default_factory=list)

    @property
    def repairs(self) -> list[Repair]:
        return [repair for _, repair in self.apply] + [repair for _, repair in self.remove]


def plan_repairs(hub: Hub, dump: HubDump) -> HubPlan:
    """What makes the hub match the database. Read the dump first, then the database: a peer that a job
    applies in between is then either in flight (left alone) or already wanted (applied again, harmless)."""
    plan = HubPlan(hub)
    wanted = {c.public_key: c for c in hub_configurations(hub.id, ON_HUB)}
    in_flight = {key for c in hub_configurations(hub.id, (Status.PENDING, Status.PROVISIONING, Status.REVOKING,
                                                            Status.ROTATING))
                 for key in (c.public_key, c.next_public_key) if key}
    for public_key, configuration in wanted.items():
        peer, seen = configuration_peer(configuration), dump.peers.get(public_key)
        if seen is None:
            plan.apply.append((peer, Repair(f"re-apply missing peer of configuration {configuration.id} "
                                            f"({configuration.address})", "hub.drift.peer_missing", configuration)))
        elif not seen.matches(peer):
            plan.apply.append((peer, Repair(f"correct address or preshared key of configuration {configuration.id}",
                                            "hub.drift.peer_mismatch", configuration)))
    for public_key in dump.peers.keys() - wanted.keys() - in_flight:
        plan.remove.append((public_key, Repair(f"remove unknown peer {public_key}", "hub.drift.unknown_peer",
                                               public_key=public_key)))
    return plan


def reconcile_hub(actor: Actor, hub: Hub, dry_run: bool = False) -> list[str]:
    """Compare one hub with the database and repair it in one batch; returns one line per repair."""
    driver = managed_driver(hub)
    plan = plan_repairs(hub, driver.dump(hub))
    lines = [repair.description for repair in plan.repairs]
    if dry_run:
        return lines
    if plan.repairs:
        driver.apply_peers(hub, apply=[peer for peer, _ in plan.apply], remove=[key for key, _ in plan.remove])
        for repair in plan.repairs:
            _record_repair(actor, hub, repair)
        _undo_repairs_overtaken(driver, hub, plan)
    hub.last_reconciled_at = utcnow()
    hub.last_reconcile_result = "; ".join(lines) or "in sync"
    return lines


def _record_repair(actor: Actor, hub: Hub, repair: Repair) -> None:
    metrics.count("drift_repairs", repair.action)
    configuration = repair.configuration
    details = {"hub": hub.name, "repair": repair.description}
    if configuration is None:
        known = db.session.scalar(select(VpnConfiguration).where(VpnConfiguration.public_key == repair.public_key))
        details |= {"public_key": repair.public_key,
                    "known_as": f"configuration {known.id} ({known.status})" if known else "unknown"}
        record(repair.action, actor, tenant_id=known.tenant_id if known else None, target=known or hub,
               details=details)
    else:
        record(repair.action, actor, tenant_id=configuration.tenant_id, target=configuration, details=details)


def _undo_repairs_overtaken(driver: WgDriver, hub: Hub, plan: HubPlan) -> None:
    """A configuration revoked while its missing peer was being re-applied must not stay on the hub."""
    reapplied = [repair.configuration.id for _, repair in plan.apply]
    if not reapplied:
        return
    # A column query reads the rows as the database has them now (no stale identity map to expire; expiring
    # would also drop the audit head's unflushed hash and fork the chain).
    gone = db.session.scalars(select(VpnConfiguration.public_key).where(
        VpnConfiguration.id.in_(reapplied), VpnConfiguration.status.not_in(list(ON_HUB)))).all()
    if gone:
        driver.apply_peers(hub, remove=list(gone))


# Monitoring -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PeerChange:
    configuration_id: int
    tenant_id: int
    online: bool


def record_poll(hub: Hub, dump: HubDump, now: datetime, sample_every: timedelta) -> list[PeerChange]:
    """Store what one dump says of each configuration on the hub; return the configurations that changed."""
    changes = []
    due = _sample_due(hub.id, now - sample_every)
    for configuration in hub_configurations(hub.id, (Status.ACTIVE, Status.ROTATING)):
        seen = dump.peers.get(configuration.public_key)
        if seen is None:
            continue
        was_online, before = configuration.online(now), _observed(configuration)
        _count_traffic(configuration, seen.rx_bytes, seen.tx_bytes)
        configuration.last_handshake_at = seen.latest_handshake or configuration.last_handshake_at
        configuration.endpoint_seen = seen.endpoint
        if configuration.id in due:
            db.session.add(TrafficSample(configuration_id=configuration.id, taken_at=now,
                                         rx_bytes=configuration.rx_bytes, tx_bytes=configuration.tx_bytes))
        if _observed(configuration) != before or configuration.online(now) != was_online:
            changes.append(PeerChange(configuration.id, configuration.tenant_id, configuration.online(now)))
    hub.last_polled_at, hub.last_poll_error = now, None
    return changes


def _observed(configuration: VpnConfiguration) -> tuple:
    return configuration.last_handshake_at, configuration.endpoint_seen, configuration.rx_bytes, configuration.tx_bytes


def _count_traffic(configuration: VpnConfiguration, hub_rx: int, hub_tx: int) -> None:
    """Add the growth of the hub's counters; counters that went down were reset (peer re-added, hub restarted)."""
    configuration.rx_bytes += hub_rx - configuration.hub_rx_bytes if hub_rx >= configuration.hub_rx_bytes else hub_rx
    configuration.tx_bytes += hub_tx - configuration.hub_tx_bytes if hub_tx >= configuration.hub_tx_bytes else hub_tx
    configuration.hub_rx_bytes, configuration.hub_tx_bytes = hub_rx, hub_tx


def _sample_due(hub_id: int, cutoff: datetime) -> set[int]:
    """Configurations on the hub with no traffic sample since `cutoff`."""
    recent = select(TrafficSample.configuration_id).where(TrafficSample.taken_at > cutoff)
    return set(db.session.scalars(select(VpnConfiguration.id).where(
        VpnConfiguration.hub_id == hub_id, VpnConfiguration.id.not_in(recent))))


def thin_samples(now: datetime, retention: timedelta) -> int:
    """Drop traffic samples past retention, and keep one per 15 minutes of those older than an hour."""
    return thin_series(TrafficSample, TrafficSample.configuration_id, now, retention)


def thin_series(model: type[db.Model], series: InstrumentedAttribute, now: datetime, retention: timedelta) -> int:
    """Drop a sample table's rows past retention, and keep one per 15 minutes of each series (a configuration's,
    a tenant's) among those older than an hour. Each run thins the two buckets that just aged."""
    deleted = db.session.execute(delete(model).where(model.taken_at < now - retention)).rowcount
    old = db.session.execute(
        select(model.id, series, model.taken_at)
        .where(model.taken_at < now - DENSE_SAMPLES_FOR, model.taken_at >= now - DENSE_SAMPLES_FOR - 2 * THINNED_BUCKET)
        .order_by(series, model.taken_at)
    ).all()
    kept, surplus = set(), []
    for sample_id, series_id, taken_at in old:
        bucket = (series_id, int(taken_at.timestamp() // THINNED_BUCKET.total_seconds()))
        if bucket in kept:
            surplus.append(sample_id)
        else:
            kept.add(bucket)
    if surplus:
        db.session.execute(delete(model).where(model.id.in_(surplus)))
    return deleted + len(surplus)


def managed_hubs() -> list[Hub]:
    return list(db.session.scalars(select(Hub).where(Hub.driver != "none").order_by(Hub.id)))
