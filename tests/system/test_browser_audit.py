"""The audit log in a real browser (Debian Chromium driven by Playwright): filter by action and time range,
read the targets by name, follow one to its page, and export what the filters select.

System test: needs /usr/bin/chromium and the playwright package; skips without them, fails in CI.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import add_router, router_id_from, served, sign_in

pytestmark = pytest.mark.system
MINUTE = "%Y-%m-%dT%H:%M"


def test_admin_filters_the_log_by_action_and_time_and_follows_a_target(app, admin_client, tenant_admin,
                                                                        browser_page):
    page = browser_page
    alpha = router_id_from(add_router(admin_client, "Alpha"))
    router_id_from(add_router(admin_client, "Beta"))
    now = datetime.now(UTC)
    with served(app) as base_url:
        sign_in(page, base_url, tenant_admin[1], "/audit")

        page.get_by_label("Action").select_option("router.created")
        page.get_by_label("From (UTC)").fill((now - timedelta(hours=1)).strftime(MINUTE))
        page.get_by_label("To (UTC)").fill((now + timedelta(hours=1)).strftime(MINUTE))
        page.get_by_role("button", name="Filter").click()
        page.wait_for_url("**action=router.created**")

        rows = page.locator(".table-scroll").first.locator("tbody tr")
        assert rows.count() == 2
        assert "configuration.created" not in rows.all_inner_texts()[0]
        assert page.get_by_role("link", name="router Beta").is_visible()

        with page.expect_download() as download:
            page.get_by_role("link", name="Export these events (CSV)").click()
        exported = list(csv.DictReader(io.StringIO(download.value.path().read_text())))
        assert sorted(row["target name"] for row in exported) == ["router Alpha", "router Beta"]

        page.get_by_label("From (UTC)").fill((now + timedelta(hours=1)).strftime(MINUTE))
        page.get_by_label("To (UTC)").fill((now - timedelta(hours=1)).strftime(MINUTE))
        page.get_by_role("button", name="Filter").click()
        page.get_by_text("Enter a moment after From.").wait_for()
        assert page.get_by_label("To (UTC)").get_attribute("aria-invalid") == "true"

        page.get_by_label("To (UTC)").fill((now + timedelta(hours=2)).strftime(MINUTE))
        page.get_by_label("From (UTC)").fill((now - timedelta(hours=1)).strftime(MINUTE))
        page.get_by_role("button", name="Filter").click()
        page.get_by_role("link", name="router Alpha").click()
        page.wait_for_url(f"{base_url}/routers/{alpha}")
        assert "Alpha" in page.get_by_role("heading", level=1).inner_text()
