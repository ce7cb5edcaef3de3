"""Rows as the API's response models, with the URLs that lead on from them."""

from __future__ import annotations

from flask import url_for

from portal.api import schemas
from portal.ipam.service import SubnetUsage
from portal.openvpn.models import VpnClient
from portal.wireguard.models import Hub, Router, VpnConfiguration


def _url(endpoint: str, **values) -> str:
    return url_for(f"api.{endpoint}", _external=True, **values)


def hub(row: Hub) -> schemas.Hub:
    return schemas.Hub(id=row.id, name=row.name, endpoint=f"{row.endpoint_host}:{row.endpoint_port}")


def configuration(row: VpnConfiguration) -> schemas.Configuration:
    downloads = schemas.Downloads(
        mikrotik=_url("download_mikrotik", configuration_id=row.id),
        linux=_url("download_linux", configuration_id=row.id)) if row.downloadable else None
    return schemas.Configuration(
        id=row.id, url=_url("get_configuration", configuration_id=row.id), router_id=row.router_id,
        router_name=row.router.name, status=row.status, address=row.address, public_key=row.public_key,
        next_public_key=row.next_public_key, hub=hub(row.hub), last_error=row.last_error, retry_at=row.retry_at,
        created_at=row.created_at, updated_at=row.updated_at, activated_at=row.activated_at,
        revoked_at=row.revoked_at, last_handshake_at=row.last_handshake_at, rx_bytes=row.rx_bytes,
        tx_bytes=row.tx_bytes, downloads=downloads)


def router(row: Router) -> schemas.Router:
    current = row.current_configuration
    return schemas.Router(id=row.id, url=_url("get_router", router_id=row.id), name=row.name, note=row.note,
                          created_at=row.created_at,
                          configuration=configuration(current) if current is not None else None)


def client(row: VpnClient) -> schemas.Client:
    server = row.server
    return schemas.Client(
        id=row.id, url=_url("get_client", client_id=row.id), name=row.name, status=row.status,
        server=schemas.Server(id=server.id, name=server.name, remote=f"{server.remote_host}:{server.remote_port}",
                              protocol=server.protocol),
        serial=row.serial, not_after=row.not_after, last_error=row.last_error, retry_at=row.retry_at,
        created_at=row.created_at, updated_at=row.updated_at, activated_at=row.activated_at,
        revoked_at=row.revoked_at, connected=row.connected, last_seen_at=row.last_seen_at,
        download=_url("download_client", client_id=row.id) if row.downloadable else None)


def subnet(usage: SubnetUsage | None, hub_row: Hub | None) -> schemas.Subnet:
    if usage is None:
        return schemas.Subnet(network=None, hub=None, used=0, free=0, total=0, percent=0.0)
    return schemas.Subnet(network=str(usage.network), hub=hub(hub_row) if hub_row is not None else None,
                          used=usage.used, free=usage.free, total=usage.total, percent=usage.percent)
