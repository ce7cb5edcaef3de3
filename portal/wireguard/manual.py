"""What a person runs on a hub the portal does not manage (driver `none`): the portal keeps each configuration's
state and keys, someone with root on the hub keeps its peers. Pure text, from the rows; the router page shows it.

wg(8) reads a preshared key from a file, never from its command line, so the recipe writes the key to a 0600 file
with a shell builtin (no process shows it in its arguments), hands the file to `wg set`, and deletes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from portal.wireguard.models import Status, VpnConfiguration
from portal.wireguard.wgtext import check_interface, check_key

PRESHARED_KEY_PLACEHOLDER = "<preshared key>"
OFF_THE_HUB = (Status.REVOKING, Status.REVOKED)


@dataclass(frozen=True)
class HubCommands:
    """For one configuration: the line that removes its peer and, until it is revoked, the lines that add it and
    the section that keeps it across restarts."""

    config_file: str  # the hub's wg-quick file
    remove: str
    add: str | None = None
    peer_section: str | None = None
    key_hidden: bool = False  # the preshared key is PRESHARED_KEY_PLACEHOLDER in `add` and `peer_section`


def hub_commands(configuration: VpnConfiguration, reveal_key: bool) -> HubCommands | None:
    """The commands for the configuration's hub, or None when the portal manages that hub itself. The preshared
    key is in them only when `reveal_key` (the tenant's own admins); others get a placeholder."""
    hub = configuration.hub
    if hub.managed:
        return None
    interface, public_key = check_interface(hub.interface), check_key(configuration.public_key)
    config_file, remove = f"/etc/wireguard/{interface}.conf", f"wg set {interface} peer {public_key} remove"
    if configuration.status in OFF_THE_HUB:
        return HubCommands(config_file, remove)
    preshared_key = configuration.preshared_key
    if preshared_key is not None:
        preshared_key = check_key(preshared_key) if reveal_key else PRESHARED_KEY_PLACEHOLDER
    allowed_ips = f"{configuration.address}/32"
    return HubCommands(
        config_file, remove,
        add=_add_lines(interface, public_key, allowed_ips, preshared_key, f"/etc/wireguard/psk-{configuration.id}"),
        peer_section=_peer_section(public_key, allowed_ips, preshared_key,
                                   f"{configuration.router.name}, configuration {configuration.id}"),
        key_hidden=preshared_key == PRESHARED_KEY_PLACEHOLDER,
    )


def _add_lines(interface: str, public_key: str, allowed_ips: str, preshared_key: str | None, key_file: str) -> str:
    if preshared_key is None:
        return f"wg set {interface} peer {public_key} allowed-ips {allowed_ips}"
    return "\n".join([
        "umask 077",
        f"echo '{preshared_key}' > {key_file}",
        f"wg set {interface} peer {public_key} preshared-key {key_file} allowed-ips {allowed_ips}",
        f"rm {key_file}",
    ])


def _peer_section(public_key: str, allowed_ips: str, preshared_key: str | None, comment: str) -> str:
    lines = ["[Peer]", f"# {' '.join(comment.split())}", f"PublicKey = {public_key}"]
    if preshared_key is not None:
        lines.append(f"PresharedKey = {preshared_key}")
    lines.append(f"AllowedIPs = {allowed_ips}")
    return "\n".join(lines)
