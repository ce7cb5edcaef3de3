"""Render an OpenVPN client's `.ovpn` file. Pure functions only: no Flask, no database.

The credential blocks (`<ca>`, `<cert>`, `<key>`, `<tls-crypt>`) come from the server script at provisioning
and are stored encrypted; everything else is rendered here, at download time, from the server's settings.
"""

from __future__ import annotations

import re
from typing import Protocol

from portal.openvpn.models import CLIENT_NAME, PROTOCOLS

_HOST = re.compile(r"[A-Za-z0-9.:-]{1,253}")
BLOCKS = ("ca", "cert", "key", "tls-crypt")


class ClientLike(Protocol):
    name: str
    bundle: str | None


class ServerLike(Protocol):
    remote_host: str
    remote_port: int
    protocol: str


def render_ovpn(client: ClientLike, server: ServerLike) -> str:
    """The client's `.ovpn` text: the connection settings, then the stored inline blocks."""
    if not client.bundle:
        raise ValueError("the client has no credentials to render")
    if not _HOST.fullmatch(server.remote_host):
        raise ValueError(f"unusable remote host {server.remote_host!r}")
    if server.protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {server.protocol!r}")
    if not 1 <= int(server.remote_port) <= 65535:
        raise ValueError(f"bad port {server.remote_port!r}")
    lines = [
        "client",
        "dev tun",
        f"proto {server.protocol}",
        f"remote {server.remote_host} {int(server.remote_port)}",
        "resolv-retry infinite",
        "nobind",
        "persist-key",
        "persist-tun",
        "remote-cert-tls server",
        "verify-x509-name server name",
        "verb 3",
    ]
    return "\n".join(lines) + "\n" + client.bundle.strip("\n") + "\n"


def download_filename(name: str) -> str:
    """`NAME.ovpn`: a client name is already safe in a file name and a header (checked again here)."""
    if not CLIENT_NAME.fullmatch(name):
        raise ValueError(f"not a client name: {name!r}")
    return f"{name}.ovpn"
