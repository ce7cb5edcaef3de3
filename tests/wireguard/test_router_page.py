"""The router page as a tenant admin reads it: what to run on a hub the portal does not manage, downloads only
once a configuration is active, and a panel that says the configuration's state."""

from __future__ import annotations

from html import unescape

import pytest

from portal.extensions import db
from portal.remote import RemoteCommandFailed
from portal.wireguard import drivers
from portal.wireguard.manual import hub_commands
from portal.wireguard.models import Router
from tests.conftest import add_router, configuration_of, post, router_id_from, run_worker
from tests.web.test_impersonation import staff_client, start_visit


def page_text(client, router_id: int) -> str:
    return unescape(client.get(f"/routers/{router_id}").get_data(as_text=True))


def panel_text(client, router_id: int) -> str:
    """The live configuration panel as the page fetches it again after a hint."""
    response = client.get(f"/routers/{router_id}/configuration", headers={"HX-Request": "true"})
    return unescape(response.get_data(as_text=True))


def secrets_of(app, router_id: int) -> tuple[int, str, str, str]:
    """(configuration id, address, public key, preshared key) of the router's current configuration."""
    configuration = configuration_of(app, router_id)
    return configuration.id, configuration.address, configuration.public_key, configuration.preshared_key


def test_the_exact_commands_for_an_unmanaged_hub(app, admin_client):
    router_id = router_id_from(add_router(admin_client, "Hand made"))
    run_worker(app)
    configuration_id, address, public_key, preshared_key = secrets_of(app, router_id)
    page = page_text(admin_client, router_id)
    assert 'Someone with root on the hub adds it with <a href="#hub-commands">the commands below</a>' in page
    assert "Add the peer to the hub yourself" not in page
    assert (f"umask 077\n"
            f"echo '{preshared_key}' > /etc/wireguard/psk-{configuration_id}\n"
            f"wg set wg0 peer {public_key} preshared-key /etc/wireguard/psk-{configuration_id} "
            f"allowed-ips {address}/32\n"
            f"rm /etc/wireguard/psk-{configuration_id}") in page
    assert (f"[Peer]\n# Hand made, configuration {configuration_id}\nPublicKey = {public_key}\n"
            f"PresharedKey = {preshared_key}\nAllowedIPs = {address}/32") in page
    assert "/etc/wireguard/wg0.conf" in page and "<preshared key>" not in page


def test_staff_see_the_commands_without_the_preshared_key(app, admin_client, support_user):
    router_id = router_id_from(add_router(admin_client, "Looked at"))
    run_worker(app)
    _, address, public_key, preshared_key = secrets_of(app, router_id)
    staff = staff_client(app, support_user)
    assert start_visit(app, staff, support_user, admin_client.tenant_id).status_code == 302
    page = page_text(staff, router_id)
    assert f"wg set wg0 peer {public_key} preshared-key" in page and f"allowed-ips {address}/32" in page
    assert "echo '<preshared key>'" in page and "PresharedKey = <preshared key>" in page
    assert "shown to the tenant's own admins only" in page
    assert preshared_key not in page


def test_a_revoked_configuration_on_an_unmanaged_hub_says_to_remove_the_peer(app, admin_client):
    router_id = router_id_from(add_router(admin_client, "Gone"))
    run_worker(app)
    _, _, public_key, preshared_key = secrets_of(app, router_id)
    remove = f"wg set wg0 peer {public_key} remove"
    confirmation = unescape(admin_client.get(f"/routers/{router_id}/revoke").get_data(as_text=True))
    assert remove in confirmation and "the router can still connect until someone with root on the hub" in confirmation

    assert post(admin_client, f"/routers/{router_id}/revoke").status_code == 303
    run_worker(app)
    page = page_text(admin_client, router_id)
    assert "status-revoked" in page and remove in page
    assert "revoking here did not remove the peer from it, and the router can still connect" in page
    assert "Remove the peer (as root on the hub)" in page and "Add the peer now" not in page
    assert preshared_key not in page and "umask 077" not in page


def test_rotating_on_an_unmanaged_hub_gives_the_line_that_removes_the_current_peer(app, admin_client):
    router_id = router_id_from(add_router(admin_client, "Rekeyed"))
    run_worker(app)
    configuration_id, _, public_key, _ = secrets_of(app, router_id)
    confirmation = unescape(admin_client.get(f"/configurations/{configuration_id}/rotate").get_data(as_text=True))
    assert f"wg set wg0 peer {public_key} remove" in confirmation
    assert "not managed by the portal, which changes nothing" in confirmation


def test_downloads_show_only_once_the_configuration_is_active(app, admin_client):
    router_id = router_id_from(add_router(admin_client, "Patience"))
    configuration_id = configuration_of(app, router_id).id
    pending = page_text(admin_client, router_id)
    assert "status-pending" in pending and "Being provisioned" in pending
    assert "Downloads appear here once the configuration is active." in pending
    assert "download.rsc" not in pending and "download.conf" not in pending and "/qr" not in pending

    run_worker(app)
    active = panel_text(admin_client, router_id)
    assert "status-active" in active and "Ready to download." in active and "Being provisioned" not in active
    assert "Downloads appear here" not in active
    for path in ("download.rsc", "download.conf", "qr"):
        assert f"/configurations/{configuration_id}/{path}" in active


def test_the_panel_says_when_a_configuration_is_being_revoked(app, admin_client):
    router_id = router_id_from(add_router(admin_client, "Leaving"))
    run_worker(app)
    assert post(admin_client, f"/routers/{router_id}/revoke").status_code == 303
    panel = panel_text(admin_client, router_id)  # no worker has run yet
    assert "status-revoking" in panel and "Being revoked" in panel and "download.rsc" not in panel
    run_worker(app)
    assert "Revoked: its keys are erased and its address is free again." in panel_text(admin_client, router_id)


class RefusingDriver(drivers.HubDriver):
    def apply_peers(self, hub, apply=(), remove=()):
        raise RemoteCommandFailed("wg: Unable to modify interface: Operation not permitted")


def test_a_failed_configuration_says_why_and_offers_retry(app, admin_client, monkeypatch):
    router_id = router_id_from(add_router(admin_client, "Refused"))
    monkeypatch.setitem(drivers.DRIVERS, "none", lambda hub: RefusingDriver())
    run_worker(app)
    panel = panel_text(admin_client, router_id)
    assert "status-failed" in panel
    assert "Provisioning failed: " in panel and "Operation not permitted" in panel
    assert "Retry provisioning" in panel and "download.rsc" not in panel and "Downloads appear here" not in panel


def test_the_commands_are_built_from_the_rows(app, admin_client):
    router_id = router_id_from(add_router(admin_client, "Rows"))
    with app.app_context():
        configuration = db.session.get(Router, router_id).current_configuration
        commands = hub_commands(configuration, reveal_key=False)
        assert commands.key_hidden and configuration.preshared_key not in commands.add + commands.peer_section
        assert commands.remove == f"wg set wg0 peer {configuration.public_key} remove"
        configuration.hub.driver = "ssh"
        assert hub_commands(configuration, reveal_key=True) is None  # the portal manages that hub itself
        db.session.rollback()


@pytest.mark.parametrize("status", ["revoking", "revoked"])
def test_only_the_remove_line_once_revocation_starts(app, admin_client, status):
    router_id = router_id_from(add_router(admin_client, f"Off {status}"))
    with app.app_context():
        configuration = db.session.get(Router, router_id).current_configuration
        configuration.status = status
        commands = hub_commands(configuration, reveal_key=True)
        assert commands.add is None and commands.peer_section is None and not commands.key_hidden
        assert commands.remove.endswith(" remove")
        db.session.rollback()
