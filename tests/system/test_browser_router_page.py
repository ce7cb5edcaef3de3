"""The router page in a real browser (Debian Chromium driven by Playwright): a router on a hub the portal does not
manage shows the commands for the hub, and its panel moves from "being provisioned" to "ready" by itself, with
nothing left on the page that still says it is being provisioned.

System test: needs /usr/bin/chromium and playwright; skips without them, fails when PORTAL_E2E=required.
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import configuration_of, run_worker, served, sign_in

pytestmark = pytest.mark.system

LIVE = "#live-indicator[data-state='live']"



def test_an_unmanaged_hubs_router_shows_its_commands_and_its_state_live(app, browser_page, tenant_admin):
    page = browser_page
    with served(app) as base_url:
        sign_in(page, base_url, tenant_admin[1])
        page.goto(f"{base_url}/routers/new")
        page.get_by_label("Name").fill("Hand-run hub")
        page.get_by_role("button", name="Add router").click()
        page.wait_for_url(re.compile(r".*/routers/\d+$"))
        page.locator(LIVE).wait_for()  # connected: the hint of the worker's change is not missed
        page.evaluate("window.notReloaded = true")
        configuration = configuration_of(app, int(page.url.rsplit("/", 1)[1]))

        panel = page.locator("#configuration-panel")
        assert "Being provisioned" in panel.inner_text()
        assert "Downloads appear here once the configuration is active." in panel.inner_text()
        assert page.get_by_role("link", name="Download RouterOS script (.rsc)").count() == 0
        commands = page.locator("#hub-commands")
        assert (f"wg set wg0 peer {configuration.public_key} preshared-key /etc/wireguard/psk-{configuration.id} "
                f"allowed-ips {configuration.address}/32") in commands.inner_text()
        assert f"PresharedKey = {configuration.preshared_key}" in commands.inner_text()
        page.get_by_role("link", name="the commands below").click()
        assert page.url.endswith("#hub-commands")

        run_worker(app)
        page.get_by_role("link", name="Download RouterOS script (.rsc)").wait_for()  # the panel, fetched again
        assert page.evaluate("window.notReloaded === true")
        assert "Ready to download." in panel.inner_text()
        assert "being provisioned" not in page.locator("main").inner_text().lower()  # no stale banner either
        assert page.get_by_role("link", name="Show QR code for the WireGuard app").count() == 1
        assert "Downloads appear here" not in panel.inner_text()
