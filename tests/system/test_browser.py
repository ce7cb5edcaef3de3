"""A tenant admin in a real browser (Debian Chromium driven by Playwright): htmx, CSRF and downloads.

System test: needs /usr/bin/chromium and the playwright package; skips without them, fails in CI.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import vectors
from tests.conftest import run_worker, served

pytestmark = pytest.mark.system


def test_admin_adds_a_router_sees_errors_inline_and_downloads_its_configs(app, tenant_admin, browser_page):
    page = browser_page
    with served(app) as base_url:
        page.goto(f"{base_url}/routers")
        page.get_by_label("E-mail").fill(tenant_admin[1])
        page.get_by_label("Password").fill(vectors.PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{base_url}/routers")

        page.get_by_role("link", name="Add router").click()
        page.get_by_label("Name").fill('x"; /system reset-configuration; :put "')
        page.get_by_role("button", name="Add router").click()
        error = page.locator("#name-error")
        error.wait_for()
        assert "letters, digits" in error.inner_text()
        assert page.url == f"{base_url}/routers/new"  # htmx swapped the form; no page load
        # htmx focuses the autofocus field once the swap settles, a moment after the error shows
        page.wait_for_function("() => document.activeElement && document.activeElement.id === 'name'", timeout=5000)

        page.get_by_label("Name").fill("Branch office 7")
        page.get_by_role("button", name="Add router").click()
        page.wait_for_url(f"{base_url}/routers/*")
        assert "pending" in page.locator("#configuration-panel").inner_text()

        run_worker(app)
        page.reload()
        assert "active" in page.locator(".status").first.inner_text()
        with page.expect_download() as rsc:
            page.get_by_role("link", name="Download RouterOS script (.rsc)").click()
        assert rsc.value.suggested_filename.startswith("branch-office-7-cfg")
        assert "/interface wireguard add name=wg-portal" in Path(rsc.value.path()).read_text()
        with page.expect_download() as conf:
            page.get_by_role("link", name="Download wg-quick config (.conf)").click()
        assert "[Interface]" in Path(conf.value.path()).read_text()

        page.get_by_role("link", name="All routers").click()
        page.wait_for_url(f"{base_url}/routers")  # loaded, so htmx listens before the search is typed
        page.get_by_label("Search by name").fill("nothing like it")
        page.get_by_text("No router matches").wait_for()
        page.get_by_label("Search by name").fill("branch")
        page.get_by_role("link", name="Branch office 7").wait_for()
        page.screenshot(path="/tmp/portal-routers.png", full_page=True)
