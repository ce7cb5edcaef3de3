"""Pure text for and from a hub's `wg`: the peer batch the hub script reads, `wg show IF dump`, and the
desired state in wg(8) format for `wg syncconf`. No I/O here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import IPv4Network

WG_KEY = re.compile(r"[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=")
INTERFACE_NAME = re.compile(r"[A-Za-z0-9_=+.-]{1,15}")
NONE = "(none)"


class DumpError(ValueError):
    """`wg show dump` printed something this parser does not understand."""


def check_key(key: str) -> str:
    if not WG_KEY.fullmatch(key):
        raise ValueError("not a WireGuard key (44 characters of base64)")
    return key


def check_interface(name: str) -> str:
    if not INTERFACE_NAME.fullmatch(name):
        raise ValueError("interface names are 1 to 15 letters, digits, or _=+.-")
    return name


@dataclass(frozen=True)
class Peer:
    """A peer as the hub should hold it."""

    public_key: str
    preshared_key: str
    allowed_ips: tuple[str, ...]

    def __post_init__(self):
        check_key(self.public_key)
        check_key(self.preshared_key)
        for network in self.allowed_ips:
            IPv4Network(network)  # ValueError on anything else

    def __repr__(self) -> str:  # never print the preshared key
        return f"Peer({self.public_key!r}, allowed_ips={self.allowed_ips!r})"


@dataclass(frozen=True)
class PeerState:
    """A peer as the hub reports it."""

    public_key: str
    preshared_key: str | None
    endpoint: str | None
    allowed_ips: tuple[str, ...]
    latest_handshake: datetime | None
    rx_bytes: int
    tx_bytes: int

    def __repr__(self) -> str:
        return f"PeerState({self.public_key!r}, allowed_ips={self.allowed_ips!r})"

    def matches(self, peer: Peer) -> bool:
        return self.preshared_key == peer.preshared_key and set(self.allowed_ips) == set(peer.allowed_ips)


@dataclass(frozen=True)
class HubDump:
    public_key: str
    listen_port: int
    peers: dict[str, PeerState]


def batch_lines(apply: list[Peer], remove: list[str]) -> str:
    """The hub script's input: `set KEY PSK IPS` and `remove KEY` lines (validated, so no spaces inside)."""
    lines = [f"set {peer.public_key} {peer.preshared_key} {','.join(peer.allowed_ips)}" for peer in apply]
    lines += [f"remove {check_key(public_key)}" for public_key in remove]
    return "".join(line + "\n" for line in lines)


def parse_dump(text: str) -> HubDump:
    """`wg show IF dump`: the interface line, then one tab-separated line per peer."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise DumpError("empty output from `wg show dump`")
    interface = lines[0].split("\t")
    if len(interface) != 4:
        raise DumpError(f"unexpected interface line in `wg show dump` ({len(interface)} fields)")
    peers = {}
    for line in lines[1:]:
        peer = _parse_peer(line.split("\t"))
        peers[peer.public_key] = peer
    return HubDump(public_key=interface[1], listen_port=int(interface[2]), peers=peers)


def _parse_peer(fields: list[str]) -> PeerState:
    if len(fields) != 8:
        raise DumpError(f"unexpected peer line in `wg show dump` ({len(fields)} fields)")
    public_key, preshared_key, endpoint, allowed_ips, handshake, rx, tx, _keepalive = fields
    try:
        seconds, rx_bytes, tx_bytes = int(handshake), int(rx), int(tx)
    except ValueError as error:
        raise DumpError(f"unexpected number in `wg show dump`: {error}") from None
    return PeerState(
        public_key=public_key,
        preshared_key=None if preshared_key == NONE else preshared_key,
        endpoint=None if endpoint == NONE else endpoint,
        allowed_ips=() if allowed_ips == NONE else tuple(allowed_ips.split(",")),
        latest_handshake=datetime.fromtimestamp(seconds, UTC) if seconds else None,
        rx_bytes=rx_bytes, tx_bytes=tx_bytes,
    )


def render_hub_state(private_key: str, listen_port: int, peers: list[Peer]) -> str:
    """The hub's whole desired state in wg(8) format (what `wg syncconf` reads)."""
    sections = [f"[Interface]\nPrivateKey = {check_key(private_key)}\nListenPort = {listen_port}\n"]
    sections += [f"[Peer]\nPublicKey = {peer.public_key}\nPresharedKey = {peer.preshared_key}\n"
                 f"AllowedIPs = {', '.join(peer.allowed_ips)}\n" for peer in peers]
    return "\n".join(sections)


@dataclass(frozen=True)
class TenantNetwork:
    """A tenant subnet on a hub, and whether its routers may reach each other."""

    network: IPv4Network
    hub_address: str
    router_to_router: bool


def render_firewall(interface: str, tenants: list[TenantNetwork]) -> str:
    """An nftables table that keeps tenants apart on the hub, replaced atomically as one `nft -f` batch.

    Routers reach the hub's address in their own subnet and, within one tenant, each other where the
    tenant allows it; nothing else. Traffic towards routers from the hub's other networks (management)
    is left to the host's own rules.
    """
    table = f"portal_{check_interface(interface)}"
    quoted = f'"{interface}"'
    inbound = [f"\t\tiifname {quoted} ip saddr {tenant.network} ip daddr {tenant.hub_address} accept"
               for tenant in tenants]
    between = [f"\t\tiifname {quoted} oifname {quoted} ip saddr {tenant.network} ip daddr {tenant.network} accept"
               for tenant in tenants if tenant.router_to_router]
    return "\n".join([
        f"table inet {table}",
        f"delete table inet {table}",
        f"table inet {table} {{",
        "\tchain input {",
        "\t\ttype filter hook input priority filter; policy accept;",
        f"\t\tiifname {quoted} ct state established,related accept",
        *inbound,
        f"\t\tiifname {quoted} drop",
        "\t}",
        "\tchain forward {",
        "\t\ttype filter hook forward priority filter; policy accept;",
        *between,
        f"\t\tiifname {quoted} drop",
        "\t}",
        "}",
    ]) + "\n"
