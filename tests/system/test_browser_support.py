"""Support staff in a real browser (Debian Chromium driven by Playwright): sign in with a TOTP code, look at a
tenant read-only under the banner, find no downloads, end the visit; the tenant's admin sees the visit.

System test: needs /usr/bin/chromium and the playwright package; skips without them, fails in CI.
"""

from __future__ import annotations

import pytest

from tests import vectors
from tests.conftest import add_router, router_id_from, run_worker, served
from tests.conftest import totp_code as fresh_code

pytestmark = pytest.mark.system
REASON = "Ticket 812: customer says Branch 3 is offline"


def sign_in(page, base_url: str, email: str, code: str | None = None) -> None:
    page.goto(f"{base_url}/login")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(vectors.PASSWORD)
    page.get_by_role("button", name="Log in").click()
    if code is not None:
        page.get_by_label("Code", exact=True).fill(code)
        page.get_by_role("button", name="Log in").click()


def test_support_looks_at_a_tenant_read_only_and_the_tenant_sees_the_visit(app, admin_client, support_user,
                                                                           browser_page):
    page = browser_page
    router_id = router_id_from(add_router(admin_client, "Branch 3"))
    run_worker(app)
    with served(app) as base_url:
        sign_in(page, base_url, support_user, fresh_code(app, support_user))
        page.wait_for_url(f"{base_url}/support")

        tenant_name = _tenant_name(app, admin_client.tenant_id)
        page.get_by_label("Search tenants").fill(tenant_name)
        page.get_by_role("button", name="Search").click()
        page.get_by_role("link", name=f"Look at {tenant_name}").click()
        page.get_by_label("Why do you need to look?").fill(REASON)
        page.get_by_label("Code from your authenticator app").fill(fresh_code(app, support_user))
        page.get_by_role("button", name="Start looking").click()
        page.wait_for_url(f"{base_url}/dashboard")

        banner = page.get_by_role("region", name="Support visit")
        assert tenant_name in banner.inner_text() and "read-only" in banner.inner_text()
        assert REASON in banner.inner_text()
        page.goto(f"{base_url}/routers/{router_id}")
        assert "active" in page.locator(".status").first.inner_text()
        assert page.get_by_role("link", name="Download RouterOS script (.rsc)").count() == 0
        assert page.get_by_role("link", name="Rotate keys…").count() == 0
        refused = page.goto(f"{base_url}/configurations/{_configuration_id(app, router_id)}/download.rsc")
        assert refused.status == 403 and "cannot do this while looking at a tenant" in page.content()
        page.go_back()
        page.get_by_role("button", name="End visit").click()
        page.wait_for_url(f"{base_url}/support")
        assert page.get_by_role("region", name="Support visit").count() == 0

    owner = admin_client.get("/audit").get_data(as_text=True)
    assert "Support visits" in owner and support_user in owner and REASON in owner and "read-only" in owner


def _tenant_name(app, tenant_id: int) -> str:
    from portal.extensions import db
    from portal.tenancy.models import Tenant

    with app.app_context():
        return db.session.get(Tenant, tenant_id).name


def _configuration_id(app, router_id: int) -> int:
    from portal.extensions import db
    from portal.wireguard.models import Router

    with app.app_context():
        return db.session.get(Router, router_id).configurations[0].id
