"""Live pages in a real browser (Debian Chromium driven by Playwright), a real worker process and Redis.

Nothing here reloads a page to see a change: each check waits for the page to change by itself, and a
marker set in the page's JavaScript proves it was not reloaded. On failure, screenshots of the dashboard
and of the router page go to PORTAL_TEST_ARTIFACTS (default test-artifacts).

System test: needs /usr/bin/chromium and playwright; skips without them, fails when PORTAL_E2E=required.
"""

from __future__ import annotations

import os
import re
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import select

from portal.audit.service import Actor
from portal.extensions import db
from portal.wireguard import jobs as wireguard_jobs
from portal.wireguard import service as wireguard
from tests import vectors
from tests.conftest import (
    ROOT,
    add_router,
    configuration_of,
    require,
    retire_hub,
    router_id_from,
    run_worker,
    served,
    unique,
    worker_process,
)
from tests.web.test_live import private_redis

pytestmark = pytest.mark.system

ARTIFACTS = Path(os.environ.get("PORTAL_TEST_ARTIFACTS", ROOT / "test-artifacts"))
LIVE = "#live-indicator[data-state='live']"
TIMEOUT = 20_000  # ms: a worker process starts, provisions, and the hint comes back


class Person:
    """One browser context (one login session) with any number of tabs; collects script and CSP errors."""

    def __init__(self, chromium, base_url: str):
        self.base_url = base_url
        self.context = chromium.new_context(accept_downloads=True)
        self.context.set_default_timeout(TIMEOUT)
        self.errors: list[str] = []

    def tab(self, path: str = ""):
        page = self.context.new_page()
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("console", lambda message: message.type == "error" and not message.text.startswith(
            "Failed to load resource") and self.errors.append(message.text))  # CSP violations land here
        page.on("response", lambda response: response.status >= 400 and not response.url.endswith("/favicon.ico")
                and self.errors.append(f"{response.status} {response.url}"))
        if path:
            self.open(page, path)
        return page

    def open(self, page, path: str) -> None:
        page.goto(self.base_url + path)
        page.locator(LIVE).wait_for()  # connected: from here on no hint is missed
        page.evaluate("window.notReloaded = true")

    def log_in(self, email: str):
        page = self.tab()
        page.goto(f"{self.base_url}/login")
        page.get_by_label("E-mail").fill(email)
        page.get_by_label("Password").fill(vectors.PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{self.base_url}/routers")
        return page

    def close(self) -> None:
        self.context.close()


@contextmanager
def screenshots_on_failure(person: Person, name: str, router_path: dict):
    try:
        yield
    except BaseException:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page = person.tab()
        for label, path in (("dashboard", "/dashboard"), ("router", router_path.get("path"))):
            if path:
                try:
                    page.goto(person.base_url + path)
                    page.screenshot(path=str(ARTIFACTS / f"{name}-{label}.png"), full_page=True)
                except Exception as error:  # the failure itself matters more than its picture
                    print(f"no screenshot of {label}: {error}")
        raise


def run_worker_process() -> None:
    worker = worker_process("--burst")
    try:
        assert worker.wait(timeout=60) == 0
    except subprocess.TimeoutExpired:
        worker.kill()
        raise


def not_reloaded(page) -> bool:
    return page.evaluate("window.notReloaded === true")


def test_a_router_goes_active_and_revoked_live_and_another_tenant_sees_none_of_it(
        app, chromium, tenant_admin, other_tenant_admin):
    with served(app) as base_url:
        alice, bob = Person(chromium, base_url), Person(chromium, base_url)
        router = {}
        try:
            with screenshots_on_failure(alice, "router-lifecycle", router):
                bob_list = bob.log_in(other_tenant_admin[1])
                bob.open(bob_list, "/routers")

                form = alice.log_in(tenant_admin[1])
                alice.open(form, "/routers/new")
                form.get_by_label("Name").fill("Live branch")
                form.get_by_role("button", name="Add router").click()
                form.wait_for_url(re.compile(r".*/routers/\d+$"))
                router["path"] = form.url.removeprefix(base_url)
                router_id = int(router["path"].rsplit("/", 1)[1])

                listing = alice.tab("/routers")
                row = listing.locator(f"tr[data-router-id='{router_id}']")
                row.locator(".status").get_by_text("pending").wait_for()
                router_page = alice.tab(router["path"])
                dashboard = alice.tab("/dashboard")
                assert "pending" in router_page.locator("#configuration-panel .status").first.inner_text()

                run_worker_process()  # another process provisions; the hints come back through Redis
                row.locator(".status").get_by_text("active").wait_for()
                panel = router_page.locator("#configuration-panel")
                panel.locator(".status").get_by_text("active").wait_for()
                steps = router_page.locator("#job-steps")
                steps.get_by_text("configuration.provision.started").wait_for()
                steps.get_by_text("configuration.provision.succeeded").wait_for()
                dashboard.locator("#recent-events").get_by_text("configuration.provision.succeeded").wait_for()
                assert all(not_reloaded(page) for page in (listing, router_page, dashboard))

                with router_page.expect_download() as rsc:
                    router_page.get_by_role("link", name="Download RouterOS script (.rsc)").click()
                assert rsc.value.suggested_filename.startswith("live-branch-cfg")
                script = Path(rsc.value.path()).read_text()
                assert "/interface wireguard add name=wg-portal" in script and "Live branch" in script

                router_page.get_by_role("link", name="Revoke…").click()
                router_page.get_by_role("button", name="Revoke for good").click()
                router_page.wait_for_url(f"{base_url}{router['path']}")
                row.locator(".status").get_by_text("revoking").wait_for()  # the web process's own hint
                run_worker_process()
                row.locator(".status").get_by_text("revoked").wait_for()
                router_page.locator("#configuration-panel .status").get_by_text("revoked").wait_for()
                router_page.locator("#job-steps").get_by_text("configuration.revoke.succeeded").wait_for()
                dashboard.locator("#recent-events").get_by_text("configuration.revoke.succeeded").wait_for()
                assert not_reloaded(listing) and not_reloaded(dashboard)

                # Bob's page stayed live the whole time, and got not one hint of Alice's.
                assert bob_list.locator("#live-indicator").get_attribute("data-state") == "live"
                assert bob_list.evaluate("window.portalLive.received") == 0
                assert "Live branch" not in bob_list.content()
                assert not_reloaded(bob_list)
                assert alice.errors == [] and bob.errors == []
        finally:
            alice.close()
            bob.close()


def test_after_redis_comes_back_the_page_shows_the_true_state(app, chromium, tenant_admin):
    from portal import create_app

    with private_redis() as (url, start, halt):
        own = create_app({"REDIS_URL": url})
        with served(own) as base_url:
            alice = Person(chromium, base_url)
            try:
                with screenshots_on_failure(alice, "redis-restart", {}):
                    page = alice.log_in(tenant_admin[1])
                    alice.open(page, "/routers")
                    halt()
                    page.locator("#live-indicator[data-state='reconnecting']").wait_for()
                    with own.app_context():  # changed while the page could not hear of it
                        wireguard.add_router(Actor.system("test"), tenant_admin[0], "Added while Redis was down")
                        db.session.commit()
                    start()
                    page.locator(LIVE).wait_for()
                    page.locator("#router-table").get_by_role("link", name="Added while Redis was down").wait_for()
                    page.locator("#subnet-usage").get_by_text("of 254 addresses used").wait_for()
                    assert not_reloaded(page)
            finally:
                alice.close()


@pytest.fixture
def lab_hub(app):
    """A WireGuard lab (wireguard-go hub with its sshd, one router namespace) added to the portal as a hub and
    bootstrapped; retired afterwards. The only place this file touches the lab helpers."""
    from portal.remote import SshRunner
    from portal.wireguard import hubs
    from tests.lab import Lab, lab_missing

    missing = lab_missing()
    require(missing is None, missing or "")
    with Lab(routers=1) as lab:
        with app.app_context():
            saved = hubs.save_hub(Actor.system("test"), lab.hub_settings(unique("live lab hub")))
            db.session.commit()
            hub_id, name = saved.id, saved.name
        result = app.test_cli_runner().invoke(args=["hub", "bootstrap", name])
        assert result.exit_code == 0, result.output
        try:
            yield lab, hub_id
        finally:
            retire_hub(app, hub_id)
    SshRunner.close_all()


def poll_hubs(app) -> None:
    with app.app_context():
        wireguard_jobs.poll_hubs.enqueue()
    run_worker(app)


def test_a_lab_router_goes_online_with_handshake_age_and_traffic_live(app, admin_client, chromium, lab_hub,
                                                                       monkeypatch):
    from playwright.sync_api import expect

    from portal.ipam.pool import hub_address
    from portal.tenancy.models import User
    from portal.wireguard import hubs
    from portal.wireguard.models import Hub

    lab, hub_id = lab_hub
    with app.app_context():
        email = db.session.scalar(select(User.email).where(User.tenant_id == admin_client.tenant_id))
        subnet = hubs.place_tenant(Actor.system("test"), admin_client.tenant_id, db.session.get(Hub, hub_id))
        network = subnet.ip_network
        db.session.commit()
    router_id = router_id_from(add_router(admin_client, "lab-live"))
    run_worker(app)
    configuration = configuration_of(app, router_id)
    assert configuration.status == "active"
    monkeypatch.setitem(app.config, "PORTAL_TRAFFIC_SAMPLE_INTERVAL", 0)  # a sample per poll: a chart at once

    with served(app) as base_url:
        alice = Person(chromium, base_url)
        router = {"path": f"/routers/{router_id}"}
        try:
            with screenshots_on_failure(alice, "lab-online", router):
                listing = alice.log_in(email)
                alice.open(listing, "/routers")
                row = listing.locator(f"tr[data-router-id='{router_id}']")
                row.locator(".connection").get_by_text("offline").wait_for()
                router_page = alice.tab(router["path"])
                dashboard = alice.tab("/dashboard")

                poll_hubs(app)  # a sample with no traffic yet
                conf = admin_client.get(f"/configurations/{configuration.id}/download.conf").get_data(as_text=True)
                lab.routers[0].wg_quick_up(conf)
                assert any(lab.routers[0].ping(str(hub_address(network))) for _ in range(10))
                poll_hubs(app)  # handshake, endpoint and traffic: one hint, and the pages fetch what changed

                connection = row.locator(".connection")
                connection.get_by_text("online").wait_for()
                assert re.fullmatch(r"\d+ s ago", connection.locator(".ago").inner_text())
                first_age = int(connection.locator(".ago").inner_text().split()[0])
                # the age counts on in the page, without asking the server
                expect(connection.locator(".ago")).not_to_have_text(f"{first_age} s ago", timeout=5000)
                router_page.locator("#configuration-panel .status-online").wait_for()
                router_page.locator("#traffic-chart polyline.rx").first.wait_for(state="attached")
                assert "received 0 Bytes" not in router_page.locator("#configuration-panel").inner_text()
                dashboard.locator("#fleet-summary .online-count").get_by_text("1").wait_for()
                assert all(not_reloaded(page) for page in (listing, router_page, dashboard))
                assert alice.errors == []
        finally:
            alice.close()
