"""A hub driver for tests: the `none` driver (nothing to manage) that also answers `dump`, as a managed hub's
`wg show dump` would, from a simulated WireGuard link to fake routers.

Peers are kept as the portal applies them, with WireGuard's rule that an allowed IP belongs to one peer (applying
a peer with an address takes it from the peer that had it). A peer handshakes when the link is up and a linked
router (a `RouterState`) has a WireGuard interface whose private key is the peer's, with a peer naming this hub's
public key and the same preshared key: what a real handshake proves. Nothing else about the handshake is faked.

Install it with `monkeypatch.setitem(drivers.DRIVERS, "none", simulated.for_hub)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from portal.types import utcnow
from portal.wireguard.drivers import NoneDriver
from portal.wireguard.wgtext import HubDump, Peer, PeerState
from tests.routeros.fake_routeros import RouterState, public_key_of


class SimulatedHub(NoneDriver):
    def __init__(self, public_key: str, listen_port: int = 51820):
        self.public_key, self.listen_port = public_key, listen_port
        self.peers: dict[str, Peer] = {}
        self.allowed: dict[str, list[str]] = {}
        self.handshakes: dict[str, datetime] = {}
        self.routers: list[RouterState] = []
        self.link_up = True
        self.dumps = 0

    def for_hub(self, hub) -> SimulatedHub:
        """The driver factory: the hub's own public key is the one routers must name."""
        self.public_key, self.listen_port = hub.public_key, hub.endpoint_port
        return self

    def link(self, router: RouterState) -> None:
        self.routers.append(router)

    def apply_peers(self, hub, apply: Sequence[Peer] = (), remove: Sequence[str] = ()) -> None:
        for peer in apply:
            for other in self.allowed.values():
                other[:] = [network for network in other if network not in peer.allowed_ips]
            self.peers[peer.public_key] = peer
            self.allowed[peer.public_key] = list(peer.allowed_ips)
        for public_key in remove:
            self.peers.pop(public_key, None)
            self.allowed.pop(public_key, None)
            self.handshakes.pop(public_key, None)
        return None

    def dump(self, hub) -> HubDump:
        self.dumps += 1
        if self.link_up:
            for public_key, preshared_key in self._router_sides():
                peer = self.peers.get(public_key)
                if peer is not None and peer.preshared_key == preshared_key:
                    self.handshakes[public_key] = utcnow().replace(microsecond=0)
        return HubDump(public_key=self.public_key, listen_port=self.listen_port, peers={
            key: PeerState(public_key=key, preshared_key=peer.preshared_key,
                           endpoint="192.0.2.10:13231" if key in self.handshakes else None,
                           allowed_ips=tuple(self.allowed[key]), latest_handshake=self.handshakes.get(key),
                           rx_bytes=0, tx_bytes=0)
            for key, peer in self.peers.items()})

    def _router_sides(self) -> list[tuple[str, str]]:
        """(public key, preshared key) of every linked router's tunnel towards this hub."""
        sides = []
        for router in self.routers:
            with router.lock:
                interfaces = {item["name"]: item for item in router.menus["/interface/wireguard"]}
                for peer in router.menus["/interface/wireguard/peers"]:
                    interface = interfaces.get(peer.get("interface"))
                    if interface is not None and peer.get("public-key") == self.public_key:
                        sides.append((public_key_of(interface["private-key"]), peer.get("preshared-key")))
        return sides

    def address_holder(self, network: str) -> str | None:
        """The public key of the peer the hub routes `network` to."""
        return next((key for key, networks in self.allowed.items() if network in networks), None)
