"""The API's lists: a tenant's configurations and OpenVPN clients, filtered, newest first. Reads only; every
change goes through the areas' services."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from portal.extensions import db
from portal.openvpn.models import VpnClient
from portal.wireguard.models import VpnConfiguration


def _contains(column, text: str):
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.ilike(f"%{escaped}%", escape="\\")


def configurations_page(tenant_id: int, *, status: str | None, router_id: int | None, page: int, per_page: int):
    query = (select(VpnConfiguration).where(VpnConfiguration.tenant_id == tenant_id)
             .options(selectinload(VpnConfiguration.router), selectinload(VpnConfiguration.hub)))
    if status is not None:
        query = query.where(VpnConfiguration.status == status)
    if router_id is not None:
        query = query.where(VpnConfiguration.router_id == router_id)
    return db.paginate(query.order_by(VpnConfiguration.id.desc()), page=page, per_page=per_page, error_out=False,
                       max_per_page=per_page)


def clients_page(tenant_id: int, *, status: str | None, search: str, page: int, per_page: int):
    query = select(VpnClient).where(VpnClient.tenant_id == tenant_id).options(selectinload(VpnClient.server))
    if status is not None:
        query = query.where(VpnClient.status == status)
    if search:
        query = query.where(_contains(VpnClient.name, search))
    return db.paginate(query.order_by(VpnClient.id.desc()), page=page, per_page=per_page, error_out=False,
                       max_per_page=per_page)
