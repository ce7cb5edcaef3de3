"""Every page, as each kind of user reaches it, in a real browser (Debian Chromium driven by Playwright), at
1280 x 800 and at a phone's 375 x 740: no sideways scrolling, no serious or critical axe-core finding, nothing
in the console (a Content-Security-Policy violation is an error there), and a full-page screenshot of each in
test-artifacts/screenshots/ (PORTAL_TEST_ARTIFACTS moves test-artifacts/) for a person to look at.

A new GET endpoint fails `test_every_page_is_visited_or_skipped_on_purpose` until it is added to VISITS or to
SKIPPED with its reason.

System test: needs /usr/bin/chromium and the playwright package; skips without them, fails in CI.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from flask import url_for

from tests import vectors
from tests.conftest import ROOT, served, totp_code
from tests.support.pages import Seed, seed_portal

pytestmark = pytest.mark.system

AXE = ROOT / "tests" / "vendor" / "axe.min.js"
SCREENSHOTS = Path(os.environ.get("PORTAL_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "screenshots"
VIEWPORTS = ({"width": 1280, "height": 800}, {"width": 375, "height": 740})
BLOCKING_IMPACTS = ("serious", "critical")


@dataclass(frozen=True)
class Visit:
    """One page as one role sees it: the endpoint, and which of the seeded ids fill its URL arguments."""

    role: str
    endpoint: str
    ids: dict[str, str] = field(default_factory=dict)  # URL argument -> Seed field
    variant: str = ""  # tells two visits of one endpoint apart in names
    status: int = 200

    @property
    def name(self) -> str:
        return "-".join(filter(None, (self.role, self.endpoint, self.variant)))

    def path(self, seed: Seed) -> str:
        return url_for(self.endpoint, **{argument: seed[source] for argument, source in self.ids.items()})


def tenant(endpoint: str, **ids: str) -> Visit:
    return Visit("tenant_admin", endpoint, ids)


def staff(endpoint: str, **ids: str) -> Visit:
    return Visit("platform_admin", endpoint, ids)


VISITS = (
    Visit("anonymous", "auth.login"),
    Visit("anonymous", "auth.login_code"),  # reached by the password step (see Browsers.open)
    Visit("anonymous", "links.landing", {"token": "link_token"}),
    Visit("anonymous", "account.invitation", {"token": "invite_token"}),
    Visit("anonymous", "account.password_reset", {"token": "reset_token"}),
    tenant("dashboard.dashboard"),
    tenant("wireguard.routers"),
    tenant("wireguard.new_router"),
    tenant("wireguard.subnet"),
    tenant("wireguard.router", router_id="router_id"),
    Visit("tenant_admin", "wireguard.router", {"router_id": "pending_router_id"}, "pending"),
    tenant("wireguard.qr", configuration_id="configuration_id"),
    tenant("wireguard.rotate", configuration_id="configuration_id"),
    tenant("wireguard.revoke", router_id="router_id"),
    tenant("wireguard.edit_router", router_id="router_id"),
    tenant("wireguard.delete_router", router_id="router_id"),
    tenant("routeros.edit", router_id="router_id"),
    tenant("fleet.upload"),
    tenant("fleet.import_status", import_id="import_id"),
    tenant("openvpn.clients"),
    tenant("openvpn.new_client"),
    tenant("openvpn.client", client_id="openvpn_client_id"),
    tenant("openvpn.revoke", client_id="openvpn_client_id"),
    tenant("audit.tenant_events"),
    tenant("users.users_of_tenant"),
    tenant("users.user_of_tenant", user_id="admin_user_id"),
    tenant("api_tokens.tokens_page"),
    tenant("api.docs"),
    tenant("account.index"),
    tenant("account.password"),
    tenant("account.sessions_page"),
    tenant("auth.two_factor"),
    Visit("tenant_admin", "wireguard.router", {"router_id": "missing_id"}, "missing", status=404),
    staff("tenancy.tenants"),
    staff("tenancy.users"),
    staff("tenancy.user", user_id="admin_user_id"),
    staff("tenancy.edit_tenant", tenant_id="tenant_id"),
    staff("tenancy.remove_tenant", tenant_id="tenant_id"),
    staff("hubs.tenant_routers", tenant_id="tenant_id"),
    staff("audit.any_tenant_events", tenant_id="tenant_id"),
    staff("hubs.hubs"),
    Visit("platform_admin", "hubs.edit_hub", variant="new"),
    staff("hubs.edit_hub", hub_id="hub_id"),
    staff("openvpn_servers.servers"),
    Visit("platform_admin", "openvpn_servers.edit_server", variant="new"),
    staff("openvpn_servers.edit_server", server_id="openvpn_server_id"),
    staff("account.index"),
    Visit("support", "support.home"),
    Visit("support", "support.start", {"tenant_id": "tenant_id"}),
    Visit("support_visit", "dashboard.dashboard"),
    Visit("support_visit", "wireguard.routers"),
    Visit("support_visit", "wireguard.router", {"router_id": "router_id"}),
    Visit("support_visit", "openvpn.client", {"client_id": "openvpn_client_id"}),
)

SKIPPED = {
    "not a page (files, JSON, metrics)": (
        "static", "ops.healthz", "ops.readyz", "ops.metrics", "api.index", "api.health",
        "api.openapi_document", "api.list_routers", "api.get_router", "api.get_router_import",
        "api.list_configurations", "api.get_configuration", "api.subnet_info", "api.list_clients", "api.get_client"),
    "a download": (
        "wireguard.download", "openvpn.download", "fleet.download_zip", "audit.tenant_export",
        "audit.any_tenant_export", "links.router_fetch", "api.download_linux", "api.download_mikrotik",
        "api.download_client"),
    "a fragment of a visited page (served alone to htmx)": (
        "dashboard.events_panel", "dashboard.fleet_panel", "dashboard.online_panel", "dashboard.subnet_panel",
        "wireguard.router_panel", "openvpn.client_panel", "links.router_panel", "links.client_panel",
        "routeros.panel", "fleet.import_progress"),
    "redirects to the user's home page or the login page": ("auth.index",),
}

# Pages that fail for a change waiting in a file this test's author does not own: (role, endpoint, variant) ->
# the file. Strict, so the marker goes as soon as the page passes.
WAITING_FOR: dict[tuple[str, str, str], str] = {}


def _param(visit: Visit):
    waiting = WAITING_FOR.get((visit.role, visit.endpoint, visit.variant))
    marks = [pytest.mark.xfail(strict=True, reason=f"waiting for a change in {waiting}")] if waiting else []
    return pytest.param(visit, id=visit.name, marks=marks)


def test_every_page_is_visited_or_skipped_on_purpose(app):
    get_endpoints = {rule.endpoint for rule in app.url_map.iter_rules() if "GET" in rule.methods}
    visited = {visit.endpoint for visit in VISITS}
    skipped = {endpoint for endpoints in SKIPPED.values() for endpoint in endpoints}
    assert not visited & skipped, "both visited and skipped"
    assert get_endpoints - visited - skipped == set(), "new pages: add them to VISITS, or to SKIPPED with a reason"
    assert (visited | skipped) - get_endpoints == set(), "endpoints that are gone"


@pytest.mark.parametrize("visit", [_param(visit) for visit in VISITS])
def test_the_page_fits_a_phone_and_a_desktop_and_passes_axe(visit: Visit, browsers: Browsers):
    page, errors = browsers.open(visit)
    problems = [f"console: {error}" for error in errors]
    for viewport in VIEWPORTS:
        page.set_viewport_size(viewport)
        page.evaluate(NEXT_FRAMES)  # the page's resize handlers have run
        found = _sideways_scrolling(page) + _axe_findings(page)
        problems += [f"{viewport['width']} px: {problem}" for problem in found]
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{visit.name}-{viewport['width']}.png"), full_page=True,
                        timeout=60_000)  # the API reference is long
    assert not problems, f"{visit.name} ({page.url}):\n" + "\n".join(problems)


# --- the browsers, one signed-in context per role ------------------------------------------------------------

class Browsers:
    """The served portal and, per role, one Chromium page signed in once and reused for every visit."""

    def __init__(self, app, chromium, base_url: str, seed: Seed):
        self.app, self.chromium, self.base_url, self.seed = app, chromium, base_url, seed
        self.pages: dict[str, object] = {}
        self.errors: list[str] = []

    def open(self, visit: Visit):
        """The visit's page loaded and settled, and what the console said while it loaded."""
        with self.app.test_request_context():
            path = visit.path(self.seed)
        page = self._page_of(visit.role)
        self.errors.clear()
        if visit.endpoint == "auth.login_code":
            self._password_step(page, self.seed.platform_admin_email)
        else:
            response = page.goto(self.base_url + path)
            assert response.status == visit.status, f"{path}: {response.status}"
        _settle(page)
        expected = f"status of {visit.status}" if visit.status >= 400 else None
        return page, [error for error in self.errors if not (expected and expected in error)]

    def _page_of(self, role: str):
        if role not in self.pages:
            self.pages[role] = page = self._new_page()
            if role != "anonymous":
                self._sign_in(page, role)
        page = self.pages[role]
        page.set_viewport_size(VIEWPORTS[0])
        return page

    def _new_page(self):
        context = self.chromium.new_context(viewport=VIEWPORTS[0])
        context.set_default_timeout(15_000)
        # An init script is not subject to the page's Content-Security-Policy; a script tag would be refused.
        context.add_init_script(path=str(AXE))
        page = context.new_page()
        page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        return page

    def _sign_in(self, page, role: str) -> None:
        seed = self.seed
        email = {"tenant_admin": seed.admin_email, "platform_admin": seed.platform_admin_email,
                 "support": seed.support_email, "support_visit": seed.visiting_support_email}[role]
        self._password_step(page, email)
        if role != "tenant_admin":
            page.get_by_label("Code", exact=True).fill(totp_code(self.app, email))
            page.get_by_role("button", name="Log in").click()
        page.wait_for_url(lambda url: "/login" not in url)
        if role == "support_visit":
            page.goto(f"{self.base_url}/support/tenants/{seed.tenant_id}/start")
            page.get_by_label("Why do you need to look?").fill("Ticket 1: checking the pages at phone width")
            page.get_by_label("Code from your authenticator app").fill(totp_code(self.app, email))
            page.get_by_role("button", name="Start looking").click()
            page.wait_for_url(f"{self.base_url}/dashboard")

    def _password_step(self, page, email: str) -> None:
        page.goto(f"{self.base_url}/login")
        page.get_by_label("E-mail").fill(email)
        page.get_by_label("Password").fill(vectors.PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_load_state()

    def close(self) -> None:
        for page in self.pages.values():
            page.context.close()


@pytest.fixture(scope="module")
def browsers(app, chromium):
    seed = seed_portal(app)
    with served(app) as base_url:
        browsers = Browsers(app, chromium, base_url, seed)
        yield browsers
        browsers.close()


# --- what is checked on a page --------------------------------------------------------------------------------

SETTLED = """() => {
  const live = document.getElementById("live-indicator");
  const connecting = live && typeof io === "function" && live.dataset.state === "connecting";
  return !connecting && !document.querySelector(".htmx-request, .htmx-swapping, .htmx-settling");
}"""


def _settle(page) -> None:
    """Loaded, connected, and every live panel fetched again on connecting is back (nothing moves under axe)."""
    page.wait_for_load_state("load")
    page.wait_for_function(SETTLED)


NEXT_FRAMES = "() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))"

# The innermost elements that end past the right edge: what to fix when a page scrolls sideways.
STICKING_OUT = """() => {
  const right = (el) => el.getBoundingClientRect().right;
  const out = Array.from(document.body.querySelectorAll("*")).filter((el) => right(el) > window.innerWidth + 0.5);
  const innermost = out.filter((el) => !Array.from(el.children).some((child) => out.includes(child)));
  return innermost.slice(0, 5).map((el) => {
    const classes = typeof el.className === "string" ? el.className.trim().split(/\\s+/).filter(Boolean) : [];
    const name = [el.tagName.toLowerCase() + (el.id ? "#" + el.id : ""), ...classes].join(".");
    return `${name} ends at ${Math.round(right(el))} px: ${(el.textContent || "").trim().slice(0, 60)}`;
  });
}"""


def _sideways_scrolling(page) -> list[str]:
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    if overflow <= 0:
        return []
    return [f"scrolls sideways by {overflow} px; sticking out: " + "; ".join(page.evaluate(STICKING_OUT))]


AXE_RUN = """async (impacts) => {
  const results = await axe.run(document, {resultTypes: ["violations"]});
  return results.violations.filter((v) => impacts.includes(v.impact)).map((v) => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.slice(0, 5).map((n) => `${n.target.join(" ")}: ${n.failureSummary.replace(/\\s+/g, " ")}`),
  }));
}"""


def _axe_findings(page) -> list[str]:
    return [f"axe {finding['id']} ({finding['impact']}): {finding['help']}\n      " + "\n      ".join(finding["nodes"])
            for finding in page.evaluate(AXE_RUN, list(BLOCKING_IMPACTS))]
