"""What the tenant dashboard shows, as plain values."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from portal.extensions import db
from portal.openvpn.models import Status as ClientStatus
from portal.openvpn.models import VpnClient
from portal.wireguard.models import ONLINE_WITHIN, Hub, Router, Status, VpnConfiguration


@dataclass(frozen=True)
class Fleet:
    routers: int
    online: int  # active on a managed hub, with a handshake within ONLINE_WITHIN
    monitored: int  # active on a managed hub (the ones that can be seen online)
    by_status: dict[str, int]  # configurations that are not revoked, per status
    clients_active: int  # OpenVPN clients with a certificate in force
    clients_connected: int  # ... with a session on their server now


def fleet(tenant_id: int, now: datetime) -> Fleet:
    routers = db.session.scalar(select(func.count()).select_from(Router).where(Router.tenant_id == tenant_id))
    by_status = dict(db.session.execute(
        select(VpnConfiguration.status, func.count()).where(VpnConfiguration.tenant_id == tenant_id,
                                                            VpnConfiguration.status != Status.REVOKED)
        .group_by(VpnConfiguration.status)).all())
    monitored = (select(func.count()).select_from(VpnConfiguration).join(Hub, Hub.id == VpnConfiguration.hub_id)
                 .where(VpnConfiguration.tenant_id == tenant_id, VpnConfiguration.status == Status.ACTIVE,
                        Hub.driver != "none"))
    online = monitored.where(VpnConfiguration.last_handshake_at >= now - ONLINE_WITHIN)
    clients_active, clients_connected = db.session.execute(
        select(func.count(), func.count().filter(VpnClient.connected.is_(True)))
        .where(VpnClient.tenant_id == tenant_id, VpnClient.status == ClientStatus.ACTIVE)).one()
    return Fleet(routers=routers, online=db.session.scalar(online), monitored=db.session.scalar(monitored),
                 by_status=by_status, clients_active=clients_active, clients_connected=clients_connected)
