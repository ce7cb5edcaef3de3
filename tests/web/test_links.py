"""Download links (portal.links): e-mailed one-time links and the router one-liner, through the pages.

An e-mail goes through a real SMTP server (aiosmtpd, in this process) and the test follows the link it finds in
the received message; other tests read the outbox. A link's GET never uses it; its Download POST uses it once,
by compare-and-set, also under 20 parallel requests on the real database. Revoking or rotating kills open
links; failed lookups from one address are throttled; support staff visiting the tenant get no link controls.
"""

from __future__ import annotations

import hashlib
import html
import re
import threading
from datetime import timedelta

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select, update

from portal.audit.models import AuditEvent
from portal.audit.service import Actor
from portal.devserver import free_port
from portal.extensions import db
from portal.links import service as links_service
from portal.links.models import DownloadLink
from portal.openvpn import servers
from portal.openvpn import service as openvpn
from portal.openvpn.models import OpenVpnServer, Status, VpnClient
from portal.types import utcnow
from portal.wireguard.models import Router, VpnConfiguration
from tests.conftest import add_router, csrf_token, login, post, router_id_from, run_worker, unique
from tests.conftest import totp_code as fresh_code
from tests.web.test_mail import Inbox

LANDING = re.compile(r"https?://[^/\s]+(/l/[A-Za-z0-9_-]+)")
COMMAND = re.compile(r'/tool fetch url="http://localhost(/r/([A-Za-z0-9_-]+)\.rsc)" dst-path=vpn-portal\.rsc; '
                     r'/import file-name=vpn-portal\.rsc')


@pytest.fixture(autouse=True)
def forget_failed_lookups(app):
    """Every test starts with no failed link lookups counted for any address."""
    from portal.redis_client import redis_connection

    with app.app_context():
        redis = redis_connection()
        for key in redis.scan_iter("portal:link-failures:*"):
            redis.delete(key)


@pytest.fixture
def smtp(app, monkeypatch):
    """A real SMTP server (plain, on loopback) that the portal sends to; its Inbox."""
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    for name, value in {"HOST": "127.0.0.1", "PORT": controller.port, "SECURITY": "none", "TIMEOUT": 5.0,
                        "USERNAME": None, "OUTBOX": None}.items():
        monkeypatch.setitem(app.config, f"PORTAL_MAIL_{name}", value)
    yield inbox
    controller.stop()


@pytest.fixture
def active_router(app, admin_client):
    """A router whose configuration a worker has made active: (router id, configuration id)."""
    router_id = router_id_from(add_router(admin_client, "Branch 7"))
    run_worker(app)
    with app.app_context():
        configuration = db.session.get(Router, router_id).current_configuration
        assert configuration.status == "active"
        return router_id, configuration.id


def send_link(client, configuration_id: int, recipient: str, hours: int | str = 72, file_format: str = "rsc",
              router_id: int | None = None):
    page = f"/routers/{router_id}" if router_id else "/routers"
    return post(client, f"/links/configurations/{configuration_id}/email",
                {"recipient": recipient, "hours": hours, "file_format": file_format}, token_page=page)


def text_of(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def link_in(text: str) -> str:
    match = LANDING.search(text)
    assert match, f"no download link in: {text}"
    return match.group(1)


def outbox_link(outbox, recipient: str) -> str:
    return link_in(outbox.last(recipient).get_body(("plain",)).get_content())


def download(client, path: str):
    """Press Download on the link's page, as a browser: the page first (for its CSRF token), then the POST."""
    return client.post(path, data={"csrf_token": csrf_token(client, path)})


def the_link(app, path: str) -> DownloadLink:
    token = path.rsplit("/", 1)[1].removesuffix(".rsc")
    with app.app_context():
        link = db.session.scalar(select(DownloadLink).where(
            DownloadLink.token_hash == hashlib.sha256(token.encode()).hexdigest()))
        db.session.expunge(link)
        return link


def events(app, tenant_id: int, action: str) -> list[AuditEvent]:
    with app.app_context():
        found = db.session.scalars(select(AuditEvent).where(AuditEvent.tenant_id == tenant_id,
                                                            AuditEvent.action == action)
                                   .order_by(AuditEvent.id)).all()
        db.session.expunge_all()
        return list(found)


# E-mailed links ---------------------------------------------------------------------------------------

def test_an_emailed_link_survives_prefetching_and_downloads_once(app, admin_client, active_router, smtp):
    router_id, configuration_id = active_router
    page = admin_client.get(f"/routers/{router_id}").get_data(as_text=True)
    assert "Send by e-mail" in page and 'value="72"' in page and "One line on the router" in page

    response = send_link(admin_client, configuration_id, "field.tech@mail.example", router_id=router_id)
    assert response.status_code == 303 and response.headers["Location"] == f"/routers/{router_id}"
    assert "A download link for Branch 7 was sent to field.tech@mail.example." in admin_client.get(
        response.headers["Location"]).get_data(as_text=True)

    [(recipients, message)] = smtp.messages
    assert recipients == ["field.tech@mail.example"] and "Branch 7" in message["Subject"]
    text, html = message.get_body(("plain",)).get_content(), message.get_body(("html",)).get_content()
    path = link_in(text)
    assert f'href="http://localhost{path}"' in html and "72 hours" in text
    token = path.rsplit("/", 1)[1]
    assert len(token) >= 43  # 32 random bytes

    visitor = app.test_client()  # the recipient: signed in nowhere
    for _ in range(3):  # a mail scanner, a preview, the person: GETs never use the link
        landing = visitor.get(path)
        body = landing.get_data(as_text=True)
        assert landing.status_code == 200 and landing.headers["Cache-Control"] == "no-store"
        assert "Branch 7" in body and "RouterOS script (.rsc)" in body and "Download" in body
    assert the_link(app, path).used_at is None

    got = download(visitor, path)
    expected = admin_client.get(f"/configurations/{configuration_id}/download.rsc")
    assert got.status_code == 200 and got.headers["Content-Disposition"] == expected.headers["Content-Disposition"]
    assert got.get_data(as_text=True) == expected.get_data(as_text=True) and "/interface wireguard" in got.get_data(
        as_text=True)

    again = download(visitor, path)
    assert again.status_code == 410 and "used already" in again.get_data(as_text=True)
    assert visitor.get(path).status_code == 410

    link = the_link(app, path)
    assert link.used_at is not None and link.used_ip == "127.0.0.1" and link.recipient == "field.tech@mail.example"
    tenant_id = link.tenant_id
    assert tenant_id == admin_client.tenant_id
    [created] = events(app, tenant_id, "link.created")
    [used] = events(app, tenant_id, "link.used")
    assert created.ip == "127.0.0.1" and created.details["recipient"] == "field.tech@mail.example"
    assert used.actor_id is None and used.actor_label == f"download link {link.id} (field.tech@mail.example)"
    assert used.ip == "127.0.0.1"
    downloads = [event for event in events(app, tenant_id, "configuration.downloaded")
                 if event.actor_label == used.actor_label]
    assert len(downloads) == 1  # one code path for every download: portal.downloads
    with app.app_context():  # the token is nowhere in the database: neither the link row nor the audit log
        assert db.session.scalar(select(DownloadLink.token_hash).where(DownloadLink.id == link.id)) != token
        assert not [event for event in db.session.scalars(select(AuditEvent)) if token in str(event.details)]


def test_the_wg_quick_file_and_an_openvpn_profile_by_link(app, admin_client, active_router, outbox):
    _, configuration_id = active_router
    send_link(admin_client, configuration_id, "conf@mail.example", file_format="conf")
    path = outbox_link(outbox, "conf@mail.example")
    assert "wg-quick config (.conf)" in app.test_client().get(path).get_data(as_text=True)
    got = download(app.test_client(), path)
    assert got.get_data(as_text=True) == admin_client.get(
        f"/configurations/{configuration_id}/download.conf").get_data(as_text=True)

    client_id = active_openvpn_client(app, admin_client.tenant_id)
    page = admin_client.get(f"/openvpn/clients/{client_id}").get_data(as_text=True)
    assert "Send by e-mail" in page and "One line on the router" not in page
    response = post(admin_client, f"/links/clients/{client_id}/email", {"recipient": "ovpn@mail.example", "hours": 2},
                    token_page=f"/openvpn/clients/{client_id}")
    assert response.status_code == 303 and response.headers["Location"] == f"/openvpn/clients/{client_id}"
    assert "was written to" in admin_client.get(response.headers["Location"]).get_data(as_text=True)  # the outbox
    path = outbox_link(outbox, "ovpn@mail.example")
    assert "OpenVPN client laptop-1" in app.test_client().get(path).get_data(as_text=True)
    got = download(app.test_client(), path)
    expected = admin_client.get(f"/openvpn/clients/{client_id}/download.ovpn")
    assert got.status_code == 200 and got.get_data(as_text=True) == expected.get_data(as_text=True)
    assert "<key>" in got.get_data(as_text=True)
    assert (the_link(app, path).expires_at - the_link(app, path).created_at) == timedelta(hours=2)

    # revoking the client kills its open links
    assert post(admin_client, f"/links/clients/{client_id}/email",
                {"recipient": "second@mail.example", "hours": 5}).status_code == 303
    second = outbox_link(outbox, "second@mail.example")
    assert post(admin_client, f"/openvpn/clients/{client_id}/revoke").status_code == 303
    gone = download(app.test_client(), second)
    assert gone.status_code == 410 and "the OpenVPN client was revoked" in text_of(gone)
    finish_revocation(app, client_id)


def finish_revocation(app, client_id: int) -> None:
    """What the worker does once the server revoked the certificate (the server here is a stand-in), so no
    revocation is left waiting for other tests' workers."""
    with app.app_context():
        db.session.execute(update(VpnClient).where(VpnClient.id == client_id).values(
            status=Status.REVOKED, bundle=None, revoked_at=utcnow()))
        db.session.commit()


def active_openvpn_client(app, tenant_id: int) -> int:
    """A client of the tenant as a worker leaves it once its certificate exists (the server is a stand-in)."""
    with app.app_context():
        if not db.session.scalar(select(OpenVpnServer).where(OpenVpnServer.accepts_new_clients)):
            servers.save_server(Actor.system("test"), servers.ServerSettings(
                name=unique("links-ovpn").replace(" ", "-"), remote_host="vpn.test.example", driver="local",
                base_dir="/nonexistent/openvpn"))
        client = openvpn.add_client(Actor.system("test"), tenant_id, "laptop-1")
        client.status, client.serial = Status.ACTIVE, "0A1B"
        client.bundle = ("<ca>\nCA\n</ca>\n<cert>\nCERT\n</cert>\n<key>\nKEY\n</key>\n"
                         "<tls-crypt>\nTC\n</tls-crypt>\n")
        db.session.commit()
        return client.id


def test_twenty_parallel_downloads_give_exactly_one_file(app, admin_client, active_router, outbox):
    _, configuration_id = active_router
    send_link(admin_client, configuration_id, "race@mail.example")
    path = outbox_link(outbox, "race@mail.example")
    visitors = [app.test_client() for _ in range(20)]
    tokens = [csrf_token(visitor, path) for visitor in visitors]  # every one has the page open
    start, statuses = threading.Barrier(20), []

    def press(visitor, token):
        start.wait()
        statuses.append(visitor.post(path, data={"csrf_token": token}).status_code)

    threads = [threading.Thread(target=press, args=pair) for pair in zip(visitors, tokens, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] + [410] * 19
    assert len([event for event in events(app, admin_client.tenant_id, "link.used")]) == 1


def test_expired_and_unknown_links(app, admin_client, active_router, outbox):
    _, configuration_id = active_router
    send_link(admin_client, configuration_id, "late@mail.example", hours=1)
    path = outbox_link(outbox, "late@mail.example")
    with app.app_context():
        db.session.execute(update(DownloadLink).where(DownloadLink.id == the_link(app, path).id)
                           .values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    for response in (app.test_client().get(path), download(app.test_client(), path)):
        assert response.status_code == 410 and "expired" in response.get_data(as_text=True)
    assert the_link(app, path).used_at is None

    for unknown in ("/l/" + "A" * 43, "/l/short", "/r/" + "B" * 43 + ".rsc"):
        assert app.test_client().get(unknown).status_code == 404, unknown


def test_the_download_button_needs_the_pages_csrf_token(app, admin_client, active_router, outbox):
    _, configuration_id = active_router
    send_link(admin_client, configuration_id, "csrf@mail.example")
    path = outbox_link(outbox, "csrf@mail.example")
    assert app.test_client().post(path).status_code == 400  # a scanner that POSTs: no token, nothing used
    assert the_link(app, path).used_at is None
    assert download(app.test_client(), path).status_code == 200


def test_the_expiry_is_at_most_a_week(app, admin_client, active_router, outbox):
    _, configuration_id = active_router
    for hours in (169, 0, "soon"):
        response = send_link(admin_client, configuration_id, "week@mail.example", hours=hours)
        body = response.get_data(as_text=True)
        assert response.status_code == 422, hours
        assert ("1 to 168 hours (7 days)" in body) if hours != "soon" else ("Not a valid integer" in body)
    assert send_link(admin_client, configuration_id, "not an address").status_code == 422
    assert outbox.messages() == []
    with app.app_context():
        assert not db.session.scalars(select(DownloadLink).where(
            DownloadLink.configuration_id == configuration_id)).all()
    assert send_link(admin_client, configuration_id, "week@mail.example", hours=168).status_code == 303


# Revoking -----------------------------------------------------------------------------------------

def test_revoking_the_router_kills_its_links(app, admin_client, active_router, outbox):
    router_id, configuration_id = active_router
    send_link(admin_client, configuration_id, "one@mail.example")
    send_link(admin_client, configuration_id, "two@mail.example", file_format="conf")
    paths = [outbox_link(outbox, "one@mail.example"), outbox_link(outbox, "two@mail.example")]
    page = admin_client.get(f"/routers/{router_id}").get_data(as_text=True)
    assert "one@mail.example" in page and "two@mail.example" in page  # the open links

    assert post(admin_client, f"/routers/{router_id}/revoke").status_code == 303
    for path in paths:
        gone = download(app.test_client(), path)
        assert gone.status_code == 410 and "the router's configuration was revoked" in text_of(gone)
    revoked = events(app, admin_client.tenant_id, "link.revoked")
    assert len(revoked) == 2 and {event.details["reason"] for event in revoked} == {
        "the router's configuration was revoked"}
    run_worker(app)  # the revocation finishes: nothing is revoked twice
    assert len(events(app, admin_client.tenant_id, "link.revoked")) == 2


def test_rotating_the_keys_kills_its_links(app, admin_client, active_router, outbox):
    router_id, configuration_id = active_router
    send_link(admin_client, configuration_id, "rotate@mail.example")
    path = outbox_link(outbox, "rotate@mail.example")
    assert post(admin_client, f"/configurations/{configuration_id}/rotate").status_code == 303
    gone = download(app.test_client(), path)
    assert gone.status_code == 410 and "keys were rotated" in text_of(gone)
    # while the keys rotate, no new link: it would carry keys that are about to stop working
    assert send_link(admin_client, configuration_id, "rotate@mail.example").status_code == 422
    run_worker(app)  # the rotation finishes: links work again, for the new keys
    send_link(admin_client, configuration_id, "rotated@mail.example")
    assert download(app.test_client(), outbox_link(outbox, "rotated@mail.example")).status_code == 200


def test_an_admin_revokes_one_link(app, admin_client, active_router, outbox):
    router_id, configuration_id = active_router
    send_link(admin_client, configuration_id, "undo@mail.example")
    path = outbox_link(outbox, "undo@mail.example")
    link_id = the_link(app, path).id
    response = post(admin_client, f"/links/{link_id}/revoke", token_page=f"/routers/{router_id}")
    assert response.status_code == 303 and response.headers["Location"] == f"/routers/{router_id}"
    gone = download(app.test_client(), path)
    assert gone.status_code == 410 and "an administrator revoked it" in text_of(gone)
    again = post(admin_client, f"/links/{link_id}/revoke", follow_redirects=True)
    assert "revoked already" in again.get_data(as_text=True)


def test_another_tenant_reaches_no_link(app, admin_client, active_router, outbox, other_tenant_admin):
    _, configuration_id = active_router
    send_link(admin_client, configuration_id, "mine@mail.example")
    link_id = the_link(app, outbox_link(outbox, "mine@mail.example")).id
    stranger = app.test_client()
    login(stranger, other_tenant_admin[1])
    assert send_link(stranger, configuration_id, "theirs@mail.example").status_code == 404
    assert post(stranger, f"/links/configurations/{configuration_id}/router-command").status_code == 404
    assert post(stranger, f"/links/{link_id}/revoke").status_code == 404


# The router one-liner -------------------------------------------------------------------------------

def test_the_router_command_is_fetched_once_and_the_page_says_from_where(app, admin_client, active_router):
    router_id, configuration_id = active_router
    shown = post(admin_client, f"/links/configurations/{configuration_id}/router-command",
                 token_page=f"/routers/{router_id}")
    page = text_of(shown)
    assert shown.status_code == 200 and shown.headers["Cache-Control"] == "no-store"
    path = COMMAND.search(page).group(1)
    link = the_link(app, path)
    assert link.kind == "router_fetch" and link.file_format == "rsc"
    assert link.expires_at - link.created_at == timedelta(minutes=30)

    router = app.test_client()
    assert router.head(path, environ_base={"REMOTE_ADDR": "198.51.100.7"}).status_code == 200  # uses nothing
    fetched = router.get(path, environ_base={"REMOTE_ADDR": "198.51.100.7"})
    assert fetched.status_code == 200 and fetched.mimetype == "text/plain"
    assert fetched.get_data(as_text=True) == admin_client.get(
        f"/configurations/{configuration_id}/download.rsc").get_data(as_text=True)
    second = router.get(path, environ_base={"REMOTE_ADDR": "198.51.100.7"})
    assert second.status_code == 410 and "used already" in second.get_data(as_text=True)

    link = the_link(app, path)
    assert link.used_ip == "198.51.100.7"
    page = admin_client.get(f"/routers/{router_id}").get_data(as_text=True)
    assert "198.51.100.7" in page and "fetched by the router" in page
    [used] = events(app, admin_client.tenant_id, "link.used")
    assert used.actor_label == f"router fetch link {link.id}" and used.ip == "198.51.100.7"


def test_a_new_router_command_ends_the_previous_one(app, admin_client, active_router):
    router_id, configuration_id = active_router
    paths = []
    for _ in range(2):
        page = text_of(post(admin_client, f"/links/configurations/{configuration_id}/router-command",
                            token_page=f"/routers/{router_id}"))
        paths.append(COMMAND.search(page).group(1))
    old = app.test_client().get(paths[0])
    assert old.status_code == 410 and "newer router command" in old.get_data(as_text=True)
    assert app.test_client().get(paths[1]).status_code == 200


def test_an_expired_router_command_is_refused(app, admin_client, active_router):
    router_id, configuration_id = active_router
    page = text_of(post(admin_client, f"/links/configurations/{configuration_id}/router-command",
                        token_page=f"/routers/{router_id}"))
    path = COMMAND.search(page).group(1)
    with app.app_context():
        db.session.execute(update(DownloadLink).where(DownloadLink.id == the_link(app, path).id)
                           .values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    assert app.test_client().get(path).status_code == 410


# Who may, and throttling ----------------------------------------------------------------------------

def test_support_staff_visiting_the_tenant_cannot_make_links(app, admin_client, active_router, support_user,
                                                             outbox):
    router_id, configuration_id = active_router
    send_link(admin_client, configuration_id, "owner@mail.example")
    link_id = the_link(app, outbox_link(outbox, "owner@mail.example")).id
    staff = app.test_client()
    assert login(staff, support_user).status_code == 302
    visit = staff.post(f"/support/tenants/{admin_client.tenant_id}/start", data={
        "reason": "Ticket 99: router offline", "code": fresh_code(app, support_user), "allow_changes": "y",
        "changes_reason": "Customer asked us to re-key", "csrf_token": csrf_token(staff, "/support")})
    assert visit.status_code == 302

    page = staff.get(f"/routers/{router_id}").get_data(as_text=True)
    assert "Branch 7" in page
    for control in ("Send by e-mail", "One line on the router", "owner@mail.example", "links-panel", "/links/"):
        assert control not in page, control
    token_page = f"/routers/{router_id}"
    assert send_link(staff, configuration_id, "staff@mail.example", router_id=router_id).status_code == 403
    assert post(staff, f"/links/configurations/{configuration_id}/router-command",
                token_page=token_page).status_code == 403
    assert post(staff, f"/links/{link_id}/revoke", token_page=token_page).status_code == 403
    assert staff.get(f"/links/routers/{router_id}/panel").status_code == 403
    assert outbox.messages("staff@mail.example") == []
    assert the_link(app, outbox_link(outbox, "owner@mail.example")).revoked_at is None


def test_the_panel_lists_open_links_by_expiry_and_the_last_five_used_newest_first(app, admin_client, active_router):
    _, configuration_id = active_router
    now = utcnow()

    def link(number: int, expires_in: int, used_ago: int | None = None, revoked: bool = False,
             configuration: int | None = configuration_id, client: int | None = None) -> DownloadLink:
        return DownloadLink(kind="email", token_hash=f"{number:064d}", tenant_id=admin_client.tenant_id,
                            configuration_id=configuration, client_id=client, file_format="ovpn" if client else "rsc",
                            recipient=f"r{number}@example.com", expires_at=now + timedelta(hours=expires_in),
                            used_at=now - timedelta(minutes=used_ago) if used_ago is not None else None,
                            revoked_at=now if revoked else None)

    with app.app_context():
        client_id = active_openvpn_client(app, admin_client.tenant_id)
        db.session.add_all([link(1, 48), link(2, 24), link(3, -1), link(4, 24, revoked=True),
                            *(link(10 + n, 24, used_ago=n) for n in range(7)),
                            link(30, 24, configuration=None, client=client_id),
                            link(31, 24, used_ago=0, configuration=None, client=client_id)])
        db.session.commit()
        listing = links_service.links_of(db.session.get(VpnConfiguration, configuration_id), now)
        assert [found.recipient for found in listing.open] == ["r2@example.com", "r1@example.com"]
        assert [found.recipient for found in listing.used] == [f"r{10 + n}@example.com" for n in range(5)]
        of_client = links_service.links_of(db.session.get(VpnClient, client_id), now)
        assert [found.recipient for found in of_client.open] == ["r30@example.com"]
        assert [found.recipient for found in of_client.used] == ["r31@example.com"]


def test_failed_lookups_from_one_address_are_throttled(app, monkeypatch):
    monkeypatch.setitem(app.config, "PORTAL_LINK_MAX_FAILURES", 3)
    prober, address = app.test_client(), {"REMOTE_ADDR": "203.0.113.9"}
    for attempt in range(3):
        assert prober.get(f"/l/{'X' * 40}{attempt:03d}", environ_base=address).status_code == 404
    refused = prober.get(f"/l/{'Y' * 43}", environ_base=address)
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 900
    assert "Too many" in refused.get_data(as_text=True)
    fetch = prober.get(f"/r/{'Z' * 43}.rsc", environ_base=address)
    assert fetch.status_code == 429 and fetch.headers["Retry-After"]
    # another address is not affected
    assert prober.get(f"/l/{'Y' * 43}", environ_base={"REMOTE_ADDR": "203.0.113.10"}).status_code == 404


def test_a_mail_server_that_does_not_answer_leaves_no_link(app, admin_client, active_router, monkeypatch):
    _, configuration_id = active_router
    for name, value in {"HOST": "127.0.0.1", "PORT": free_port(), "SECURITY": "none", "TIMEOUT": 2.0}.items():
        monkeypatch.setitem(app.config, f"PORTAL_MAIL_{name}", value)
    response = send_link(admin_client, configuration_id, "nobody@mail.example")
    assert response.status_code == 422 and "could not be sent" in text_of(response)
    with app.app_context():
        assert not db.session.scalars(select(DownloadLink).where(
            DownloadLink.configuration_id == configuration_id)).all()
    assert events(app, admin_client.tenant_id, "link.created") == []
