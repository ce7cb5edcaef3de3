"""Many admins clicking at once: allocation stays unique under a real threaded server."""

from __future__ import annotations

import http.cookiejar
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from portal.extensions import db
from portal.wireguard.models import Router, VpnConfiguration
from tests import vectors
from tests.conftest import CSRF_FIELD, served

SIMULTANEOUS = 50


class Browser:
    """A cookie-keeping HTTP client that does not follow redirects."""

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), self._NoRedirect)

    def request(self, path: str, form: dict | None = None) -> tuple[int, str]:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        try:
            with self.opener.open(self.base_url + path, data=data, timeout=60) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def csrf_token(self, path: str) -> str:
        match = CSRF_FIELD.search(self.request(path)[1])
        return match.group(1) or match.group(2)


def logged_in(base_url: str, email: str) -> tuple[Browser, str]:
    """A browser logged in as `email`, and the CSRF token of its session."""
    browser = Browser(base_url)
    status, _ = browser.request("/login", {"email": email, "password": vectors.PASSWORD,
                                           "csrf_token": browser.csrf_token("/login")})
    assert status == 302
    return browser, browser.csrf_token("/routers/new")


def test_simultaneous_add_router_requests_get_distinct_addresses(app, tenant_admin):
    tenant_id, email = tenant_admin
    with served(app) as base_url:
        browser, token = logged_in(base_url, email)

        def add(index: int) -> int:
            return browser.request("/routers/new", {"name": f"burst-{index}", "csrf_token": token})[0]

        with ThreadPoolExecutor(SIMULTANEOUS) as pool:
            statuses = list(pool.map(add, range(SIMULTANEOUS)))

    assert statuses == [303] * SIMULTANEOUS
    with app.app_context():
        addresses = db.session.scalars(
            select(VpnConfiguration.address).where(VpnConfiguration.tenant_id == tenant_id)).all()
    assert len(addresses) == SIMULTANEOUS and len(set(addresses)) == SIMULTANEOUS
    host_numbers = sorted(int(address.rsplit(".", 1)[1]) for address in addresses)
    assert host_numbers == list(range(2, 2 + SIMULTANEOUS))  # lowest free first, no gaps


def test_simultaneous_routers_of_one_name_make_one_router_and_clear_refusals(app, tenant_admin):
    tenant_id, email = tenant_admin
    with served(app) as base_url:
        browser, token = logged_in(base_url, email)
        with ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(lambda _: browser.request("/routers/new", {"name": "twin", "csrf_token": token}),
                                    range(10)))

    assert sorted(status for status, _ in answers) == [303] + [422] * 9
    assert all("You already have a router named" in page for status, page in answers if status == 422)
    with app.app_context():
        assert db.session.scalar(select(func.count()).where(Router.tenant_id == tenant_id)) == 1
