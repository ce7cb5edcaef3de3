"""The files people download: one function per kind of file, shared by the pages, e-mailed links and the API.

Each returns a `File` and records the download in the audit log (in the caller's transaction; the caller
commits). The caller has checked who may download; these check only that the row can be downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Response

from portal.audit.service import Actor
from portal.errors import DomainError


@dataclass(frozen=True)
class File:
    body: str
    content_type: str
    filename: str

    def response(self) -> Response:
        return Response(self.body, content_type=self.content_type, headers={
            "Content-Disposition": f'attachment; filename="{self.filename}"',
            "Cache-Control": "no-store",
        })


class NotDownloadable(DomainError):
    """The configuration or client is not active (pending, failed, revoked)."""


WIREGUARD_KINDS = ("rsc", "conf")


def wireguard_file(actor: Actor, configuration, kind: str) -> File:
    """The RouterOS script (`rsc`) or wg-quick file (`conf`) of a WireGuard configuration."""
    from portal.wireguard import service
    from portal.wireguard.models import Status
    from portal.wireguard.render import download_filename, render_conf, render_rsc

    if kind not in WIREGUARD_KINDS:
        raise ValueError(f"no such download: {kind}")
    if not configuration.downloadable:
        raise NotDownloadable("A revoked configuration cannot be downloaded." if configuration.status == Status.REVOKED
                              else "Only an active configuration can be downloaded: this one is "
                                   f"{configuration.status}.")
    renderer = render_rsc if kind == "rsc" else render_conf
    body = renderer(service.peer_config(configuration))
    service.record_download(actor, configuration, kind)
    return File(body, "text/plain; charset=utf-8", download_filename(configuration.router.name, configuration.id,
                                                                      kind))


def openvpn_file(actor: Actor, client) -> File:
    """The `.ovpn` profile of an OpenVPN client."""
    from portal.openvpn import service
    from portal.openvpn.models import Status
    from portal.openvpn.render import download_filename, render_ovpn

    if not client.downloadable:
        raise NotDownloadable("Only an active client can be downloaded." if client.status != Status.REVOKED
                              else "A revoked client cannot be downloaded.")
    body = render_ovpn(client, client.server)
    service.record_download(actor, client)
    return File(body, "application/x-openvpn-profile; charset=utf-8", download_filename(client.name))
