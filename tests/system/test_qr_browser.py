"""The QR code of a `.conf` in a real browser (Debian Chromium driven by Playwright): one click fetches it with
htmx into the router page, under the portal's Content-Security-Policy, without a page load (issue 12, section 3).

System test: needs /usr/bin/chromium and the playwright package; skips without them, fails in CI.
"""

from __future__ import annotations

import pytest

from tests.conftest import add_router, login, router_id_from, run_worker, served
from tests.system.test_browser_live import Person, not_reloaded

pytestmark = pytest.mark.system


def test_show_qr_code_swaps_the_svg_into_the_router_page(app, chromium, tenant_admin):
    client = app.test_client()
    login(client, tenant_admin[1])
    router_id = router_id_from(add_router(client, "Phone tunnel router"))
    run_worker(app)
    with served(app) as base_url:
        person = Person(chromium, base_url)
        try:
            page = person.log_in(tenant_admin[1])
            person.open(page, f"/routers/{router_id}")
            assert page.locator("#configuration-qr svg").count() == 0
            page.get_by_role("link", name="Show QR code for the WireGuard app").click()
            svg = page.locator("#configuration-qr svg")
            svg.wait_for()
            box = svg.bounding_box()
            assert box is not None and box["width"] >= 250 and box["width"] == box["height"]
            assert "name the tunnel" in page.locator("#configuration-qr").inner_text()
            assert not_reloaded(page) and page.url == f"{base_url}/routers/{router_id}"
            page.screenshot(path="/tmp/portal-qr.png", full_page=True)
            assert person.errors == []  # no CSP violation, no failed request
        finally:
            person.close()
