"""How the portal talks to a WireGuard hub.

Every operation is an "ensure": applying a peer that is already there, or removing one that is gone,
succeeds. Commands reach the hub through a runner (`portal.remote`): `ssh` (paramiko, pinned host key)
or `local` (subprocess, for a portal installed on the hub). Keys go to `wg` on stdin or through 0600
files, never on a command line. Unreachable hubs raise `HostUnreachable` (transient: the job retries).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib.resources import files

from portal.remote import Runner, checked, runner_for
from portal.wireguard.models import Hub
from portal.wireguard.wgtext import HubDump, Peer, batch_lines, check_interface, parse_dump

SCRIPTS = files("portal.wireguard") / "scripts"


def script(name: str) -> str:
    return (SCRIPTS / name).read_text()


class HubDriver:
    def apply_peers(self, hub: Hub, apply: Sequence[Peer] = (), remove: Sequence[str] = ()) -> HubDump | None:
        """Apply and remove peers in one go; the hub's state right after, where the driver can see it."""
        raise NotImplementedError

    def apply_peer(self, hub: Hub, peer: Peer) -> HubDump | None:
        return self.apply_peers(hub, apply=[peer])

    def remove_peer(self, hub: Hub, public_key: str) -> HubDump | None:
        return self.apply_peers(hub, remove=[public_key])


class WgDriver(HubDriver):
    """A Linux hub managed with `wg`, `ip` and `nft` through a runner."""

    def __init__(self, runner: Runner):
        self.runner = runner

    def apply_peers(self, hub: Hub, apply: Sequence[Peer] = (), remove: Sequence[str] = ()) -> HubDump:
        result = self.runner.run(["bash", "-c", script("hub-peers.sh"), "hub-peers", check_interface(hub.interface)],
                                 stdin=batch_lines(list(apply), list(remove)))
        return parse_dump(checked(result, "hub-peers.sh").stdout)

    def dump(self, hub: Hub) -> HubDump:
        result = self.runner.run(["wg", "show", check_interface(hub.interface), "dump"])
        return parse_dump(checked(result, "wg show").stdout)

    def bootstrap(self, hub: Hub, wg_config: str, firewall: str, addresses: Sequence[str]) -> list[str]:
        """Bring the hub to the desired state; the lines say what changed ("unchanged" when nothing did)."""
        result = self.runner.run(["bash", "-c", script("hub-bootstrap.sh"), "hub-bootstrap",
                                  check_interface(hub.interface), firewall, *addresses], stdin=wg_config)
        return checked(result, "hub-bootstrap.sh").stdout.split("\n")[:-1]


class NoneDriver(HubDriver):
    """For a hub the portal does not manage: every change succeeds without touching anything."""

    def apply_peers(self, hub: Hub, apply: Sequence[Peer] = (), remove: Sequence[str] = ()) -> None:
        return None


def _wg_driver(hub: Hub) -> WgDriver:
    return WgDriver(runner_for(hub.driver, hub, f"hub {hub.name!r}"))


DRIVERS: dict[str, Callable[[Hub], HubDriver]] = {
    "none": lambda hub: NoneDriver(),
    "ssh": _wg_driver,
    "local": _wg_driver,
}


def driver_for(hub: Hub) -> HubDriver:
    try:
        factory = DRIVERS[hub.driver]
    except KeyError:
        raise ValueError(f"hub {hub.name!r} names an unknown driver {hub.driver!r}") from None
    return factory(hub)
