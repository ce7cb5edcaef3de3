"""What a push needs from the hub: its view of a router's handshake, and the peers of a key rotation.

Handshakes come from the hub driver's `dump` (`wg show IF dump` over SSH for a managed hub). A driver without
one (the `none` driver: a hub the portal does not manage) cannot tell whether a router connected, so a push to
a router behind such a hub ends when the router holds the configuration, and key rotation stays hub-only.
"""

from __future__ import annotations

from collections.abc import Sequence

from portal.wireguard.drivers import driver_for
from portal.wireguard.models import Hub
from portal.wireguard.wgtext import HubDump, Peer


def handshakes_visible(hub: Hub) -> bool:
    return callable(getattr(driver_for(hub), "dump", None))


def hub_state(hub: Hub, apply: Sequence[Peer] = (), remove: Sequence[str] = ()) -> HubDump:
    """Apply and remove peers (ensures, in one driver call when there is anything to do), then the hub's dump."""
    driver = driver_for(hub)
    state = driver.apply_peers(hub, apply=list(apply), remove=list(remove)) if apply or remove else None
    return state if state is not None else driver.dump(hub)
