"""Router management in a real browser (Debian Chromium driven by Playwright): rename, delete after revoking,
filter by status, select two and revoke them.

System test: needs /usr/bin/chromium and the playwright package; skips without them, fails in CI.
"""

from __future__ import annotations

import time
from urllib.parse import parse_qs

import pytest
from sqlalchemy import update

from portal.audit.service import Actor
from portal.extensions import db
from portal.wireguard import jobs, service
from portal.wireguard.models import Status, VpnConfiguration
from tests.conftest import configuration_of, run_worker, served, sign_in

pytestmark = pytest.mark.system


def routers(app, tenant_id: int, *names: str) -> list[int]:
    """Routers with active configurations, added as the form would add them."""
    with app.app_context():
        added = [service.add_router(Actor.system("test"), tenant_id, name) for name in names]
        ids, hub_id = [router.id for router in added], added[0].current_configuration.hub_id
        db.session.commit()
        jobs.sync_hub.wake(hub_id)
    run_worker(app)
    assert {configuration_of(app, router_id).status for router_id in ids} == {Status.ACTIVE}
    return ids



def listed(page) -> list[str]:
    return page.locator("#router-table tbody tr td:nth-child(2) a").all_inner_texts()


def wait_for_listed(page, names: list[str]) -> None:
    """Until htmx has swapped in a table listing exactly `names`."""
    page.wait_for_function("names => JSON.stringify(Array.from(document.querySelectorAll("
                           "'#router-table tbody tr td:nth-child(2) a'), a => a.innerText)) === JSON.stringify(names)",
                           arg=names)
    assert listed(page) == names


def test_a_router_is_renamed_from_the_list(app, tenant_admin, browser_page):
    page = browser_page
    [router_id] = routers(app, tenant_admin[0], "Branch 12")
    with served(app) as base_url:
        sign_in(page, base_url, tenant_admin[1])
        page.locator(f'tr[data-router-id="{router_id}"]').get_by_role("link", name="Edit").click()
        page.wait_for_url(f"{base_url}/routers/{router_id}/edit")
        page.get_by_label("Name").fill("Branch; 12")
        page.get_by_role("button", name="Save").click()
        assert "“;” is not allowed" in page.locator("#name-error").inner_text()  # htmx swapped the form in place
        # htmx focuses the swapped form's autofocus field a moment after the swap: typing before that would land
        # the note's text in the name field
        page.wait_for_function("() => document.activeElement && document.activeElement.id === 'name'")
        page.get_by_label("Name").fill("Café Zürich 2")
        page.get_by_label("Note").fill("Behind the espresso machine")
        page.get_by_role("button", name="Save").click()
        page.wait_for_url(f"{base_url}/routers/{router_id}")
        assert page.get_by_role("heading", level=1).inner_text() == "Café Zürich 2"
        assert "Router Café Zürich 2 saved." in page.locator(".flash").inner_text()


def test_a_router_is_deleted_once_its_configuration_is_revoked(app, tenant_admin, browser_page):
    page = browser_page
    [router_id] = routers(app, tenant_admin[0], "Retired site")
    with served(app) as base_url:
        sign_in(page, base_url, tenant_admin[1])
        page.goto(f"{base_url}/routers/{router_id}/delete")
        assert "cannot be deleted yet" in page.get_by_role("heading", level=1).inner_text()
        page.get_by_role("link", name="Revoke its configuration…").click()
        page.get_by_role("button", name="Revoke for good").click()
        page.wait_for_url(f"{base_url}/routers/{router_id}")
        run_worker(app)
        assert configuration_of(app, router_id).status == Status.REVOKED

        page.goto(f"{base_url}/routers/{router_id}/delete")
        page.get_by_role("button", name="Delete Retired site").click()
        page.wait_for_url(f"{base_url}/routers")
        assert "Router Retired site deleted." in page.locator(".flash").inner_text()
        assert "Retired site" not in listed(page)


def test_the_list_filters_by_status(app, tenant_admin, browser_page):
    page = browser_page
    working, broken = routers(app, tenant_admin[0], "Working one", "Broken one")
    with app.app_context():
        db.session.execute(update(VpnConfiguration).where(VpnConfiguration.router_id == broken)
                           .values(status=Status.FAILED, last_error="hub refused the peer"))
        db.session.commit()
    with served(app) as base_url:
        sign_in(page, base_url, tenant_admin[1])
        assert sorted(listed(page)) == ["Broken one", "Working one"]
        page.get_by_label("Status").select_option("failed")
        page.wait_for_url("**status=failed**")
        wait_for_listed(page, ["Broken one"])
        assert "status=failed" in page.locator("#router-table").get_attribute("data-live-src")
        page.get_by_label("Status").select_option("active")
        page.wait_for_url("**status=active**")
        wait_for_listed(page, ["Working one"])


def test_a_filter_chosen_while_the_table_refreshes_itself_is_the_one_shown(app, tenant_admin, browser_page):
    """The table fetches itself again when the page's socket connects. A filter chosen while that refresh is on its
    way must win, even when the refresh answers first: its answer replaces the table, and the filter's answer
    landed in the replaced one, unseen (it happened in CI: the URL said status=failed, the table listed both)."""
    page = browser_page
    working, broken = routers(app, tenant_admin[0], "Working one", "Broken one")
    with app.app_context():
        db.session.execute(update(VpnConfiguration).where(VpnConfiguration.router_id == broken)
                           .values(status=Status.FAILED))
        db.session.commit()
    answer_after = {None: 0.5, "failed": 1.5}  # seconds: the refresh answers first, the filter after it

    def slow_table_fetches(environ, start_response):
        if environ["PATH_INFO"] == "/routers" and environ.get("HTTP_HX_REQUEST"):
            time.sleep(answer_after.get(parse_qs(environ["QUERY_STRING"]).get("status", [None])[0], 0))
        return app(environ, start_response)

    with served(slow_table_fetches) as base_url:
        sign_in(page, base_url, tenant_admin[1])
        page.wait_for_function("() => window.portalLive && window.portalLive.refreshes > 0")  # on its way
        page.get_by_label("Status").select_option("failed")
        wait_for_listed(page, ["Broken one"])
        page.wait_for_timeout(1000)
        assert listed(page) == ["Broken one"]


def test_the_lines_to_run_on_an_unmanaged_hub_are_copied_with_one_click(app, tenant_admin, browser_page):
    """The tests' hub is one the portal does not manage: the router page shows what to run on it as root, with a
    Copy button, also in the panel the page fetches again when its socket connects."""
    from playwright.sync_api import expect

    page = browser_page
    [router_id] = routers(app, tenant_admin[0], "Copied gate")
    with served(app) as base_url:
        page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base_url)
        sign_in(page, base_url, tenant_admin[1])
        page.goto(f"{base_url}/routers/{router_id}")
        page.wait_for_function("() => window.portalLive && window.portalLive.refreshes > 0"
                               " && !document.querySelector('.htmx-request')")
        button = page.locator("[data-copy='hub-add-commands']")
        button.click()
        expect(button).to_have_text("Copied")
        copied = page.evaluate("() => navigator.clipboard.readText()")
        assert copied == page.locator("#hub-add-commands").inner_text()
        assert copied.startswith("umask 077") and "\nwg set wg0 peer " in copied


def test_two_selected_routers_are_revoked_together(app, tenant_admin, browser_page):
    page = browser_page
    first, second, _ = routers(app, tenant_admin[0], "North gate", "South gate", "West gate")
    with served(app) as base_url:
        sign_in(page, base_url, tenant_admin[1])
        page.get_by_label("Select North gate").check()
        page.get_by_label("Select South gate").check()
        # A refresh of the table (here a search that still shows both) keeps the ticks.
        page.get_by_label("Search by name").fill("gate")
        page.wait_for_url("**q=gate**")
        assert page.get_by_label("Select North gate").is_checked()
        assert page.get_by_label("Select South gate").is_checked()
        assert not page.get_by_label("Select West gate").is_checked()

        page.get_by_role("button", name="Revoke selected…").click()
        page.wait_for_url(f"{base_url}/routers/bulk/revoke")
        assert page.get_by_role("heading", level=1).inner_text() == "Revoke the configurations of 2 routers?"
        page.get_by_role("button", name="Revoke 2 configurations").click()
        page.wait_for_url(f"{base_url}/routers")
        assert "Revoking 2 configurations." in page.locator(".flash").inner_text()
        run_worker(app)
        statuses = {configuration_of(app, router_id).status for router_id in (first, second)}
        assert statuses == {Status.REVOKED}
