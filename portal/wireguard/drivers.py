"""How the portal talks to a WireGuard hub.

Every operation is an "ensure": applying a peer that is already there, or removing one that is gone,
succeeds. Drivers raise `HubUnreachable` (a TransientError) when trying again later may help.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from portal.jobs import TransientError
from portal.wireguard.models import Hub


class HubUnreachable(TransientError):
    pass


@dataclass(frozen=True)
class Peer:
    """A peer as the hub should hold it."""

    public_key: str
    preshared_key: str
    allowed_ips: tuple[str, ...]


@dataclass(frozen=True)
class PeerState:
    """A peer as the hub reports it (`wg show IF dump`)."""

    public_key: str
    endpoint: str | None
    allowed_ips: tuple[str, ...]
    latest_handshake: datetime | None
    rx_bytes: int
    tx_bytes: int


class HubDriver(Protocol):
    def apply_peer(self, hub: Hub, peer: Peer) -> None: ...

    def remove_peer(self, hub: Hub, public_key: str) -> None: ...

    def dump(self, hub: Hub) -> list[PeerState]: ...


class NoneDriver:
    """For a hub the portal does not manage: every operation succeeds without touching anything."""

    def apply_peer(self, hub: Hub, peer: Peer) -> None:
        return None

    def remove_peer(self, hub: Hub, public_key: str) -> None:
        return None

    def dump(self, hub: Hub) -> list[PeerState]:
        return []


DRIVERS: dict[str, Callable[[], HubDriver]] = {"none": NoneDriver}


def driver_for(hub: Hub) -> HubDriver:
    try:
        return DRIVERS[hub.driver]()
    except KeyError:
        raise ValueError(f"hub {hub.name!r} names an unknown driver {hub.driver!r}") from None
