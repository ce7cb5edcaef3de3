"""What the tenant dashboard shows, as plain values."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func, select

from portal.dashboard.models import FleetSample
from portal.extensions import db
from portal.live.reuse import reuse_until_news, tenant_row_count
from portal.openvpn.models import Status as ClientStatus
from portal.openvpn.models import VpnClient
from portal.wireguard.charts import FleetChart, FleetPoint, fleet_chart
from portal.wireguard.models import ONLINE_WITHIN, Hub, Router, Status, VpnConfiguration

HISTORY = timedelta(days=1)  # the span of the routers-online chart


@dataclass(frozen=True)
class Fleet:
    routers: int
    online: int  # active on a managed hub, with a handshake within ONLINE_WITHIN
    monitored: int  # active on a managed hub (the ones that can be seen online)
    by_status: dict[str, int]  # configurations that are not revoked, per status
    clients_active: int  # OpenVPN clients with a certificate in force
    clients_connected: int  # ... with a session on their server now


def fleet(tenant_id: int, now: datetime) -> Fleet:
    """The tenant's counts (linear in its size), reused until a hint about its routers or clients."""
    counted = reuse_until_news(tenant_id, "dashboard:fleet", lambda: asdict(_count_fleet(tenant_id, now)))
    return Fleet(**counted)


def _count_fleet(tenant_id: int, now: datetime) -> Fleet:
    """The tenant's counts; its live configurations are read once, counted per status and for online."""
    routers = tenant_row_count(Router, tenant_id)
    rows = db.session.execute(
        select(VpnConfiguration.status, func.count(), *_monitored_and_online(now))
        .join(Hub, Hub.id == VpnConfiguration.hub_id)
        .where(VpnConfiguration.tenant_id == tenant_id, VpnConfiguration.status != Status.REVOKED)
        .group_by(VpnConfiguration.status)).all()
    clients_active, clients_connected = db.session.execute(
        select(func.count(), func.count().filter(VpnClient.connected.is_(True)))
        .where(VpnClient.tenant_id == tenant_id, VpnClient.status == ClientStatus.ACTIVE)).one()
    return Fleet(routers=routers, online=sum(row[3] for row in rows), monitored=sum(row[2] for row in rows),
                 by_status={status: count for status, count, *_ in rows}, clients_active=clients_active,
                 clients_connected=clients_connected)


def _monitored_and_online(now: datetime) -> tuple:
    """Count columns over configurations joined to their hub: active on a managed hub, and of those the ones
    with a handshake within ONLINE_WITHIN."""
    monitored = and_(VpnConfiguration.status == Status.ACTIVE, Hub.driver != "none")
    return (func.count().filter(monitored),
            func.count().filter(monitored, VpnConfiguration.last_handshake_at >= now - ONLINE_WITHIN))


def live_configurations(tenant_id: int) -> int:
    """Configurations that hold an address (every status but revoked), reused like `fleet`'s counts."""
    return reuse_until_news(tenant_id, "dashboard:live", lambda: db.session.scalar(
        select(func.count()).select_from(VpnConfiguration).where(
            VpnConfiguration.tenant_id == tenant_id, VpnConfiguration.status != Status.REVOKED)))


def online_history(tenant_id: int, now: datetime) -> FleetChart:
    """The tenant's routers online over the last day, from the fleet samples the worker stores."""
    rows = db.session.execute(
        select(FleetSample.taken_at, FleetSample.online, FleetSample.monitored)
        .where(FleetSample.tenant_id == tenant_id, FleetSample.taken_at >= now - HISTORY)
        .order_by(FleetSample.taken_at)).all()
    return fleet_chart("last day", [FleetPoint(*row) for row in rows], now, HISTORY)


def sample_fleets(now: datetime) -> int:
    """Store every tenant's routers online and monitored now (tenants with live configurations); return how
    many samples were stored."""
    counts = db.session.execute(
        select(VpnConfiguration.tenant_id, *_monitored_and_online(now))
        .join(Hub, Hub.id == VpnConfiguration.hub_id)
        .where(VpnConfiguration.status != Status.REVOKED)
        .group_by(VpnConfiguration.tenant_id)).all()
    db.session.add_all(FleetSample(tenant_id=tenant_id, taken_at=now, online=online, monitored=monitored)
                       for tenant_id, monitored, online in counts)
    return len(counts)
